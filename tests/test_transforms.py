"""Every transform flowkit ships, both directions: round trip and log-det against autograd."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import jacobian_log_abs_det, perturb
from nflows.transforms import ActNorm, LULinear, RandomPermutation
from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
from nflows.transforms.nonlinearities import PiecewiseRationalQuadraticCDF

from flowkit.nets import ResidualConditioner
from flowkit.transforms import ELU, AffineCoupling, Logit, LowerBound, Standardize

FEATURES = 3


def small_conditioner(in_features, out_features):
    return ResidualConditioner(in_features, out_features, hidden_features=16, num_blocks=1)


def make_standardize():
    layer = Standardize(FEATURES)
    layer.fit(torch.randn(100, FEATURES) * torch.tensor([0.5, 2.0, 7.0]) + 3)
    return layer


def make_lower_bound():
    layer = LowerBound(torch.tensor([0.5, -math.inf, -2.0]), alpha=0.7)
    data = torch.stack(
        [0.5 + torch.rand(200).pow(3) * 4, torch.randn(200), -2 + torch.rand(200)], dim=1
    )
    layer.fit(data)
    return layer


def make_actnorm():
    layer = ActNorm(FEATURES)
    layer.initialized.fill_(True)
    return layer


# Each entry: (name, factory, sampler of data-side points inside the domain).
def data_inside_lower_bound(count):
    return torch.stack(
        [
            0.5 + torch.rand(count).pow(2) * 3 + 1e-3,
            torch.randn(count) * 2,
            -2 + torch.rand(count) * 5 + 1e-3,
        ],
        dim=1,
    )


LAYERS = [
    (
        "elu-data-to-noise",
        lambda: ELU(FEATURES, alpha=0.6),
        lambda n: torch.randn(n, FEATURES) * 3,
    ),
    (
        "elu-noise-to-data",
        lambda: ELU(FEATURES, alpha=1.7, orientation="noise_to_data"),
        lambda n: torch.rand(n, FEATURES) * 6 - 0.6,
    ),
    ("lower-bound", make_lower_bound, data_inside_lower_bound),
    ("logit", lambda: Logit(FEATURES), lambda n: torch.rand(n, FEATURES) * 0.98 + 0.01),
    ("standardize", make_standardize, lambda n: torch.randn(n, FEATURES) * 4),
    (
        "affine-coupling",
        lambda: AffineCoupling(torch.tensor([1, 0, 1]), small_conditioner),
        lambda n: torch.randn(n, FEATURES) * 2,
    ),
    (
        "spline-coupling",
        lambda: PiecewiseRationalQuadraticCouplingTransform(
            torch.tensor([0, 1, 1]), small_conditioner, num_bins=5, tails="linear", tail_bound=3.0
        ),
        lambda n: torch.randn(n, FEATURES) * 2,
    ),
    ("actnorm", make_actnorm, lambda n: torch.randn(n, FEATURES) * 2),
    ("lu-linear", lambda: LULinear(FEATURES), lambda n: torch.randn(n, FEATURES) * 2),
    ("permutation", lambda: RandomPermutation(FEATURES), lambda n: torch.randn(n, FEATURES)),
    (
        "spline-elementwise",
        lambda: PiecewiseRationalQuadraticCDF(
            FEATURES, num_bins=5, tails="linear", tail_bound=3.0
        ),
        lambda n: torch.randn(n, FEATURES) * 2,
    ),
]
IDS = [name for name, _, _ in LAYERS]


def build(factory):
    layer = factory()
    perturb(layer)
    layer.eval()
    return layer


def noise_inside(layer, sampler, count=32):
    """Noise-side points inside the inverse's domain: images of data-side points."""
    with torch.no_grad():
        noise, _ = layer(sampler(count))
    return noise


