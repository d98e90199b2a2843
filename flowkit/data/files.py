"""Load a user's numeric table from a .csv or .npy file, with errors that point at the cell."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flowkit.data.errors import DataError

__all__ = ["CSV_CHUNK_ROWS", "SUPPORTED_SUFFIXES", "LoadedArray", "load_array"]

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".csv", ".npy")
"""File suffixes that :func:`load_array` reads (case-insensitive)."""

_MAX_LISTED = 5


@dataclass(frozen=True)
class LoadedArray:
    """A table read by :func:`load_array`.

    Attributes:
        values: float64 array of shape (rows, features), every value finite, no constant
            column.
        columns: names of the kept columns: the header's names for a CSV with a header,
            else ``"column j"`` with j the 1-based column number in the file.
        dropped_columns: names of the constant columns dropped (``drop_constant=True``).
        dropped_rows: 1-based rows (file lines for a CSV, array rows for a .npy) dropped for
            non-finite values (``drop_nonfinite=True``).
        source: the file path as given.
    """

    values: np.ndarray
    columns: list[str]
    dropped_columns: list[str] = field(default_factory=list)
    dropped_rows: list[int] = field(default_factory=list)
    source: str = ""


def _list(items: list[int]) -> str:
    """Comma-separated first few items, with a count of the rest."""
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f" and {len(items) - _MAX_LISTED} more"
    return shown


def _parse_float(text: str) -> float | None:
    """The number in ``text``, or None when it is not one."""
    try:
        return float(text)
    except ValueError:
        return None


def _cell_error(path: str, row: int, column: int, text: str) -> DataError:
    """The error for a cell that is not a number, with a hint about delimiters."""
    found = "an empty cell" if not text.strip() else repr(text)
    message = f"{path}: row {row}, column {column}: expected a number, found {found}"
    for sep, sep_name in ((";", "semicolons"), ("\t", "tabs")):
        if sep in text:
            message += f" (the file seems to use {sep_name}; flowkit reads comma-separated files)"
            break
    return DataError(message)


CSV_CHUNK_ROWS = 65_536
"""Rows :func:`load_array` parses into one float64 block at a time when it reads a CSV."""


def _non_blank_rows(
    reader: Iterator[list[str]], line_number: Callable[[], int]
) -> Iterator[tuple[int, list[str]]]:
    """Yields ``(line, cells)`` for each row that holds something; blank lines are skipped."""
    for cells in reader:
        if not cells or all(not c.strip() for c in cells):
            continue
        yield line_number(), cells


def _parse_row(
    path: str, line: int, cells: list[str], width: int, expected_from: str
) -> list[float]:
    """The cells of one data row as numbers; an error names the row and column otherwise."""
    if len(cells) != width:
        raise DataError(
            f"{path}: row {line} has {len(cells)} columns, expected {width} as in {expected_from}"
        )
    row = []
    for j, text in enumerate(cells):
        number = _parse_float(text)
        if number is None:
            raise _cell_error(path, line, j + 1, text)
        row.append(number)

    return row


def _read_csv(
    path: str, chunk_rows: int = CSV_CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Values, their 1-based file line numbers, and the header (None when there is none).

    Rows are parsed into float64 blocks of ``chunk_rows``, so the text of at most one block
    is held as Python objects at a time; peak memory is about twice the final array.
    """
    blocks: list[np.ndarray] = []
    line_blocks: list[np.ndarray] = []
    header: list[str] | None = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows = _non_blank_rows(reader, lambda: reader.line_num)
            first_line, first = next(rows, (0, None))
            if first is None:
                raise DataError(
                    f"{path}: the file is empty; expected rows of comma-separated numbers"
                )
            pending = _first_rows(path, first_line, first)
            if pending is None:
                header = [c.strip() for c in first]
                pending = []
            width = len(header) if header is not None else len(first)
            expected_from = (
                f"the header (row {first_line})" if header is not None else f"row {first_line}"
            )

            chunk: list[list[float]] = list(pending)
            lines: list[int] = [first_line] if header is None else []
            for line, cells in rows:
                chunk.append(_parse_row(path, line, cells, width, expected_from))
                lines.append(line)
                if len(chunk) == chunk_rows:
                    blocks.append(np.array(chunk, dtype=np.float64).reshape(-1, width))
                    line_blocks.append(np.array(lines, dtype=np.int64))
                    chunk, lines = [], []
            if chunk:
                blocks.append(np.array(chunk, dtype=np.float64).reshape(-1, width))
                line_blocks.append(np.array(lines, dtype=np.int64))
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not a UTF-8 text file (byte {error.start}); expected comma-separated numbers"
        ) from None
    except csv.Error as error:
        raise DataError(f"{path}: cannot be read as CSV: {error}") from None

    if not blocks:
        raise DataError(f"{path}: the file has a header (row {first_line}) but no data rows")

    values = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    line_numbers = line_blocks[0] if len(line_blocks) == 1 else np.concatenate(line_blocks)

    return values, line_numbers, header


