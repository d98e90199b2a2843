"""The fast path of examples/ood_scores.py: out-of-distribution votes of a flow."""

from __future__ import annotations

import pytest
import torch
from helpers import load_example


@pytest.fixture(scope="module")
def figures() -> dict:
    """The example's figures at its quick budget, in float32 as the example runs them."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        return load_example("ood_scores").run(quick=True)
    finally:
        torch.set_default_dtype(previous)


def test_every_auroc_is_a_probability(figures: dict) -> None:
    rows = [*figures["moons"]["auroc_by_shift"].values(), figures["digits"]["auroc"]]

    for row in rows:
        assert set(row) == {"log_likelihood", "elu_saturation", "combined"}
        assert all(0.0 <= value <= 1.0 for value in row.values())


def test_log_likelihood_separates_clearly_shifted_points(figures: dict) -> None:
    by_shift = figures["moons"]["auroc_by_shift"]

    assert by_shift["4"]["log_likelihood"] > 0.9
    # A larger shift is easier to tell apart.
    assert by_shift["4"]["log_likelihood"] > by_shift["0.5"]["log_likelihood"]


def test_log_likelihood_separates_unseen_digit_classes(figures: dict) -> None:
    assert figures["digits"]["auroc"]["log_likelihood"] > 0.6
    assert figures["digits"]["outlier_test_images"] > 0
