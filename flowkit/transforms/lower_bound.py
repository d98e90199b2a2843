"""The lower-bounded ELU output layer: gives features the support (lower, inf) exactly."""

from __future__ import annotations

import math

import torch
from nflows.transforms import InputOutsideDomain, Transform
from torch import Tensor

from flowkit.transforms.domain import (
    ElementwiseMonotone,
    PositiveAlpha,
    RestrictedDomain,
    describe_violation,
)

__all__ = ["LowerBound"]


class LowerBound(PositiveAlpha, RestrictedDomain, ElementwiseMonotone, Transform):
    r"""Maps data x to noise z through a lower-bounded ELU output layer, in raw data units.

    It is an ELU in the noise-to-data orientation fused with the standardization. For a
    feature with bound :math:`l`, scale :math:`\sigma` and ELU parameter :math:`\alpha`,
    sampling maps noise to data by

    .. math::
        x = l + \sigma\,(\mathrm{elu}(z) + \alpha)
          = l + \sigma\,(z + \alpha) \ (z > 0), \quad l + \sigma\alpha e^{z} \ (z \le 0),

    so the feature's support is :math:`(l, \infty)` for every parameter value. The forward
    map forms :math:`d = x - l` in raw units first and takes its logarithm directly,

    .. math::
        z = d/\sigma - \alpha \ (d > \sigma\alpha), \qquad
        z = \log d - \log\sigma - \log\alpha \ (d \le \sigma\alpha),

    with :math:`\log|dz/dx| = -\log\sigma` or :math:`-\log d`. Going through
    :math:`\mathrm{log1p}(y/\alpha)` of a standardized value instead would round points near
    the bound onto it in float32. Rows with :math:`x \le l` are outside the support; the
    flow gives them a log-density of exactly ``-inf``.

    Far in the left tail, :math:`l + d` rounds onto :math:`l` itself, where the density is
    zero; sampling returns the next float above :math:`l` instead, so every sample keeps a
    finite log-density.

    Features whose bound is ``-inf`` are unbounded and only standardized:
    :math:`z = (x - \mu)/\sigma`.

    How the density behaves near the bound depends on what feeds this layer: with a
    Gaussian-tailed input it falls to zero at :math:`l`, with a heavier-tailed one it need
    not. It is not a barrier that keeps mass away from the bound.

    Args:
        lower: per-feature bounds, ``-inf`` for unbounded features.
        alpha: initial :math:`\alpha` (learnable, kept positive).
        learnable_alpha: learn :math:`\alpha` or keep it fixed.

    Example:
        >>> layer = LowerBound(torch.tensor([0.0]))
        >>> z, _ = layer(torch.tensor([[1e-30]]))
        >>> bool(torch.isfinite(z).all())
        True
    """

    def __init__(
        self, lower: Tensor | list[float], alpha: float = 1.0, learnable_alpha: bool = True
    ) -> None:
        super().__init__()

        lower = torch.as_tensor(lower, dtype=torch.float64).flatten()
        if lower.numel() < 1 or torch.any(torch.isnan(lower)) or torch.any(lower == math.inf):
            raise ValueError(f"lower must hold finite bounds or -inf; got {lower.tolist()}")
        if not (alpha > 0 and math.isfinite(alpha)):
            raise ValueError(f"alpha must be positive and finite; got {alpha}")

        self.features = lower.numel()
        self.register_buffer("lower", lower.to(torch.get_default_dtype()))
        self.register_buffer("bounded", torch.isfinite(lower))
        self.register_buffer("shift", torch.zeros(self.features))
        self.register_buffer("scale", torch.ones(self.features))
        self._set_alpha(torch.full((self.features,), float(alpha)), learnable_alpha)

    @torch.no_grad()
    def fit(self, data: Tensor) -> None:
        """Sets the scale (and the shift of unbounded features) from training data.

        Bounded features get :math:`\\sigma` = the standard deviation of :math:`x - l`;
        unbounded ones the mean and standard deviation. Raises ``ValueError`` when a training
        point lies at or below its bound or a feature is constant.
        """
        lower = self.lower.to(data.dtype)
        below = self.bounded & torch.any(data <= lower, dim=0)
        if torch.any(below):
            column = int(below.nonzero()[0])
            row = int((data[:, column] <= lower[column]).nonzero()[0])
            raise ValueError(
                f"training data row {row} has {data[row, column].item():.8g} in feature "
                f"{column}, at or below its lower bound {lower[column].item():.8g}"
            )
        std = data.std(dim=0) if data.shape[0] > 1 else torch.ones(self.features)
        if torch.any(~(std > 0)):
            columns = (~(std > 0)).nonzero().flatten().tolist()
            raise ValueError(f"cannot scale constant feature column(s) {columns}")

        self.shift.copy_(torch.where(self.bounded, torch.zeros_like(std), data.mean(dim=0)))
        self.scale.copy_(std)

    def _parameters_like(self, inputs: Tensor) -> tuple[Tensor, ...]:
        if inputs.dim() != 2 or inputs.shape[1] != self.features:
            raise ValueError(
                f"LowerBound expects inputs of shape (batch, {self.features}); "
                f"got {tuple(inputs.shape)}"
            )
        dtype = inputs.dtype

        return (
            self.lower.to(dtype),
            self.shift.to(dtype),
            self.scale.to(dtype),
            self.alpha.to(dtype),
            self.bounded,
        )

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Maps data to noise; raises ``InputOutsideDomain`` at or below a bound."""
        lower, shift, scale, alpha, bounded = self._parameters_like(inputs)
        inside = (inputs > lower) | ~bounded
        if not torch.all(inside):
            raise InputOutsideDomain(
                describe_violation(inputs, lower, inside, "the lower-bounded layer")
            )

        # Unbounded features have lower = -inf; give them a harmless distance.
        distance = torch.where(bounded, inputs - lower, torch.ones_like(inputs))
        linear_side = distance > scale * alpha
        log_distance = torch.log(distance)
        bounded_outputs = torch.where(
            linear_side,
            distance / scale - alpha,
            log_distance - torch.log(scale) - torch.log(alpha),
        )
        bounded_log_derivative = torch.where(
            linear_side, -torch.log(scale).expand_as(inputs), -log_distance
        )

        outputs = torch.where(bounded, bounded_outputs, (inputs - shift) / scale)
        log_derivative = torch.where(
            bounded, bounded_log_derivative, -torch.log(scale).expand_as(inputs)
        )

        return outputs, log_derivative.sum(dim=1)

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Maps noise to data, strictly above every bound."""
        lower, shift, scale, alpha, bounded = self._parameters_like(inputs)

        positive_side = inputs > 0
        distance = torch.where(
            positive_side,
            scale * (inputs + alpha),
            scale * alpha * torch.exp(torch.clamp(inputs, max=0.0)),
        )
        bounded_log_derivative = torch.where(
            positive_side,
            torch.log(scale).expand_as(inputs),
            torch.log(scale) + torch.log(alpha) + torch.clamp(inputs, max=0.0),
        )
        safe_lower = torch.where(bounded, lower, torch.zeros_like(lower))

        # Far enough into the left tail, lower + distance rounds onto the bound, where the
        # density is zero; the next float above it keeps every sample inside the support.
        just_above = torch.nextafter(safe_lower, torch.full_like(safe_lower, math.inf))
        bounded_outputs = torch.maximum(safe_lower + distance, just_above)
        outputs = torch.where(bounded, bounded_outputs, shift + scale * inputs)
        log_derivative = torch.where(
            bounded, bounded_log_derivative, torch.log(scale).expand_as(inputs)
        )

        return outputs, log_derivative.sum(dim=1)

    def split_forward_domain(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Rows with a bounded feature at or below its bound are outside the support."""
        lower, *_ = self._parameters_like(inputs)
        inside_entries = (inputs > lower) | ~self.bounded
        inside_rows = torch.all(inside_entries, dim=1)
        interior = torch.where(self.bounded, lower + self.scale.to(inputs.dtype), self.shift)
        safe = torch.where(inside_rows[:, None], inputs, interior.to(inputs.dtype))

        return safe, inside_rows

    def forward_bounds(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """Maps interval ends through the forward map; the bound itself maps to ``-inf``."""
        bound = self.lower.to(lower.dtype)
        lower = torch.where(self.bounded, torch.maximum(lower, bound), lower)
        upper = torch.where(self.bounded, torch.maximum(upper, bound), upper)

        return self._map_ends(lower), self._map_ends(upper)

    def _map_ends(self, ends: Tensor) -> Tensor:
        lower, shift, scale, alpha, bounded = self._parameters_like(ends[None])

        # Ends at the bound map to -inf and infinite ends stay infinite; both are masked
        # before the arithmetic so that no inf or log(0) reaches the gradient.
        at_bound = bounded & (ends <= lower)
        regular = torch.isfinite(ends) & ~at_bound
        safe = torch.where(regular, ends, torch.where(bounded, lower + scale, shift))
        distance = torch.where(bounded, safe - lower, torch.ones_like(safe))
        bounded_ends = torch.where(
            distance > scale * alpha,
            distance / scale - alpha,
            torch.log(distance) - torch.log(scale) - torch.log(alpha),
        )
        mapped = torch.where(bounded, bounded_ends, (safe - shift) / scale)
        limits = torch.where(at_bound | (ends < 0), -math.inf, math.inf).to(ends.dtype)

        return torch.where(regular, mapped, limits)
