"""Interval arithmetic through element-wise increasing layers, to find a flow's image box."""

from __future__ import annotations

import torch
from nflows.transforms import ActNorm, Permutation, Transform
from nflows.transforms.nonlinearities import PiecewiseRationalQuadraticCDF
from torch import Tensor

from flowkit.transforms.domain import ElementwiseMonotone, affine_ends

__all__ = ["is_elementwise_monotone", "forward_bounds"]


def is_elementwise_monotone(layer: Transform) -> bool:
    """Tells whether ``layer`` maps each feature on its own by an increasing function.

    Permutations count: they move features but map a box onto a box.
    """
    return isinstance(
        layer, ElementwiseMonotone | ActNorm | Permutation | PiecewiseRationalQuadraticCDF
    )


def forward_bounds(layer: Transform, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Maps the box ``[lower, upper]`` (per feature, infinite ends allowed) through ``layer``.

    Only for layers where :func:`is_elementwise_monotone` holds.
    """
    if isinstance(layer, ElementwiseMonotone):
        return layer.forward_bounds(lower, upper)

    if isinstance(layer, ActNorm):
        # ActNorm's own forward would run its data-dependent initialisation on the ends.
        scale, shift = layer.scale.to(lower.dtype), layer.shift.to(lower.dtype)
        return affine_ends(lower, scale, shift), affine_ends(upper, scale, shift)

    if isinstance(layer, Permutation):
        permutation = layer._permutation
        return lower[permutation], upper[permutation]

    if isinstance(layer, PiecewiseRationalQuadraticCDF):
        return _spline_bounds(layer, lower, upper)

    raise TypeError(f"{type(layer).__name__} is not an element-wise increasing layer")


def _spline_bounds(
    layer: PiecewiseRationalQuadraticCDF, lower: Tensor, upper: Tensor
) -> tuple[Tensor, Tensor]:
    if layer.tails != "linear":
        raise TypeError("only splines with linear tails map the real line onto itself")

    ends = torch.stack([lower, upper])
    finite = torch.isfinite(ends)
    mapped, _ = layer(torch.where(finite, ends, torch.zeros_like(ends)))
    mapped = torch.where(finite, mapped, ends)

    return mapped[0], mapped[1]
