"""What the training benchmarks share: split sizes, the numeric setting, one training call.

Example:
    >>> with single_thread_float32():
    ...     torch.get_default_dtype()
    torch.float32
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

import flowkit
from flowkit.data import DataSplit
from flowkit.training import TrainingResult

__all__ = ["QUICK_SPLIT_SIZES", "SPLIT_SIZES", "single_thread_float32", "train_on_split"]

SPLIT_SIZES = {"num_train": 20_000, "num_validation": 5_000, "num_test": 20_000}
"""Points per split of every known-density set in the quality benchmarks (data seed 0)."""

QUICK_SPLIT_SIZES = {"num_train": 600, "num_validation": 200, "num_test": 400}
"""The same for ``--quick`` smoke runs."""


@contextlib.contextmanager
def single_thread_float32() -> Iterator[None]:
    """One torch thread and float32 defaults inside the block, both restored afterwards.

    One thread makes timings comparable between models; float32 matches the peers' layers,
    whereas a caller such as the test suite may have made float64 the default.
    """
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)


def train_on_split(
    flow: flowkit.Flow,
    split: DataSplit,
    steps: int,
    batch_size: int,
    seed: int = 0,
    **training_options: Any,
) -> TrainingResult:
    """Trains ``flow`` on ``split`` as every benchmark does: validation every 100 steps, no bar.

    ``training_options`` go to :func:`flowkit.train` (``learning_rate=``, for instance).
    """
    return flowkit.train(
        flow,
        split.train,
        validation_data=split.validation,
        steps=steps,
        batch_size=batch_size,
        validation_interval=100,
        seed=seed,
        progress=False,
        **training_options,
    )
