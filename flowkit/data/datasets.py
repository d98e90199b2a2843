"""One entry point, load_dataset, for toy sets, digits and the user's own files."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from flowkit.data.digits import load_digits_split
from flowkit.data.errors import DataError
from flowkit.data.files import SUPPORTED_SUFFIXES, load_array
from flowkit.data.splits import DataSplit, derive_seed, split_rows
from flowkit.data.toy import TOY_DATASETS, get_toy

__all__ = ["dataset_names", "load_dataset"]


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset` besides file paths: the toy sets and digits."""
    return [*TOY_DATASETS, "digits"]


def _count(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{what} must be an int >= 1, found {value!r}")
    return value


def load_dataset(
    source: str | os.PathLike[str],
    *,
    num_train: int = 20000,
    num_validation: int = 5000,
    num_test: int = 20000,
    seed: int = 0,
    drop_constant: bool = False,
    drop_nonfinite: bool = False,
) -> DataSplit:
    """Load a data set by toy name, ``"digits"``, or the path of a ``.csv`` / ``.npy`` file.

    - Toy sets: ``num_train``, ``num_validation`` and ``num_test`` points drawn with three
      distinct seeds derived from ``seed``, so no test point repeats a training point;
      ``true_log_prob`` is the true density where known, ``lower_bound`` the support's bound.
    - ``"digits"``: the fixed 1257 / 270 / 270 split of :func:`load_digits_split`; the
      ``num_*`` arguments are ignored and ``seed`` draws the dequantization noise.
    - Files: read by :func:`load_array`, shuffled with ``seed`` and cut 80 / 10 / 10 (at least
      one row in each part, so at least 3 rows); ``lower_bound`` and ``true_log_prob`` are
      None (a known bound is for the user to give).

    Raises:
        DataError: an unknown name (the message lists the valid ones), a bad file, or too few
            rows.
    """
    text = os.fspath(source)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be an int >= 0, found {seed!r}")

    if text in TOY_DATASETS:
        toy = get_toy(text)
        counts = (
            _count(num_train, "num_train"),
            _count(num_validation, "num_validation"),
            _count(num_test, "num_test"),
        )
        train, validation, test = (
            toy.sample(n, seed=derive_seed(seed, stream)) for stream, n in enumerate(counts)
        )
        bound = None
        if toy.lower_bound is not None:
            bound = torch.tensor(toy.lower_bound, dtype=torch.float64)
        return DataSplit(
            train=train,
            validation=validation,
            test=test,
            name=toy.name,
            lower_bound=bound,
            true_log_prob=toy.log_prob if toy.has_log_prob else None,
            preprocessing=None,
            source=toy.name,
        )

    if text == "digits":
        return load_digits_split(seed=seed)

    if Path(text).suffix.lower() in SUPPORTED_SUFFIXES or os.path.exists(text):
        loaded = load_array(text, drop_constant=drop_constant, drop_nonfinite=drop_nonfinite)
        values = torch.from_numpy(loaded.values)
        train, validation, test = split_rows(values, seed, source=text)
        return DataSplit(
            train=train.to(torch.float32),
            validation=validation.to(torch.float32),
            test=test.to(torch.float32),
            name=Path(text).stem,
            lower_bound=None,
            true_log_prob=None,
            preprocessing=None,
            source=text,
        )

    raise DataError(
        f"unknown data set {text!r}: expected one of {', '.join(dataset_names())}, or the "
        f"path of a {' or '.join(SUPPORTED_SUFFIXES)} file"
    )