def _first_rows(path: str, line: int, cells: list[str]) -> list[list[float]] | None:
    """The first non-blank row as numbers, or None when it is a header (no cell a number)."""
    if len(cells) == 1:
        for sep, sep_name in ((";", "semicolons"), ("\t", "tabs")):
            if sep in cells[0]:
                raise DataError(
                    f"{path}: row {line}, column 1: found {cells[0]!r}, a single column "
                    f"holding {sep_name}; flowkit reads comma-separated files"
                )

    parsed = [_parse_float(c) for c in cells]
    if all(v is None for v in parsed):
        return None
    if any(v is None for v in parsed):
        column = next(j for j, v in enumerate(parsed) if v is None)
        error = _cell_error(path, line, column + 1, cells[column])
        raise DataError(f"{error} (a header row must hold only names, no numbers)")

    return [[float(v) for v in parsed]]


def _read_npy(path: str) -> np.ndarray:
    """The array in a .npy file as float64 of shape (rows, features)."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY":
        raise DataError(f"{path}: not a readable .npy file (it lacks the NumPy header)")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataError(
                f"{path}: holds Python objects (a pickled array), which flowkit never loads "
                "because unpickling can run code; save a numeric array instead"
            ) from None
        raise DataError(f"{path}: not a readable .npy file ({error})") from None
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npy file ({error})") from None

    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: expected a single array, found {type(array).__name__}")
    kind = array.dtype.kind
    if kind not in "biuf":
        raise DataError(
            f"{path}: expected a numeric array (integer or float), found dtype {array.dtype}"
        )
    if array.ndim not in (1, 2):
        raise DataError(
            f"{path}: expected an array of shape (rows, features) or (rows,), found shape "
            f"{array.shape} ({array.ndim}-D)"
        )
    if array.ndim == 1:
        array = array[:, None]
    if array.shape[0] == 0:
        raise DataError(f"{path}: the array has no rows (shape {array.shape})")
    if array.shape[1] == 0:
        raise DataError(f"{path}: the array has no columns (shape {array.shape})")

    return array.astype(np.float64)


def load_array(
    path: str | os.PathLike[str],
    *,
    drop_constant: bool = False,
    drop_nonfinite: bool = False,
    for_training: bool = True,
) -> LoadedArray:
    """Read a numeric table of shape (rows, features) from a ``.csv`` or ``.npy`` file.

    CSV files are comma-separated, UTF-8, with an optional header: the first non-blank row is
    a header when none of its cells is a number. Blank lines are skipped. Rows are counted as
    lines of the file (1-based, the header included) and columns from 1, so a message such as
    "row 7, column 3" points at the cell a text editor shows. A ``.npy`` file is read with
    ``allow_pickle=False``; a 1-D array is one feature, integer and boolean arrays are
    converted to float64, and rows are numbered from 1.

    Args:
        path: the ``.csv`` or ``.npy`` file.
        drop_constant: drop constant columns (logged) instead of raising.
        drop_nonfinite: drop rows holding NaN or infinite values (a logging warning gives the
            count) instead of raising.
        for_training: data to fit a model to need 2 rows or more and no constant column;
            data to score (``False``) may have a single row and constant columns.

    Returns:
        A :class:`LoadedArray`; its ``dropped_columns`` and ``dropped_rows`` say what was
        dropped.

    Raises:
        DataError: a missing or unreadable file, an unsupported suffix, an empty file, a
            header without data, ragged rows, a cell that is not a number, NaN or infinite
            values, fewer than 2 rows, a constant column, an array that is not 1-D or 2-D,
            or a pickled object array. The message names the file, row and column.
    """
    source = os.fspath(path)
    suffix = Path(source).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{source}: unsupported file type {suffix or '(no suffix)'!r}; expected one of "
            f"{', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not os.path.exists(source):
        raise DataError(f"{source}: no such file")
    if os.path.isdir(source):
        raise DataError(f"{source}: is a folder, expected a {suffix} file")

    if suffix == ".csv":
        values, row_numbers, header = _read_csv(source)
    else:
        values = _read_npy(source)
        row_numbers = np.arange(1, values.shape[0] + 1)
        header = None
    names = header if header is not None else [f"column {j + 1}" for j in range(values.shape[1])]

    # Rows with NaN or infinite values.
    bad = ~np.isfinite(values).all(axis=1)
    dropped_rows: list[int] = []
    if bad.any():
        bad_rows = [int(row_numbers[i]) for i in np.flatnonzero(bad)]
        if not drop_nonfinite:
            first = int(np.flatnonzero(bad)[0])
            column = int(np.flatnonzero(~np.isfinite(values[first]))[0])
            raise DataError(
                f"{source}: {len(bad_rows)} row(s) hold NaN or infinite values, rows "
                f"{_list(bad_rows)} (first at row {bad_rows[0]}, column {column + 1}: "
                f"{values[first, column]}); pass drop_nonfinite=True (flowkit train: "
                "--drop-nonfinite) to drop them"
            )
        logger.warning(
            "%s: dropped %d row(s) holding NaN or infinite values (rows %s)",
            source,
            len(bad_rows),
            _list(bad_rows),
        )
        values = values[~bad]
        dropped_rows = bad_rows

    minimum_rows = 2 if for_training else 1
    if values.shape[0] < minimum_rows:
        raise DataError(
            f"{source}: need at least {minimum_rows} row(s) of data, found {values.shape[0]}"
            + (" after dropping non-finite rows" if dropped_rows else "")
        )

    # Constant columns.
    constant = [
        j for j in range(values.shape[1]) if for_training and np.all(values[:, j] == values[0, j])
    ]
    dropped_columns: list[str] = []
    if constant:
        described = [
            f"column {j + 1}"
            + (f" ({header[j]!r})" if header is not None else "")
            + f" = {values[0, j]:g}"
            for j in constant
        ]
        if not drop_constant:
            raise DataError(
                f"{source}: constant column(s), which no density can model: "
                f"{'; '.join(described)}; pass drop_constant=True (flowkit train: "
                "--drop-constant) to drop them"
            )
        if len(constant) == values.shape[1]:
            raise DataError(
                f"{source}: every column is constant ({'; '.join(described)}); no data is left"
            )
        logger.info("%s: dropped constant column(s): %s", source, "; ".join(described))
        keep = [j for j in range(values.shape[1]) if j not in set(constant)]
        dropped_columns = [names[j] for j in constant]
        values = values[:, keep]
        names = [names[j] for j in keep]

    return LoadedArray(
        values=np.ascontiguousarray(values),
        columns=names,
        dropped_columns=dropped_columns,
        dropped_rows=dropped_rows,
        source=source,
    )
