"""The standard normal truncated to a box: closed-form normalizer and exact sampling."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "standard_normal_log_prob",
    "box_normal_log_normalizer",
    "box_normal_log_prob",
    "sample_box_normal",
]

_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)

# Beyond this distance into a tail, Phi(-a) underflows float64; the tail is then drawn from
# its Rayleigh form, whose relative error is of order 1 / a^2.
_FAR_TAIL = 37.0


def standard_normal_log_prob(z: Tensor) -> Tensor:
    r"""Returns :math:`\sum_j \log \varphi(z_j)` per row, in ``z``'s dtype."""
    return -0.5 * (z * z).sum(dim=1) - z.shape[1] * _HALF_LOG_TWO_PI


def _log_one_minus_exp(x: Tensor) -> Tensor:
    """Computes ``log(1 - exp(x))`` for ``x <= 0``, accurate on both sides of ``-log 2``."""
    return torch.where(
        x > -math.log(2.0),
        torch.log(-torch.expm1(torch.clamp(x, min=-math.log(2.0)))),
        torch.log1p(-torch.exp(torch.clamp(x, max=-math.log(2.0)))),
    )


def _log_ndtr_with_infinities(x: Tensor) -> Tensor:
    # Masking before the call keeps infinite ends from putting NaN into the gradients.
    finite = torch.isfinite(x)
    value = torch.special.log_ndtr(torch.where(finite, x, torch.zeros_like(x)))

    return torch.where(finite, value, torch.where(x > 0, 0.0, -math.inf).to(x.dtype))


def box_normal_log_normalizer(lower: Tensor, upper: Tensor) -> Tensor:
    r"""Returns :math:`\sum_j \log(\Phi(b_j) - \Phi(a_j))` for the box :math:`\prod_j [a_j, b_j]`.

    Each factor is formed in the tail where it is small, as
    :math:`\log\Phi(b) + \log(1 - e^{\log\Phi(a) - \log\Phi(b)})` (or the mirror image for
    :math:`a > 0`) with ``torch.special.log_ndtr``, so a box far in a tail keeps its digits
    and the gradient reaches whatever set the ends (for example an ELU's ``alpha``).
    """
    mirrored = lower > 0
    near_end = torch.where(mirrored, -lower, upper)
    far_end = torch.where(mirrored, -upper, lower)
    log_near = _log_ndtr_with_infinities(near_end)
    log_far = _log_ndtr_with_infinities(far_end)
    log_ratio = torch.where(torch.isinf(log_far), -math.inf, log_far - log_near)

    return (log_near + _log_one_minus_exp(log_ratio)).sum()


def box_normal_log_prob(z: Tensor, lower: Tensor, upper: Tensor, check: bool = True) -> Tensor:
    r"""Log-density of the standard normal truncated to the closed box :math:`[a, b]`.

    .. math:: \log p(z) = \sum_j \log\varphi(z_j) - \log(\Phi(b_j) - \Phi(a_j))

    inside the box and ``-inf`` outside it when ``check`` is true. The box is closed: a point
    exactly on an end keeps a finite density, which matters because float32 maps every
    input far enough below an ELU's kink exactly onto the lower end.
    """
    log_prob = standard_normal_log_prob(z) - box_normal_log_normalizer(lower, upper)
    if not check:
        return log_prob

    inside = torch.all((z >= lower) & (z <= upper), dim=1)
    return torch.where(inside, log_prob, torch.full_like(log_prob, -math.inf))


def sample_box_normal(
    num_samples: int,
    lower: Tensor,
    upper: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Draws exactly from the standard normal truncated to the box, strictly inside it.

    Inverse-CDF sampling in float64, per feature from the tail nearer the box, where the
    CDF has its digits: for :math:`a \le 0`,
    :math:`z = \Phi^{-1}(\Phi(a) + u(\Phi(b) - \Phi(a)))`, and the mirror image for
    :math:`a > 0`. Farther than 37 into a tail, where :math:`\Phi` underflows float64,
    :math:`z = \sqrt{a^2 - 2\log u}` (the Rayleigh form of the tail). The draws are then
    rounded to ``lower``'s dtype and kept off the lower end, so that an ELU inverse applied
    afterwards stays finite.
    """
    dtype, device = lower.dtype, lower.device
    lower64, upper64 = lower.detach().double(), upper.detach().double()
    shape = (num_samples, lower.numel())
    uniform = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
    # Open interval (0, 1): the ends would land on the box's ends.
    uniform = uniform.clamp(min=2.0**-60, max=1 - 2.0**-53)

    # The per-feature work is done on the (features,) ends; each full-size operation counts
    # at small batches, where the draw costs as much as a layer of the flow.
    mirrored = lower64 > 0
    start = torch.where(mirrored, -upper64, lower64)
    end = torch.where(mirrored, -lower64, upper64)
    cdf_start = torch.special.ndtr(start)
    cdf_width = torch.special.ndtr(end) - cdf_start
    sign = 1.0 - 2.0 * mirrored.double()
    draws = torch.special.ndtri(cdf_start + uniform * cdf_width) * sign

    far_tail = (lower64 > _FAR_TAIL) & torch.isinf(upper64)
    # A meta tensor has no values to test; it takes both branches, as shapes are all it has.
    if far_tail.is_meta or torch.any(far_tail):
        rayleigh = torch.sqrt(lower64 * lower64 - 2 * torch.log(uniform))
        draws = torch.where(far_tail, rayleigh, draws)

    draws = torch.clamp(draws, lower64, upper64).to(dtype)
    just_above_lower = torch.nextafter(lower.detach(), torch.full_like(lower, math.inf))

    return torch.clamp(draws, just_above_lower, upper.detach())
