"""The logit pre-processing of data in [0, 1], with its Jacobian counted."""

from __future__ import annotations

import math

import torch
from nflows.transforms import InputOutsideDomain, Transform
from torch import Tensor

from flowkit.transforms.domain import ElementwiseMonotone, RestrictedDomain

__all__ = ["Logit"]


class Logit(RestrictedDomain, ElementwiseMonotone, Transform):
    r"""Maps data x in [0, 1] to noise z = logit(eps + (1 - 2 eps) x), element-wise.

    .. math::
        p = \epsilon + (1 - 2\epsilon)\,x, \qquad z = \log p - \log(1 - p), \qquad
        \log|dz/dx| = \log(1 - 2\epsilon) - \log p - \log(1 - p).

    The inverse is :math:`x = (\sigma(z) - \epsilon)/(1 - 2\epsilon)`. Counting this
    Jacobian makes the flow's ``log_prob`` a density of the [0, 1] scaling, which is what
    bits per dimension are reported in. Inputs with :math:`p \notin (0, 1)` are outside.
    Where the sigmoid saturates, the inverse would round onto the domain's edge; it returns
    the nearer end of [0, 1] instead, so every sample keeps a finite log-density.

    Args:
        features: number of features.
        epsilon: the squeeze :math:`\epsilon` (default 1e-6).
    """

    def __init__(self, features: int, epsilon: float = 1e-6) -> None:
        super().__init__()

        if not 0 < epsilon < 0.5:
            raise ValueError(f"epsilon must lie in (0, 0.5); got {epsilon}")
        self.features = features
        self.epsilon = epsilon

    def _squeeze(self, inputs: Tensor) -> Tensor:
        return self.epsilon + (1 - 2 * self.epsilon) * inputs

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Maps [0, 1] data to noise; raises ``InputOutsideDomain`` outside it."""
        squeezed = self._squeeze(inputs)
        inside = (squeezed > 0) & (squeezed < 1)
        if not torch.all(inside):
            row, column = (~inside).nonzero()[0].tolist()
            raise InputOutsideDomain(
                f"the logit layer needs inputs in [0, 1] (up to its squeeze {self.epsilon:g}); "
                f"got {inputs[row, column].item():.8g} at row {row}, feature {column} "
                f"({int((~inside).sum())} entries outside)"
            )

        log_p, log_one_minus_p = torch.log(squeezed), torch.log1p(-squeezed)
        outputs = log_p - log_one_minus_p
        log_derivative = math.log1p(-2 * self.epsilon) - log_p - log_one_minus_p

        return outputs, log_derivative.sum(dim=1)

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Maps noise to data in [0, 1]; returns ``(outputs, logabsdet)``."""
        squeezed = torch.sigmoid(inputs)
        outputs = (squeezed - self.epsilon) / (1 - 2 * self.epsilon)

        # Past the sigmoid's saturation (float32: z above about 16.7 or below about -104)
        # the point rounds onto the domain's edge, where the density is zero; [0, 1] itself
        # lies strictly inside the domain, so such points move onto its nearer end.
        squeezed_again = self._squeeze(outputs)
        on_edge = (squeezed_again <= 0) | (squeezed_again >= 1)
        outputs = torch.where(on_edge, outputs.clamp(0.0, 1.0), outputs)

        # log sigma(z) + log(1 - sigma(z)), written with logsigmoid to keep the tails finite.
        log_derivative = (
            torch.nn.functional.logsigmoid(inputs)
            + torch.nn.functional.logsigmoid(-inputs)
            - math.log1p(-2 * self.epsilon)
        )

        return outputs, log_derivative.sum(dim=1)

    def split_forward_domain(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Rows with an entry whose squeezed value leaves (0, 1) are outside the support."""
        squeezed = self._squeeze(inputs)
        inside_rows = torch.all((squeezed > 0) & (squeezed < 1), dim=1)
        safe = torch.where(inside_rows[:, None], inputs, torch.full_like(inputs, 0.5))

        return safe, inside_rows

    def forward_bounds(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """Maps interval ends; the domain's ends map to ``-inf`` and ``inf``."""

        def logit_of(ends: Tensor) -> Tensor:
            squeezed = self._squeeze(ends).clamp(0.0, 1.0)
            return torch.log(squeezed) - torch.log1p(-squeezed)

        return logit_of(lower), logit_of(upper)
