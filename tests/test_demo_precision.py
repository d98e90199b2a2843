"""The precision demonstration: flowkit's expm1/log1p forms against the written-out ones."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import load_example

precision = load_example("elu_precision")


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    return precision.run(quick=True, figure=tmp_path_factory.mktemp("figures") / "p.png")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("quantity", precision.QUANTITIES)
def test_flowkit_forms_stay_within_a_few_epsilon(figures, dtype, quantity):
    epsilon = torch.finfo(precision.DTYPES[dtype]).eps
    errors = figures[dtype]["raw"]["errors"][quantity]["flowkit"]
    scored = [error for error in errors if not math.isnan(error)]

    assert len(scored) > 0.8 * len(errors)
    assert max(scored) <= 2 * epsilon, (dtype, quantity, max(scored))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("quantity", precision.QUANTITIES)
def test_written_out_forms_lose_small_inputs(figures, dtype, quantity):
    epsilon = torch.finfo(precision.DTYPES[dtype]).eps
    smallest_band = figures[dtype]["summary"][quantity]

    # Cancellation near x = 0: the written-out form is off by far more than rounding.
    assert smallest_band["written out"][0] > 1e3 * max(smallest_band["flowkit"][0], epsilon)


def test_float32_forward_value_reaches_minus_alpha_and_float64_does_not(figures):
    first = figures["float32"]["first_undefined"]

    assert figures["float32"]["undefined"] > 0
    assert -18.0 < first < -17.0
    assert figures["float64"]["undefined"] == 0


def test_the_figure_is_written(figures, tmp_path):
    path = tmp_path / "precision.png"
    precision.plot({"float64": figures["float64"]["raw"]}, path)

    assert path.stat().st_size > 1000
