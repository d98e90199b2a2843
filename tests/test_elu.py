"""The ELU bijector: math, precision ranges, domain errors, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from nflows.transforms import InputOutsideDomain

from flowkit.transforms import ELU
from flowkit.transforms.elu_math import elu_forward, elu_inverse, elu_log_derivative

ORIENTATIONS = ["data_to_noise", "noise_to_data"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch_elu(dtype):
    inputs = torch.linspace(-20, 20, 4001, dtype=dtype)
    alpha = torch.tensor(0.7, dtype=dtype)

    expected = torch.nn.functional.elu(inputs, alpha=0.7)

    torch.testing.assert_close(elu_forward(inputs, alpha), expected)


@pytest.mark.parametrize(
    ("dtype", "lowest", "tolerance"),
    [(torch.float32, -6.5, 1e-4), (torch.float64, -22.0, 1e-6)],
    ids=["float32", "float64"],
)
@pytest.mark.parametrize("alpha", [0.3, 0.77, 1.0, 1.9, 2.5, 13.0])
def test_round_trip_within_documented_range(dtype, lowest, tolerance, alpha):
    inputs = torch.linspace(lowest, 10.0, 20001, dtype=dtype)
    alpha_tensor = torch.tensor(alpha, dtype=dtype)

    recovered = elu_inverse(elu_forward(inputs, alpha_tensor), alpha_tensor)

    error = (recovered - inputs).abs().max().item()
    assert error < tolerance, f"worst round-trip error {error:.3g} above {tolerance}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_negative_inputs_keep_relative_precision(dtype):
    inputs = -torch.logspace(-12, -1, 50, dtype=dtype)
    alpha = torch.tensor(1.0, dtype=dtype)

    outputs = elu_forward(inputs, alpha)
    recovered = elu_inverse(outputs, alpha)

    relative = ((recovered - inputs) / inputs).abs().max().item()
    assert relative < 10 * torch.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_derivative_finite_down_to_minus_ten_thousand(dtype):
    inputs = torch.tensor([[-1e4, -500.0, -104.0, -88.0, 0.0, 3.0]], dtype=dtype)
    layer = ELU(6, alpha=0.5).to(dtype)

    _, logabsdet = layer(inputs)

    expected = sum(math.log(0.5) + value for value in [-1e4, -500.0, -104.0, -88.0, 0.0])
    assert torch.isfinite(logabsdet).all()
    assert logabsdet.item() == pytest.approx(expected, rel=1e-6)


def test_log_derivative_formula():
    inputs = torch.tensor([-3.0, -0.5, 0.0, 0.5])
    alpha = torch.tensor(2.0)

    expected = torch.tensor([math.log(2) - 3, math.log(2) - 0.5, math.log(2), 0.0])

    torch.testing.assert_close(elu_log_derivative(inputs, alpha), expected)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize(
    "offset", [0.0, -1e-3, -5.0, -1e6], ids=["at", "below", "far", "very-far"]
)
def test_log1p_side_rejects_values_at_or_below_minus_alpha(orientation, offset):
    layer = ELU(2, alpha=1.5, orientation=orientation)
    values = torch.tensor([[0.3, -1.5 + offset]])
    log1p_side = layer.inverse if orientation == "data_to_noise" else layer.forward

    with pytest.raises(InputOutsideDomain, match=r"> -1\.5 in feature 1; got"):
        log1p_side(values)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_log1p_side_accepts_values_just_above_minus_alpha(orientation):
    layer = ELU(1, alpha=1.0, orientation=orientation)
    just_above = torch.nextafter(torch.tensor([[-1.0]]), torch.tensor([[0.0]]))
    log1p_side = layer.inverse if orientation == "data_to_noise" else layer.forward

    outputs, logabsdet = log1p_side(just_above)

    assert torch.isfinite(outputs).all() and torch.isfinite(logabsdet).all()
    assert outputs.item() < -30


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_alpha_receives_gradients(orientation):
    layer = ELU(3, alpha=0.8, orientation=orientation)
    inputs = torch.tensor([[-0.5, -0.7, 0.4], [-0.1, 0.2, -0.3]])

    outputs, logabsdet = layer(inputs)
    (outputs.sum() + logabsdet.sum()).backward()

    assert layer.log_alpha.grad is not None
    assert torch.all(layer.log_alpha.grad != 0)


def test_fixed_alpha_is_a_buffer():
    layer = ELU(2, alpha=0.5, learnable=False)

    assert list(layer.parameters()) == []
    torch.testing.assert_close(layer.alpha, torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"features": 2, "alpha": 0.0}, "alpha must be positive"),
        ({"features": 2, "alpha": -1.0}, "alpha must be positive"),
        ({"features": 2, "alpha": math.inf}, "alpha must be positive"),
        ({"features": 0}, "features must be a positive integer"),
        ({"features": 2, "orientation": "sideways"}, "orientation must be one of"),
    ],
)
def test_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        ELU(**arguments)


def test_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        ELU(3)(torch.zeros(4, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_abs_det_is_the_sum_of_log_derivatives(dtype):
    from flowkit.transforms.elu_math import elu_log_abs_det

    inputs = torch.randn(50, 7, dtype=dtype) * 5
    inputs[0, :3] = torch.tensor([0.0, -1e4, 1e4], dtype=dtype)
    alpha = torch.rand(7, dtype=dtype) * 3 + 0.1

    expected = elu_log_derivative(inputs, alpha).sum(dim=1)

    torch.testing.assert_close(elu_log_abs_det(inputs, alpha), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("records_graph", [False, True])
def test_forward_with_log_abs_det_is_both_functions_bit_for_bit(dtype, records_graph):
    from flowkit.transforms.elu_math import elu_forward_with_log_abs_det, elu_log_abs_det

    inputs = torch.randn(64, 5, dtype=dtype) * 4
    inputs[0] = torch.tensor([0.0, -0.0, -1e-30, -200.0, 1e-30], dtype=dtype)
    alpha = (torch.rand(5, dtype=dtype) * 3 + 0.1).requires_grad_(records_graph)
    original = inputs.clone()

    outputs, logabsdet = elu_forward_with_log_abs_det(inputs, alpha)

    assert torch.equal(outputs, elu_forward(inputs, alpha))
    assert torch.equal(logabsdet, elu_log_abs_det(inputs, alpha))
    assert torch.equal(inputs, original)
    assert outputs.requires_grad == records_graph
    if records_graph:
        (gradient,) = torch.autograd.grad(outputs.sum() + logabsdet.sum(), alpha)
        (expected,) = torch.autograd.grad(
            elu_forward(inputs, alpha).sum() + elu_log_abs_det(inputs, alpha).sum(), alpha
        )
        torch.testing.assert_close(gradient, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("records_graph", [False, True])
def test_inverse_with_log_abs_det_is_both_functions_bit_for_bit(dtype, records_graph):
    from flowkit.transforms.elu_math import elu_inverse_with_log_abs_det, elu_log_abs_det

    alpha = (torch.rand(5, dtype=dtype) * 3 + 0.1).requires_grad_(records_graph)
    outputs = torch.maximum(torch.randn(64, 5, dtype=dtype) * 4, -0.999 * alpha.detach())
    outputs[0] = torch.tensor([0.0, -0.0, -1e-30, 1e-30, 7.0], dtype=dtype)
    original = outputs.clone()

    inputs, logabsdet = elu_inverse_with_log_abs_det(outputs, alpha)

    expected = elu_inverse(outputs, alpha)
    assert torch.equal(inputs, expected)
    assert torch.equal(logabsdet, -elu_log_abs_det(expected, alpha))
    assert torch.equal(outputs, original)
    assert inputs.requires_grad == records_graph
