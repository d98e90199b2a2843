"""Tests of load_dataset and dataset_names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flowkit.data import DataError, dataset_names, get_toy, load_dataset, toy_names


def test_dataset_names() -> None:
    assert dataset_names() == [*toy_names(), "digits"]


@pytest.mark.parametrize("name", toy_names())
def test_toy_split(name: str) -> None:
    split = load_dataset(name, num_train=300, num_validation=50, num_test=200, seed=3)

    assert split.train.shape == (300, 2)
    assert split.validation.shape == (50, 2)
    assert split.test.shape == (200, 2)
    assert split.train.dtype == torch.float32
    assert split.name == name and split.source == name and split.preprocessing is None

    # Three distinct streams: no test point repeats a training or validation point.
    train = {tuple(r.tolist()) for r in split.train}
    assert not any(tuple(r.tolist()) in train for r in split.test)
    assert not torch.equal(split.train[:50], split.validation)

    # Same seed, same data; another seed, other data.
    again = load_dataset(name, num_train=300, num_validation=50, num_test=200, seed=3)
    other = load_dataset(name, num_train=300, num_validation=50, num_test=200, seed=4)
    assert torch.equal(split.test, again.test)
    assert not torch.equal(split.test, other.test)

    toy = get_toy(name)
    if toy.has_log_prob:
        assert torch.isfinite(split.true_log_prob(split.test)).all()
    else:
        assert split.true_log_prob is None
    if toy.lower_bound is None:
        assert split.lower_bound is None
    else:
        assert split.lower_bound.tolist() == list(toy.lower_bound)
        assert (split.train >= split.lower_bound).all()


def test_digits_by_name() -> None:
    split = load_dataset("digits")
    assert split.train.shape == (1257, 64) and split.preprocessing == "logit01"


def test_file_split(tmp_path: Path) -> None:
    path = tmp_path / "table.npy"
    values = np.random.default_rng(0).normal(size=(100, 3))
    np.save(path, values)
    split = load_dataset(str(path), seed=1)

    assert split.train.shape == (80, 3)
    assert split.validation.shape == (10, 3)
    assert split.test.shape == (10, 3)
    assert split.name == "table" and split.source == str(path)
    assert split.lower_bound is None and split.true_log_prob is None
    joined = torch.cat((split.train, split.validation, split.test)).double()
    assert torch.allclose(
        joined.sort(dim=0).values, torch.from_numpy(values).sort(0).values, 0, 1e-6
    )


def test_small_file_gets_one_row_per_part(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    path.write_text("1,2\n2,1\n3,5\n", encoding="utf-8")
    split = load_dataset(path)
    assert (len(split.train), len(split.validation), len(split.test)) == (1, 1, 1)


def test_too_few_rows_for_a_split(tmp_path: Path) -> None:
    path = tmp_path / "two.csv"
    path.write_text("1,2\n2,1\n", encoding="utf-8")
    with pytest.raises(DataError, match="two.csv.*at least 3 rows"):
        load_dataset(path)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DataError, match="moons.*digits.*csv"):
        load_dataset("mooons")
