"""The alpha-symmetry demonstration: the scale symmetry of an ELU and the next ActNorm."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import load_example

import flowkit

example = load_example("alpha_symmetry")


@pytest.fixture(scope="module")
def quick_results() -> dict:
    return example.run(quick=True)


def small_flow(learnable: bool = True) -> flowkit.Flow:
    flow = example.build(learnable, seed=3, num_layers=1, hidden_features=8, num_blocks=1)
    data = flowkit.load_dataset("moons", num_train=512, num_validation=1, num_test=1).train
    flowkit.fit_data_dependent_layers(flow, data.to(flow.dtype))
    flow.eval()

    return flow


def test_rescaling_holds_on_negative_rows_and_breaks_on_positive_ones():
    flow = small_flow()
    data = flowkit.load_dataset("moons", num_train=1, num_validation=1, num_test=2000).test

    check = example.symmetry_check(flow, data, torch.tensor([3.0, 0.5]))

    assert 0 < check["share_all_negative"] < 1
    assert check["change_all_negative"] < 1e-12
    # A single positive input sees the ActNorm scale alone: log 3 of the log-determinant.
    assert check["change_one_positive_crossed"] > 0.5 * math.log(3.0)
    assert check["change_some_positive"] > 0.1


def test_symmetry_check_leaves_the_flow_as_it_was():
    flow = small_flow()
    data = torch.randn(50, 2)
    dtype = flow.dtype
    before = flow.log_prob(data)

    example.symmetry_check(flow, data, torch.tensor([2.0, 2.0]))

    assert flow.dtype == dtype
    assert torch.equal(flow.log_prob(data), before)


def test_rescale_moves_alpha_and_the_next_scale_oppositely():
    flow = small_flow()
    _, elu, affine = example.elu_and_affine(flow)
    alpha, scale = elu.alpha.clone(), affine.scale.clone()

    example.rescale(flow, torch.tensor([2.0, 0.5]))

    assert torch.allclose(elu.alpha, alpha * torch.tensor([2.0, 0.5]))
    assert torch.allclose(elu.alpha * affine.scale, alpha * scale)


def test_fixed_alpha_never_moves_and_learnable_alpha_does(quick_results):
    fixed, learnable = quick_results["runs"]["fixed"], quick_results["runs"]["learnable"]

    assert fixed["drift_log_alpha"] == [0.0, 0.0]
    assert fixed["alpha"] == [1.0, 1.0]
    assert max(learnable["drift_log_alpha"]) > 0.0
    for run in (fixed, learnable):
        assert math.isfinite(run["test_nll"])
