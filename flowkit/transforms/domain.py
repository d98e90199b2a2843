"""The support protocol: layers whose maps are defined on part of the space only."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "PositiveAlpha",
    "RestrictedDomain",
    "ElementwiseMonotone",
    "affine_ends",
    "describe_violation",
]


class RestrictedDomain:
    """Mixin for a transform whose forward or inverse is defined on part of the space only.

    A flow calls :meth:`split_forward_domain` before the layer's ``forward`` (data to noise)
    and :meth:`split_inverse_domain` before its ``inverse`` (noise to data). Each returns the
    inputs with every row that lies outside the domain replaced by a point inside it, and a
    boolean mask of the rows that were inside, so that one batch can hold both kinds of rows
    and the flow can give the outside rows a density of exactly zero.
    """

    def restricts_forward_domain(self) -> bool:
        """Tells whether the forward map is defined on part of the space only."""
        return True

    def split_forward_domain(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(safe_inputs, inside)`` for the forward (data-to-noise) map."""
        return inputs, inputs.new_ones(inputs.shape[0], dtype=bool)

    def split_inverse_domain(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(safe_inputs, inside)`` for the inverse (noise-to-data) map."""
        return inputs, inputs.new_ones(inputs.shape[0], dtype=bool)


class ElementwiseMonotone:
    """Mixin for a transform that maps each feature on its own by an increasing function.

    Such a layer maps a box (a product of intervals) onto a box, which is what lets a flow
    compute the exact image of the real space when only such layers sit next to its base.
    """

    def forward_bounds(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """Maps per-feature interval ends through the forward map (``-inf``/``inf`` allowed)."""
        raise NotImplementedError


class PositiveAlpha:
    """Mixin holding a per-feature ``alpha > 0`` as the exponential of ``log_alpha``.

    ``log_alpha`` is a parameter when learnable and a buffer otherwise, so a fixed ``alpha``
    still travels with the weights in checkpoints.
    """

    def _set_alpha(self, alpha: Tensor, learnable: bool) -> None:
        log_alpha = torch.log(alpha)
        if learnable:
            self.log_alpha = torch.nn.Parameter(log_alpha)
        else:
            self.register_buffer("log_alpha", log_alpha)

    @property
    def alpha(self) -> Tensor:
        """The per-feature :math:`\\alpha`, shape ``(features,)``."""
        return torch.exp(self.log_alpha)


def affine_ends(ends: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Maps interval ends by ``scale * ends + shift`` with ``scale > 0``; infinities stay.

    The infinite ends are masked before the product, or its gradient would be ``inf * 0``.
    """
    finite = torch.isfinite(ends)
    mapped = scale * torch.where(finite, ends, torch.zeros_like(ends)) + shift

    return torch.where(finite, mapped, ends)


def describe_violation(
    values: Tensor, bound: Tensor, inside: Tensor, what: str, relation: str = ">"
) -> str:
    """Formats the first offending entry of a domain check for an error message.

    ``inside`` is the element-wise mask of entries that satisfy ``value {relation} bound``.
    """
    row, column = (~inside).nonzero()[0].tolist()
    bound_value = bound.expand_as(values)[row, column].item()
    offending = values[row, column].item()
    count = int((~inside).sum())

    return (
        f"{what} needs inputs {relation} {bound_value:.8g} in feature {column}; "
        f"got {offending:.8g} at row {row} ({count} entries outside the domain)"
    )
