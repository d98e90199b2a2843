"""The dead-gradient demonstration: ReLU conditioners lose units that ELU ones keep."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import load_example

import flowkit
from flowkit.nets import ResidualConditioner

dead_gradients = load_example("dead_gradients")


@pytest.fixture(scope="module")
def figures():
    # One thread: on a loaded machine two threads spin and cost many times the CPU time.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield dead_gradients.run(quick=True)
    finally:
        torch.set_num_threads(threads)


def test_relu_units_die_and_elu_units_do_not(figures):
    relu, elu = figures["relu"][0], figures["elu"][0]

    assert relu["trained"]["dead"] > 0
    assert elu["trained"]["dead"] == 0
    assert elu["init"]["dead"] == 0
    assert relu["trained"]["zero_derivative_pairs"] > elu["trained"]["zero_derivative_pairs"]
    assert relu["trained"]["units"] == elu["trained"]["units"]


def test_both_variants_train_to_a_finite_test_nll(figures):
    for activation in ("relu", "elu"):
        assert math.isfinite(figures[activation][0]["test_nll"])


def _tiny_flow(activation: str) -> flowkit.Flow:
    torch.manual_seed(0)
    flow = flowkit.build_flow(
        "unbounded", features=2, num_layers=1, hidden_features=8, activation=activation
    )
    flowkit.fit_data_dependent_layers(flow, torch.randn(200, 2))

    return flow


def test_a_unit_pushed_far_negative_is_counted_dead_with_relu():
    flow = _tiny_flow("relu")
    data = torch.randn(200, 2)
    before = dead_gradients.dead_unit_shares(flow, data)

    # A huge negative bias on one stream unit silences it in the entry activation of every
    # block (the branches start at zero) and in the output activation.
    conditioner = next(m for m in flow.modules() if isinstance(m, ResidualConditioner))
    with torch.no_grad():
        conditioner.input_layer.bias[0] = -1e3
    after = dead_gradients.dead_unit_shares(flow, data)

    assert after["dead"] > before["dead"]
    assert after["zero_derivative_pairs"] > before["zero_derivative_pairs"]


def test_elu_derivative_is_never_zero_on_ordinary_inputs():
    flow = _tiny_flow("elu")
    shares = dead_gradients.dead_unit_shares(flow, 5 * torch.randn(200, 2))

    assert shares["dead"] == 0
    assert shares["zero_derivative_pairs"] == 0
