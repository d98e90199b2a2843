"""Affine coupling whose scale is not capped, with a wide soft clamp on the log-scale."""

from __future__ import annotations

import torch
from nflows.transforms.coupling import CouplingTransform
from torch import Tensor

__all__ = ["AffineCoupling"]


class AffineCoupling(CouplingTransform):
    r"""Maps data x to noise z by scaling and shifting the masked half given the other half.

    For the transformed features :math:`x_b` and conditioning features :math:`x_a`,

    .. math::
        z_b = x_b\, e^{s(x_a)} + t(x_a), \qquad
        s = c \tanh(\tilde s / c), \qquad \log|\det J| = \sum_b s_b(x_a),

    with inverse :math:`x_b = (z_b - t) e^{-s}`. nflows' affine coupling bounds its scale
    near 1 with a sigmoid, which caps the density a flow can reach; here the log-scale only
    passes through a soft clamp of half-width :math:`c` (default 6, a factor of about 400
    per layer), which keeps extreme inputs from overflowing without limiting normal use.

    Args:
        mask: 1-D mask; entries > 0 are transformed, the others condition.
        transform_net_create_fn: ``(in_features, out_features) -> nn.Module`` conditioner.
        log_scale_clamp: half-width :math:`c` of the soft clamp.
    """

    def __init__(
        self, mask: Tensor | list[int], transform_net_create_fn, log_scale_clamp: float = 6.0
    ) -> None:
        if log_scale_clamp <= 0:
            raise ValueError(f"log_scale_clamp must be positive; got {log_scale_clamp}")
        self.log_scale_clamp = log_scale_clamp

        super().__init__(mask, transform_net_create_fn)

    def _transform_dim_multiplier(self) -> int:
        return 2

    def _log_scale_and_shift(self, transform_params: Tensor) -> tuple[Tensor, Tensor]:
        raw_log_scale = transform_params[:, self.num_transform_features :]
        shift = transform_params[:, : self.num_transform_features]
        clamp = self.log_scale_clamp
        log_scale = clamp * torch.tanh(raw_log_scale / clamp)

        return log_scale, shift

    def _coupling_transform_forward(
        self, inputs: Tensor, transform_params: Tensor
    ) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._log_scale_and_shift(transform_params)
        outputs = inputs * torch.exp(log_scale) + shift

        return outputs, log_scale.sum(dim=1)

    def _coupling_transform_inverse(
        self, inputs: Tensor, transform_params: Tensor
    ) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._log_scale_and_shift(transform_params)
        outputs = (inputs - shift) * torch.exp(-log_scale)

        return outputs, -log_scale.sum(dim=1)
