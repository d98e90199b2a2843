"""Pure functions for the ELU bijector: forward map, analytic inverse, log-derivative."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "elu_forward",
    "elu_forward_with_log_abs_det",
    "elu_inverse",
    "elu_inverse_with_log_abs_det",
    "elu_log_derivative",
    "elu_log_abs_det",
]


def elu_forward(inputs: Tensor, alpha: Tensor) -> Tensor:
    r"""Applies the ELU map element-wise.

    .. math::
        y = x \quad (x > 0), \qquad y = \alpha\,\mathrm{expm1}(x) \quad (x \le 0).

    ``expm1`` keeps the relative precision of small negative inputs, which ``exp(x) - 1``
    would lose to cancellation.
    """
    # relu(x) + alpha * expm1(min(x, 0)) is exact on both sides (one term is 0) and takes
    # fewer passes over memory than a torch.where of two full branches.
    return torch.relu(inputs) + alpha * torch.expm1(torch.clamp(inputs, max=0.0))


def elu_inverse(outputs: Tensor, alpha: Tensor) -> Tensor:
    r"""Inverts the ELU map element-wise, for ``y > -alpha``.

    .. math::
        x = y \quad (y > 0), \qquad x = \mathrm{log1p}(y / \alpha) \quad (-\alpha < y \le 0).

    The caller checks the domain; at ``y = -alpha`` this returns ``-inf`` and below it NaN.
    """
    return torch.relu(outputs) + torch.log1p(torch.clamp(outputs, max=0.0) / alpha)


def elu_log_derivative(inputs: Tensor, alpha: Tensor) -> Tensor:
    r"""Returns :math:`\log |dy/dx|` element-wise, computed from the input side.

    .. math::
        \log |dy/dx| = 0 \quad (x > 0), \qquad \log \alpha + x \quad (x \le 0).

    Written as ``log(alpha) + x`` rather than ``log(alpha * exp(x))``: the latter underflows
    to ``-inf`` below about ``x = -103`` in float32.
    """
    negative_part = torch.log(alpha) + inputs

    return torch.where(inputs > 0, torch.zeros_like(negative_part), negative_part)


def elu_log_abs_det(inputs: Tensor, alpha: Tensor) -> Tensor:
    r"""Returns :math:`\sum_j \log |dy_j/dx_j|` per row of ``(batch, features)`` inputs.

    .. math:: \sum_j \min(x_j, 0) + \sum_j [x_j \le 0] \log \alpha_j

    The same value as summing :func:`elu_log_derivative`, with the ``log(alpha)`` terms
    gathered by one matrix-vector product instead of a full-size ``where``.
    """
    return _log_abs_det(torch.clamp(inputs, max=0.0), inputs <= 0, alpha)


def _log_abs_det(negative_part: Tensor, non_positive: Tensor, alpha: Tensor) -> Tensor:
    # sum_j min(x_j, 0) + sum_j [x_j <= 0] log(alpha_j), from its two pieces.
    return negative_part.sum(dim=1) + non_positive.to(negative_part.dtype) @ torch.log(alpha)


def _records_graph(inputs: Tensor, alpha: Tensor) -> bool:
    return torch.is_grad_enabled() and (inputs.requires_grad or alpha.requires_grad)


def elu_forward_with_log_abs_det(inputs: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    """Returns :func:`elu_forward` and :func:`elu_log_abs_det` of ``inputs`` in one pass.

    The same values, bit for bit. Both need ``min(x, 0)``, computed once here; and when
    autograd records nothing (sampling, evaluation), the outputs are built in that buffer
    in place, which saves the layer three of its full-size temporaries.
    """
    negative = torch.clamp(inputs, max=0.0)
    logabsdet = _log_abs_det(negative, inputs <= 0, alpha)

    if _records_graph(inputs, alpha):
        return torch.relu(inputs) + alpha * torch.expm1(negative), logabsdet

    outputs = negative.expm1_().mul_(alpha).add_(torch.relu(inputs))

    return outputs, logabsdet


def elu_inverse_with_log_abs_det(outputs: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    """Returns :func:`elu_inverse` of ``outputs`` and the inverse's log-determinant at once.

    The log-determinant is ``-elu_log_abs_det(x)`` at ``x = elu_inverse(y)``, the same values
    bit for bit: ``min(x, 0)`` is the log1p part alone, and ``x <= 0`` exactly where
    ``y <= 0``. The caller checks the domain ``y > -alpha``. Without autograd the inputs'
    ``min(y, 0)`` buffer becomes the result, as in :func:`elu_forward_with_log_abs_det`.
    """
    if _records_graph(outputs, alpha):
        negative_part = torch.log1p(torch.clamp(outputs, max=0.0) / alpha)
        logabsdet = -_log_abs_det(negative_part, outputs <= 0, alpha)
        return torch.relu(outputs) + negative_part, logabsdet

    negative_part = torch.clamp(outputs, max=0.0).div_(alpha).log1p_()
    logabsdet = -_log_abs_det(negative_part, outputs <= 0, alpha)

    return negative_part.add_(torch.relu(outputs)), logabsdet
