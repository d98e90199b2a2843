"""Tests of the digits data set and bits per dimension."""

from __future__ import annotations

import math

import pytest
import torch

from flowkit.data import (
    DIGITS_LEVELS,
    DataError,
    bits_per_dimension,
    load_digits_split,
)


@pytest.fixture(scope="module")
def split():
    return load_digits_split(seed=0)


def test_shapes_dtype_range(split) -> None:
    assert split.train.shape == (1257, 64)
    assert split.validation.shape == (270, 64)
    assert split.test.shape == (270, 64)
    assert DIGITS_LEVELS == 17
    for part in (split.train, split.validation, split.test):
        assert part.dtype == torch.float32
        assert (part >= 0).all() and (part < 1).all()
    assert split.preprocessing == "logit01"
    assert split.name == "digits" and split.features == 64


def test_dequantization_keeps_the_integer_level(split) -> None:
    from sklearn.datasets import load_digits

    raw = torch.from_numpy(load_digits().data).to(torch.float64)
    x = torch.cat((split.validation, split.test)).to(torch.float64)

    # Every row's 17 x - v lies in [0, 1) (to float32 rounding) for some image v.
    scaled = 17.0 * x
    offset = scaled[:, None, :] - raw[None, :, :]
    matches = ((offset > -1e-4) & (offset < 1.0 + 1e-4)).all(dim=2).any(dim=1)
    assert matches.all()


def test_same_seed_same_split_and_fixed_test_set(split) -> None:
    again = load_digits_split(seed=0)
    other = load_digits_split(seed=1)

    assert torch.equal(split.train, again.train)
    assert torch.equal(split.test, again.test)
    assert not torch.equal(split.train, other.train)
    assert torch.equal(split.test, other.test)
    assert torch.equal(torch.floor(17 * split.train[:5]), torch.floor(17 * other.train[:5]))


def test_class_filter(split) -> None:
    subset = load_digits_split(seed=0, classes=[3])
    assert 0 < subset.train.shape[0] < 200
    assert subset.name == "digits[3]"
    # Filtered rows are rows of the full split, unchanged.
    rows = {tuple(r.tolist()) for r in split.test}
    assert all(tuple(r.tolist()) in rows for r in subset.test)
    with pytest.raises(DataError, match="0..9"):
        load_digits_split(classes=[10])


def test_bits_per_dimension_formula() -> None:
    log_prob = torch.tensor([-64 * math.log(2.0), 0.0, -128 * math.log(2.0)])
    bpd = bits_per_dimension(log_prob, 64)

    assert torch.allclose(bpd, torch.tensor([1.0, 0.0, 2.0]))
    with pytest.raises(DataError, match="features"):
        bits_per_dimension(log_prob, 0)