@pytest.mark.parametrize(("name", "factory", "sampler"), LAYERS, ids=IDS)
def test_forward_then_inverse_recovers_inputs(name, factory, sampler):
    layer = build(factory)
    inputs = sampler(64)

    outputs, forward_logabsdet = layer(inputs)
    recovered, inverse_logabsdet = layer.inverse(outputs)

    assert forward_logabsdet.shape == (64,)
    torch.testing.assert_close(
        recovered, inputs, rtol=1e-7, atol=1e-7, msg=lambda m: f"x={inputs}\nz={outputs}\n{m}"
    )
    torch.testing.assert_close(forward_logabsdet, -inverse_logabsdet, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize(("name", "factory", "sampler"), LAYERS, ids=IDS)
def test_inverse_then_forward_recovers_inputs(name, factory, sampler):
    layer = build(factory)
    noise = noise_inside(layer, sampler)

    data, _ = layer.inverse(noise)
    recovered, _ = layer(data)

    torch.testing.assert_close(recovered, noise, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize(("name", "factory", "sampler"), LAYERS, ids=IDS)
def test_forward_logabsdet_matches_autograd(name, factory, sampler):
    layer = build(factory)
    inputs = sampler(8)

    _, logabsdet = layer(inputs)
    expected = jacobian_log_abs_det(lambda x: layer(x)[0], inputs)

    torch.testing.assert_close(logabsdet, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("name", "factory", "sampler"), LAYERS, ids=IDS)
def test_inverse_logabsdet_matches_autograd(name, factory, sampler):
    layer = build(factory)
    noise = noise_inside(layer, sampler, count=8)

    _, logabsdet = layer.inverse(noise)
    expected = jacobian_log_abs_det(lambda z: layer.inverse(z)[0], noise)

    torch.testing.assert_close(logabsdet, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("name", "factory", "sampler"), LAYERS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [0, 1, 17])
def test_keeps_dtype_and_shape(name, factory, sampler, dtype, batch):
    if batch == 0 and name == "spline-coupling":
        pytest.skip("nflows 0.14's spline coupling cannot take an empty batch")
    layer = build(factory).to(dtype)
    inputs = sampler(batch).to(dtype)

    outputs, logabsdet = layer(inputs)

    assert outputs.dtype == dtype and logabsdet.dtype == dtype
    assert outputs.shape == inputs.shape and logabsdet.shape == (batch,)


@pytest.mark.parametrize(("name", "factory", "sampler"), LAYERS, ids=IDS)
def test_a_few_optimizer_steps_stay_finite(name, factory, sampler):
    layer = build(factory)
    layer.train()
    parameters = list(layer.parameters())
    if not parameters:
        pytest.skip("no parameters to train")
    optimizer = torch.optim.Adam(parameters, lr=1e-2)
    inputs = sampler(64)

    for _ in range(5):
        outputs, logabsdet = layer(inputs)
        loss = (0.5 * outputs.pow(2).sum(dim=1) - logabsdet).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    assert torch.isfinite(loss)
    assert all(torch.isfinite(parameter).all() for parameter in parameters)


def test_lower_bound_keeps_points_next_to_the_bound_apart_in_float32():
    layer = LowerBound(torch.tensor([10.0]), alpha=1.0).float()
    layer.fit(10 + torch.rand(100, 1).float() * 5)
    near = 10 + torch.tensor([[1e-5], [2e-5], [4e-5]], dtype=torch.float32)

    noise, logabsdet = layer(near)

    assert torch.all(torch.diff(noise.flatten()) > 0.5), "points near the bound collapsed"
    assert torch.isfinite(logabsdet).all()


def test_lower_bound_sampling_stays_above_the_bound():
    layer = make_lower_bound()

    data, _ = layer.inverse(torch.randn(10_000, FEATURES) * 30)

    assert torch.all(data[:, 0] > 0.5) and torch.all(data[:, 2] > -2.0)


def test_affine_coupling_reaches_scales_beyond_nflows_cap():
    layer = AffineCoupling(torch.tensor([1, 0]), small_conditioner)
    with torch.no_grad():
        layer.transform_net.output_layer[-1].bias.copy_(torch.tensor([0.0, 4.0]))

    _, logabsdet = layer(torch.zeros(1, 2))

    # nflows' sigmoid-capped scale cannot exceed 1.001, i.e. log-scale 0.001.
    assert logabsdet.item() > 3.0


MONOTONE = [
    entry
    for entry in LAYERS
    if entry[0] not in ("affine-coupling", "spline-coupling", "lu-linear")
]


@pytest.mark.parametrize(
    ("name", "factory", "sampler"), MONOTONE, ids=[entry[0] for entry in MONOTONE]
)
def test_forward_bounds_agree_with_forward(name, factory, sampler):
    from flowkit.transforms.bounds import forward_bounds

    layer = build(factory)
    ends = torch.sort(sampler(2), dim=0).values

    lower, upper = forward_bounds(layer, ends[0], ends[1])
    mapped, _ = layer(ends)

    expected_lower = torch.minimum(mapped[0], mapped[1])
    expected_upper = torch.maximum(mapped[0], mapped[1])
    if name != "permutation":
        torch.testing.assert_close(lower, mapped[0])
        torch.testing.assert_close(upper, mapped[1])
    torch.testing.assert_close(torch.minimum(lower, upper), expected_lower)
    torch.testing.assert_close(torch.maximum(lower, upper), expected_upper)
