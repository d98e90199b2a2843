"""The analytic-inverse demonstration: ELU layers against layers inverted by bisection."""

from __future__ import annotations

import pytest
import torch
from helpers import jacobian_log_abs_det, load_example

example = load_example("analytic_inverse")


@pytest.fixture(scope="module")
def quick_results() -> dict:
    return example.run(quick=True)


def test_analytic_inverse_takes_one_pass_and_bisection_many(quick_results):
    assert quick_results["float32"]["elu"]["iterations"] == 1
    assert quick_results["float64"]["elu"]["iterations"] == 1
    # Halving a bracket of width |z| down to one unit in the last place takes about as many
    # steps as the mantissa has bits.
    assert quick_results["float32"]["bisection"]["iterations"] >= 20
    assert quick_results["float64"]["bisection"]["iterations"] >= 50


@pytest.mark.parametrize(
    ("dtype", "noise_tolerance", "data_tolerance"),
    [("float32", 1e-5, 1e-3), ("float64", 1e-13, 1e-10)],
)
def test_both_inverses_round_trip(quick_results, dtype, noise_tolerance, data_tolerance):
    for name in ("elu", "bisection"):
        figures = quick_results[dtype][name]
        assert figures["noise_round_trip"] < noise_tolerance
        assert figures["data_round_trip"] < data_tolerance


def test_bisection_stops_at_the_closest_float():
    torch.manual_seed(0)
    layer = example.ResidualELU(3, torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
    noise = 3 * torch.randn(200, 3, dtype=torch.float64)

    recovered, _ = layer.inverse(noise)

    residual = (layer._map(recovered) - noise).abs()
    for direction in (torch.inf, -torch.inf):
        neighbour = torch.nextafter(recovered, torch.full_like(recovered, direction))
        assert torch.all(residual <= (layer._map(neighbour) - noise).abs())


def test_residual_elu_log_determinant_matches_autograd_both_ways():
    layer = example.ResidualELU(2, torch.tensor([0.7, 1.6], dtype=torch.float64))
    data = torch.tensor([[-2.0, 0.5], [1.5, -0.1], [-4.0, -1.0]], dtype=torch.float64)

    _, forward_log_det = layer(data)
    noise, _ = layer(data)
    _, inverse_log_det = layer.inverse(noise)

    expected = jacobian_log_abs_det(lambda x: layer(x)[0], data)
    assert torch.allclose(forward_log_det, expected)
    assert torch.allclose(inverse_log_det, -expected)


def test_stacks_share_alphas_and_depth():
    elu_stack, bisection_stack = example.build_stacks(4, 3, torch.float64)

    assert len(elu_stack) == len(bisection_stack) == 3
    for elu, residual in zip(elu_stack, bisection_stack, strict=True):
        assert torch.allclose(elu.alpha, residual.alpha)
