"""Tests of load_array: the good files, and a clear DataError for every bad one."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from flowkit.data import DataError, LoadedArray, load_array


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_header(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "a,b\n1,2\n3,4.5\n-1e3, 7\n")
    loaded = load_array(path)

    assert isinstance(loaded, LoadedArray)
    assert loaded.values.dtype == np.float64
    np.testing.assert_array_equal(loaded.values, [[1, 2], [3, 4.5], [-1000, 7]])
    assert loaded.columns == ["a", "b"]
    assert loaded.dropped_columns == [] and loaded.dropped_rows == []
    assert loaded.source == str(path)


def test_csv_without_header_and_blank_lines(tmp_path: Path) -> None:
    loaded = load_array(write(tmp_path, "data.csv", "1,2\n\n3,4\n5,6\n\n"))

    np.testing.assert_array_equal(loaded.values, [[1, 2], [3, 4], [5, 6]])
    assert loaded.columns == ["column 1", "column 2"]


def test_single_column_csv_is_one_feature(tmp_path: Path) -> None:
    loaded = load_array(write(tmp_path, "one.csv", "x\n1\n2\n3\n"))

    assert loaded.values.shape == (3, 1)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.float32, np.float64])
def test_npy_numeric_dtypes(tmp_path: Path, dtype: type) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.arange(12).reshape(6, 2).astype(dtype))
    loaded = load_array(path)

    assert loaded.values.dtype == np.float64
    np.testing.assert_array_equal(loaded.values, np.arange(12).reshape(6, 2))


def test_one_dimensional_npy_is_one_feature(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.array([1.0, 2.0, 5.0]))

    assert load_array(path).values.shape == (3, 1)


def test_uppercase_suffix_is_accepted(tmp_path: Path) -> None:
    assert load_array(write(tmp_path, "A.CSV", "1,2\n3,4\n")).values.shape == (2, 2)


def expect_error(path: Path, *fragments: str, **kwargs: bool) -> DataError:
    with pytest.raises(DataError) as info:
        load_array(path, **kwargs)
    message = str(info.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.csv", "no such file")


def test_unsupported_suffix(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "data.txt", "1,2\n"), ".txt", ".csv", ".npy")


def test_empty_file(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "empty.csv", ""), "empty")
    expect_error(write(tmp_path, "blank.csv", "\n\n  \n"), "empty")


def test_header_only(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "head.csv", "a,b,c\n"), "header", "no data rows")


def test_ragged_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "ragged.csv", "a,b\n1,2\n3,4\n5\n")
    expect_error(path, "row 4 has 1 columns, expected 2")


def test_non_numeric_cell(tmp_path: Path) -> None:
    path = write(tmp_path, "text.csv", "a,b\n1,2\n3,oops\n")
    expect_error(path, "row 3, column 2", "'oops'")


def test_empty_cell(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "gap.csv", "1,2\n3,\n4,5\n"), "row 2, column 2", "empty cell")


def test_mixed_first_row(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "mixed.csv", "a,2\n1,2\n"), "row 1, column 1", "header")


def test_semicolon_hint(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "semi.csv", "1;2\n3;4\n"), "row 1, column 1", "semicolons")


def test_row_numbers_count_blank_lines(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "gaps.csv", "a,b\n\n1,2\n\nx,3\n"), "row 5, column 1")


def test_nonfinite_values_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "nan.csv", "a,b\n1,2\n3,nan\n4,5\ninf,6\n")
    expect_error(path, "2 row(s)", "rows 3, 5", "row 3, column 2", "drop_nonfinite")


def test_nonfinite_values_dropped_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "nan.csv", "a,b\n1,2\n3,nan\n4,5\ninf,6\n7,1\n")
    with caplog.at_level(logging.WARNING, logger="flowkit.data.files"):
        loaded = load_array(path, drop_nonfinite=True)

    np.testing.assert_array_equal(loaded.values, [[1, 2], [4, 5], [7, 1]])
    assert loaded.dropped_rows == [3, 5]
    assert "dropped 2 row(s)" in caplog.text


def test_npy_nonfinite_names_row(tmp_path: Path) -> None:
    path = tmp_path / "nan.npy"
    np.save(path, np.array([[1.0, 2.0], [3.0, 4.0], [np.nan, 1.0]]))
    expect_error(path, "rows 3", "column 1")


def test_single_row(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "one.csv", "a,b\n1,2\n"), "at least 2 row(s)", "found 1")


def test_single_row_after_dropping(tmp_path: Path) -> None:
    path = write(tmp_path, "one.csv", "1,2\nnan,2\n")
    expect_error(path, "at least 2 row(s)", "after dropping", drop_nonfinite=True)


def test_constant_column_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "const.csv", "a,b,c\n1,5,2\n3,5,4\n4,5,1\n")
    expect_error(path, "column 2", "'b'", "drop_constant")


def test_constant_column_without_header(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "const.csv", "1,0\n2,0\n"), "column 2")


def test_constant_column_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "const.csv", "a,b,c\n1,5,2\n3,5,4\n4,5,1\n")
    with caplog.at_level(logging.INFO, logger="flowkit.data.files"):
        loaded = load_array(path, drop_constant=True)

    np.testing.assert_array_equal(loaded.values, [[1, 2], [3, 4], [4, 1]])
    assert loaded.columns == ["a", "c"]
    assert loaded.dropped_columns == ["b"]
    assert "column 2" in caplog.text


def test_all_columns_constant(tmp_path: Path) -> None:
    path = write(tmp_path, "const.csv", "1,2\n1,2\n")
    expect_error(path, "every column is constant", drop_constant=True)


@pytest.mark.parametrize("shape", [(), (2, 3, 4)])
def test_npy_wrong_rank(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, np.ones(shape))
    expect_error(path, f"found shape {shape}", "(rows, features)")


def test_npy_pickled_objects_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    expect_error(path, "pickled")


def test_npy_string_dtype(tmp_path: Path) -> None:
    path = tmp_path / "str.npy"
    np.save(path, np.array([["a", "b"], ["c", "d"]]))
    expect_error(path, "numeric", "dtype")


def test_corrupt_npy(tmp_path: Path) -> None:
    path = tmp_path / "bad.npy"
    path.write_bytes(b"not an npy file at all")
    expect_error(path, "not a readable .npy")


def test_non_utf8_csv(tmp_path: Path) -> None:
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00\x811,2\n")
    expect_error(path, "UTF-8")
