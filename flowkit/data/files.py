"""Load a user's numeric table from a .csv or .npy file, with errors that point at the cell."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flowkit.data.errors import DataError

__all__ = ["SUPPORTED_SUFFIXES", "LoadedArray", "load_array"]

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


def _read_csv(path: str) -> tuple[np.ndarray, list[int], list[str] | None]:
    """Values, their 1-based file line numbers, and the header (None when there is none)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows: list[tuple[int, list[str]]] = []
            for cells in reader:
                if not cells or all(not c.strip() for c in cells):
                    continue  # Blank lines are skipped.
                rows.append((reader.line_num, cells))
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not a UTF-8 text file (byte {error.start}); expected comma-separated numbers"
        ) from None
    except csv.Error as error:
        raise DataError(f"{path}: cannot be read as CSV: {error}") from None

    if not rows:
        raise DataError(f"{path}: the file is empty; expected rows of comma-separated numbers")

    first_line, first = rows[0]
    if len(first) == 1:
        for sep, sep_name in ((";", "semicolons"), ("\t", "tabs")):
            if sep in first[0]:
                raise DataError(
                    f"{path}: row {first_line}, column 1: found {first[0]!r}, a single column "
                    f"holding {sep_name}; flowkit reads comma-separated files"
                )

    # Header: a first row in which no cell is a number.
    parsed_first = [_parse_float(c) for c in first]
    header: list[str] | None = None
    if all(v is None for v in parsed_first):
        header = [c.strip() for c in first]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: the file has a header (row {first_line}) but no data rows")
    elif any(v is None for v in parsed_first):
        column = next(j for j, v in enumerate(parsed_first) if v is None)
        error = _cell_error(path, first_line, column + 1, first[column])
        raise DataError(f"{error} (a header row must hold only names, no numbers)")

    width = len(header) if header is not None else len(rows[0][1])
    expected_from = f"the header (row {first_line})" if header is not None else f"row {rows[0][0]}"
    values = np.empty((len(rows), width), dtype=np.float64)
    lines = []
    for i, (line, cells) in enumerate(rows):
        if len(cells) != width:
            raise DataError(
                f"{path}: row {line} has {len(cells)} columns, expected {width} as in "
                f"{expected_from}"
            )
        for j, text in enumerate(cells):
            number = _parse_float(text)
            if number is None:
                raise _cell_error(path, line, j + 1, text)
            values[i, j] = number
        lines.append(line)

    return values, lines, header


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
        row_numbers = list(range(1, values.shape[0] + 1))
        header = None
    names = header if header is not None else [f"column {j + 1}" for j in range(values.shape[1])]

    # Rows with NaN or infinite values.
    bad = ~np.isfinite(values).all(axis=1)
    dropped_rows: list[int] = []
    if bad.any():
        bad_rows = [row_numbers[i] for i in np.flatnonzero(bad)]
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
