"""The DataSplit container and seeded train/validation/test splitting of rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flowkit.data.errors import DataError

__all__ = ["DataSplit", "derive_seed", "split_rows"]


@dataclass(frozen=True)
class DataSplit:
    """A data set cut into training, validation and test parts.

    Attributes:
        train: float32 tensor of shape (n_train, d).
        validation: float32 tensor of shape (n_validation, d).
        test: float32 tensor of shape (n_test, d).
        name: short name of the data set (toy name, ``"digits"``, or the file's stem).
        lower_bound: float64 tensor of shape (d,) with each feature's known lower bound of the
            support, ``-inf`` for unbounded features; None when no feature has a known bound.
        true_log_prob: the true log-density (takes (n, d), returns (n,)), or None if unknown.
        preprocessing: ``"logit01"`` for data in [0, 1) that a flow should map to the real
            line with the logit pre-processing (digits), else None.
        source: where the data came from (toy name, ``"digits"``, or the file path).
        augment: redraws the random part of a training batch, ``augment(batch, generator)``
            (digits: fresh dequantization noise at every step, so that a flow cannot learn
            the fixed noise of 1257 images by heart), or None.
    """

    train: Tensor
    validation: Tensor
    test: Tensor
    name: str
    lower_bound: Tensor | None = None
    true_log_prob: Callable[[Tensor], Tensor] | None = None
    preprocessing: str | None = None
    source: str = ""
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None

    @property
    def features(self) -> int:
        """Number of features d."""
        return int(self.train.shape[1])


def derive_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for sub-stream ``stream`` of ``seed``, via numpy's SeedSequence hashing.

    Distinct ``(seed, stream)`` pairs give unrelated seeds, so for example the test stream of
    seed 0 never equals the training stream of seed 1.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be an int >= 0, found {seed!r}")
    state = np.random.SeedSequence([seed, stream, 0x666C6F77]).generate_state(2, np.uint32)

    return (int(state[0]) << 31) ^ int(state[1])


def split_rows(
    values: Tensor, seed: int, fractions: tuple[float, float] = (0.1, 0.1), source: str = "data"
) -> tuple[Tensor, Tensor, Tensor]:
    """Shuffle the rows of ``values`` with ``seed`` and cut them into train/validation/test.

    The validation and test parts get ``round(fraction * n)`` rows each, at least one; the
    rest goes to training, which must keep at least one row (so at least 3 rows are needed).
    ``source`` names the data in error messages.
    """
    n = int(values.shape[0])
    n_val = max(1, round(fractions[0] * n))
    n_test = max(1, round(fractions[1] * n))
    if n - n_val - n_test < 1:
        raise DataError(
            f"{source}: need at least 3 rows to split into train, validation and test; found {n}"
        )
    generator = torch.Generator().manual_seed(derive_seed(seed, 100))
    order = torch.randperm(n, generator=generator)
    test = values[order[:n_test]]
    validation = values[order[n_test : n_test + n_val]]
    train = values[order[n_test + n_val :]]

    return train, validation, test
