"""The inductive-bias demonstration: the lower-bounded ELU output layer on bounded data."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import load_example

import flowkit

example = load_example("bounded_inductive_bias")


@pytest.fixture(scope="module")
def quick_results() -> dict:
    return example.run(quick=True)


def test_bounded_flow_keeps_all_test_points_and_samples_inside(quick_results):
    for setting in quick_results["settings"]:
        for row in setting["runs"]:
            assert row["bounded"]["scored_minus_inf"] == 0.0
            assert row["bounded"]["samples_off_support"] == 0.0


def test_unbounded_flow_puts_mass_below_the_bound(quick_results):
    for setting in quick_results["settings"]:
        for row in setting["runs"]:
            assert row["unbounded"]["samples_off_support"] > 0.0


def test_bounded_flow_is_closer_to_the_truth_after_a_short_run(quick_results):
    # After 60 steps the gap is about 0.07 nats against a standard error of about 0.006.
    for setting in quick_results["settings"]:
        for row in setting["runs"]:
            assert row["gap"] > 2 * row["gap_standard_error"]
            assert row["bounded"]["kl"] < row["unbounded"]["kl"]


def test_kl_is_test_nll_minus_true_nll(quick_results):
    for setting in quick_results["settings"]:
        for row in setting["runs"]:
            for preset in example.MODELS:
                scores = row[preset]
                expected = scores["test_nll"] - setting["true_test_nll"]
                assert scores["kl"] == pytest.approx(expected, abs=1e-9)
                assert math.isfinite(scores["kl_standard_error"])
                assert scores["kl_standard_error"] > 0


def test_score_leaves_points_outside_the_support_out_and_counts_them():
    split = flowkit.load_dataset("gamma-lognormal", num_train=64, num_validation=16, num_test=8)

    class HalfOutside(torch.nn.Module):
        """Scores every other test point -inf and samples on the bound."""

        def log_prob_in_chunks(self, inputs):
            values = split.true_log_prob(inputs).clone()
            values[::2] = -math.inf
            return values

        def sample(self, count):
            return torch.zeros(count, 2)

    scores = example.score(HalfOutside(), split, num_samples=10)

    assert scores["scored_minus_inf"] == 0.5
    assert scores["samples_off_support"] == 1.0
    assert scores["kl"] == pytest.approx(0.0, abs=1e-12)
