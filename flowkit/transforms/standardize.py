"""Fixed element-wise standardization, so that a flow takes and returns the data's units."""

from __future__ import annotations

import torch
from nflows.transforms import Transform
from torch import Tensor

from flowkit.transforms.domain import ElementwiseMonotone, affine_ends

__all__ = ["Standardize"]


class Standardize(ElementwiseMonotone, Transform):
    r"""Maps data x to noise z = (x - mean) / std, element-wise, with fixed statistics.

    The inverse is :math:`x = \mathrm{mean} + \mathrm{std}\, z`; the log-determinant is
    :math:`-\sum_j \log \mathrm{std}_j` for every row. ``mean`` and ``std`` are buffers: they
    travel with the weights in checkpoints and are not trained. :meth:`fit` sets them from
    data.

    Args:
        features: number of features.
    """

    def __init__(self, features: int) -> None:
        super().__init__()

        self.features = features
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))

    @torch.no_grad()
    def fit(self, data: Tensor) -> None:
        """Sets ``mean`` and ``std`` to the per-feature statistics of ``data`` (rows, features).

        Raises ``ValueError`` naming the column when a feature is constant.
        """
        mean = data.mean(dim=0)
        std = data.std(dim=0) if data.shape[0] > 1 else torch.ones_like(mean)
        constant = ~(std > 0)
        if torch.any(constant):
            columns = constant.nonzero().flatten().tolist()
            raise ValueError(f"cannot standardize constant feature column(s) {columns}")

        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Returns ``((x - mean) / std, -sum(log std))`` per row."""
        mean, std = self.mean.to(inputs.dtype), self.std.to(inputs.dtype)
        outputs = (inputs - mean) / std
        logabsdet = -torch.log(std).sum().expand(inputs.shape[0])

        return outputs, logabsdet

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Returns ``(mean + std * z, sum(log std))`` per row."""
        mean, std = self.mean.to(inputs.dtype), self.std.to(inputs.dtype)
        outputs = mean + std * inputs
        logabsdet = torch.log(std).sum().expand(inputs.shape[0])

        return outputs, logabsdet

    def forward_bounds(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """Maps interval ends affinely; infinite ends stay infinite."""
        mean, std = self.mean.to(lower.dtype), self.std.to(lower.dtype)

        return affine_ends(lower, 1 / std, -mean / std), affine_ends(upper, 1 / std, -mean / std)
