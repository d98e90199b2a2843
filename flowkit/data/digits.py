"""scikit-learn's 8x8 digits, dequantized to [0, 1) on a fixed seeded split."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from flowkit.data.errors import DataError
from flowkit.data.splits import DataSplit, derive_seed

__all__ = [
    "DIGITS_FEATURES",
    "DIGITS_LEVELS",
    "DIGITS_SPLIT_SIZES",
    "bits_per_dimension",
    "load_digits_split",
    "redequantize",
]

DIGITS_LEVELS = 17
"""Number of pixel levels: the raw values are the integers 0..16."""

DIGITS_FEATURES = 64
"""Pixels per image (8 x 8)."""

DIGITS_SPLIT_SIZES = (1257, 270, 270)
"""Rows in the train, validation and test parts (1797 images in all)."""

# The split permutation and the test set's dequantization noise use fixed seeds, so the test
# set is the same array in every run, whatever ``seed`` is given.
_SPLIT_SEED = 20_240_517
_TEST_NOISE_SEED = 1_797


def _dequantize(values: np.ndarray, seed: int) -> Tensor:
    """Map integers v in 0..16 to x = (v + u) / 17, u ~ U[0, 1) drawn with ``seed``."""
    pixels = torch.from_numpy(values).to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(pixels.shape, generator=generator, dtype=torch.float64)
    x = ((pixels + noise) / DIGITS_LEVELS).to(torch.float32)

    # float32 rounding could carry 16 + u (u just below 1) up to exactly 1.0.
    return x.clamp_max(torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)))


def load_digits_split(seed: int = 0, classes: Sequence[int] | None = None) -> DataSplit:
    r"""The digits data set (1797 images of 8 x 8 pixels, values 0..16), dequantized.

    Each pixel value :math:`v \in \{0, \dots, 16\}` becomes :math:`x = (v + u) / 17` with
    :math:`u \sim U[0, 1)`, so :math:`x \in [0, 1)`. The rows are split 1257 / 270 / 270 by a
    permutation with a fixed seed: which images form each part never changes. ``seed`` draws
    the dequantization noise of the training and validation parts; the test part's noise has
    a fixed seed too, so the test array is identical in every run.

    Args:
        seed: seed of the training and validation dequantization noise.
        classes: keep only images of these digit labels (0..9), for example to hold some
            classes out as out-of-distribution data; each part keeps its fixed membership.

    Returns:
        A :class:`DataSplit` with 64 features, ``preprocessing="logit01"`` (a flow maps
        [0, 1) to the real line by the logit pre-processing) and ``lower_bound=None``: the
        bounded support is handled by that pre-processing, not by a lower-bound layer.
    """
    from sklearn.datasets import load_digits  # Imported here: the import takes ~1 s.

    bunch = load_digits()
    values = np.asarray(bunch.data, dtype=np.int64)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))

    generator = torch.Generator().manual_seed(_SPLIT_SEED)
    order = torch.randperm(values.shape[0], generator=generator)
    n_train, n_val, _ = DIGITS_SPLIT_SIZES
    parts = {
        "train": order[:n_train],
        "validation": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }

    keep = torch.ones(values.shape[0], dtype=torch.bool)
    if classes is not None:
        wanted = sorted({int(c) for c in classes})
        if not wanted or any(c < 0 or c > 9 for c in wanted):
            raise DataError(f"digits: classes must be a non-empty subset of 0..9, found {classes}")
        keep = torch.isin(labels, torch.tensor(wanted))

    noise_seeds = {
        "train": derive_seed(seed, 0),
        "validation": derive_seed(seed, 1),
        "test": _TEST_NOISE_SEED,
    }
    tensors = {}
    for part, index in parts.items():
        # Noise is drawn for the whole part, then filtered, so a class filter keeps each
        # image's values unchanged.
        x = _dequantize(values[index.numpy()], noise_seeds[part])
        tensors[part] = x[keep[index]]

    name = "digits" if classes is None else "digits[" + ",".join(map(str, wanted)) + "]"
    return DataSplit(
        train=tensors["train"],
        validation=tensors["validation"],
        test=tensors["test"],
        name=name,
        lower_bound=None,
        true_log_prob=None,
        preprocessing="logit01",
        source="digits",
        augment=redequantize,
    )


def redequantize(batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Draws fresh dequantization noise for dequantized digits.

    Recovers the pixel value :math:`v = \lfloor 17 x \rfloor` (clamped to 0..16) and returns
    :math:`(v + u) / 17` with a new :math:`u \sim U[0, 1)`, in the batch's dtype.
    """
    levels = DIGITS_LEVELS
    values = torch.clamp(torch.floor(batch * levels), 0, levels - 1)
    noise = torch.rand(batch.shape, generator=generator, dtype=batch.dtype)

    return (values + noise.to(batch.device)) / levels


def bits_per_dimension(log_prob_nats: Tensor, features: int) -> Tensor:
    r"""Bits per dimension of a log-density in nats: :math:`-\log p(x) / (D \ln 2)`.

    For digits, ``log_prob_nats`` must be the density of the [0, 1) scaling
    :math:`x = (v + u) / 17` (the logit pre-processing's Jacobian included), and the result is
    bits per dimension of that scaling. Add :math:`\log_2 17 \approx 4.09` to get bits per
    dimension of the dequantized integer pixels on [0, 17), an upper bound on the discrete
    code length per pixel.
    """
    if isinstance(features, bool) or not isinstance(features, int) or features < 1:
        raise DataError(f"features must be an int >= 1, found {features!r}")

    return -log_prob_nats / (features * math.log(2.0))
