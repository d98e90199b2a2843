"""Invariants of exact 2-D flows with ELU layers, in each placement, untrained and trained.

- ``exp(log_prob)`` integrates to 1 within 2e-3 (midpoint rule on a fine grid, in a
  coordinate where the density is smooth: data space for the ELU tail next to the base, the
  coordinate behind a data-side ELU layer otherwise, whose log-determinant is checked
  against autograd in ``test_transforms.py``);
- samples are finite and follow the density: on a 12 x 12 histogram, every cell expected to
  hold at least 100 of 100 000 samples lies within 5 standard deviations of its expected
  count, and the chi-square per cell is below 2;
- ``log_prob`` is never NaN, ``-inf`` exactly outside the support, finite inside it.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import grid_2d
from nflows.transforms import ActNorm

from flowkit import ELU, Flow, Standardize, build_flow, train
from flowkit.nets import ResidualConditioner
from flowkit.presets import fit_data_dependent_layers
from flowkit.transforms import AffineCoupling

TINY = {"num_layers": 2, "hidden_features": 16, "num_blocks": 1, "num_bins": 6}


def two_blobs(count: int, generator: torch.Generator) -> torch.Tensor:
    """A bimodal, correlated 2-D set on the whole plane."""
    centres = torch.tensor([[-1.5, 0.5], [1.0, -0.5]])
    labels = torch.randint(2, (count,), generator=generator)
    noise = torch.randn(count, 2, generator=generator) @ torch.tensor([[0.6, 0.3], [0.0, 0.4]])
    return centres[labels] + noise


def skewed_positive(count: int, generator: torch.Generator) -> torch.Tensor:
    """First feature bounded below by 0 with a heavy right tail, second unbounded."""
    first = torch.exp(0.8 * torch.randn(count, generator=generator))
    second = 0.5 * torch.log(first) + 0.5 * torch.randn(count, generator=generator)
    return torch.stack([first, second], dim=1)


def positive_pair(count: int, generator: torch.Generator) -> torch.Tensor:
    """Two correlated positive features, inside an ELU-toward-data flow's support."""
    shared = torch.randn(count, 1, generator=generator)
    return torch.exp(0.5 * shared + 0.6 * torch.randn(count, 2, generator=generator))


def conditioner(in_features, out_features):
    return ResidualConditioner(in_features, out_features, hidden_features=16, num_blocks=1)


def elu_toward_data_flow() -> Flow:
    """Standardize, then an ELU toward the data: support is a quarter-plane in x."""
    layers = [
        Standardize(2),
        ELU(2, alpha=1.3, orientation="noise_to_data"),
        ActNorm(2),
        AffineCoupling(torch.tensor([1, 0]), conditioner),
        ActNorm(2),
        AffineCoupling(torch.tensor([0, 1]), conditioner),
    ]
    return Flow(layers, features=2)


# name -> (builder, data maker, index of the first layer of the smooth coordinate)
PLACEMENTS = {
    "elu-tail-next-to-base": (
        lambda: build_flow("unbounded", 2, elu_tail=True, **TINY),
        two_blobs,
        0,
    ),
    "lower-bounded-output": (
        lambda: build_flow("bounded", 2, lower=[0.0, None], **TINY),
        skewed_positive,
        1,
    ),
    "elu-toward-data": (elu_toward_data_flow, positive_pair, 2),
}


def outside_points(name: str, flow: Flow) -> torch.Tensor:
    """Points outside the support of each placement, or an empty tensor."""
    if name == "lower-bounded-output":
        return torch.tensor([[0.0, 0.0], [-1e-12, 1.0], [-5.0, -3.0], [-1e30, 0.0]])
    if name == "elu-toward-data":
        standardize, elu = flow.layers[0], flow.layers[1]
        floor = standardize.mean - standardize.std * elu.alpha
        edge = floor.detach()
        return torch.stack(
            [edge, edge - torch.tensor([1.0, 0.0]), edge - torch.tensor([0.0, 5.0])]
        )
    return torch.zeros(0, 2)


@pytest.fixture(scope="module", params=sorted(PLACEMENTS))
def placement(request):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    name = request.param
    builder, make_data, smooth_start = PLACEMENTS[name]
    generator = torch.Generator().manual_seed(7)
    data = make_data(4000, generator)

    untrained = builder()
    fit_data_dependent_layers(untrained, data)
    untrained.eval()

    trained = builder()
    result = train(trained, data, steps=200, batch_size=128, progress=False, seed=3)
    assert result.steps_completed == 200 and result.stop_reason == "completed"

    torch.set_default_dtype(previous)
    return name, data, smooth_start, {"untrained": untrained, "trained": trained}


@pytest.fixture(params=["untrained", "trained"])
def case(placement, request):
    name, data, smooth_start, flows = placement
    return name, data, smooth_start, flows[request.param]


def smooth_part(flow: Flow, smooth_start: int) -> Flow:
    """The flow from ``smooth_start`` on, sharing the layers (and so the parameters)."""
    if smooth_start == 0:
        return flow
    return Flow(list(flow.layers)[smooth_start:], features=flow.features)


def to_smooth_coordinate(flow: Flow, smooth_start: int, points: torch.Tensor) -> torch.Tensor:
    for layer in list(flow.layers)[:smooth_start]:
        points, _ = layer(points)
    return points


def quadrature_box(flow: Flow, smooth_start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A box holding all but a negligible share of the mass, from a large sample."""
    with torch.no_grad():
        samples = to_smooth_coordinate(flow, smooth_start, flow.sample(200_000))
    low = torch.quantile(samples, 1e-4, dim=0)
    high = torch.quantile(samples, 1 - 1e-4, dim=0)
    width = high - low
    return low - 1.5 * width, high + 1.5 * width


def test_density_integrates_to_one(case):
    name, _, smooth_start, flow = case
    part = smooth_part(flow, smooth_start)
    lower, upper = quadrature_box(flow, smooth_start)
    points, area = grid_2d(lower, upper, 900)

    with torch.no_grad():
        density = torch.exp(part.log_prob(points))

    total = density.sum().item() * area
    assert abs(total - 1) < 2e-3, f"{name}: integral {total:.5f} over box {lower}, {upper}"


def test_samples_follow_density(case):
    name, _, smooth_start, flow = case
    part = smooth_part(flow, smooth_start)
    count, bins, refine = 100_000, 12, 24

    with torch.no_grad():
        samples = flow.sample(count, generator=torch.Generator().manual_seed(11))
        assert torch.isfinite(samples).all()
        smooth = to_smooth_coordinate(flow, smooth_start, samples)
        low = torch.quantile(smooth, 0.01, dim=0)
        high = torch.quantile(smooth, 0.99, dim=0)
        points, area = grid_2d(low, high, bins * refine)
        cell_mass = torch.exp(part.log_prob(points)) * area

    expected = cell_mass.reshape(bins, refine, bins, refine).sum(dim=(1, 3)) * count
    index = ((smooth - low) / (high - low) * bins).floor().long()
    keep = torch.all((index >= 0) & (index < bins), dim=1)
    observed = torch.zeros(bins, bins)
    observed.index_put_((index[keep, 0], index[keep, 1]), torch.ones(int(keep.sum())), True)

    populated = expected >= 100
    deviation = (observed - expected)[populated] / expected[populated].sqrt()
    assert populated.sum() >= 20, f"{name}: too few populated cells"
    assert deviation.abs().max() < 5, f"{name}: worst cell at {deviation.abs().max():.2f} sd"
    assert deviation.pow(2).mean() < 2, f"{name}: chi-square per cell {deviation.pow(2).mean()}"


def test_sample_and_log_prob_agree_with_log_prob(case):
    _, _, _, flow = case

    with torch.no_grad():
        samples, log_prob = flow.sample_and_log_prob(500)
        torch.testing.assert_close(log_prob, flow.log_prob(samples), rtol=1e-6, atol=1e-6)


def test_log_prob_never_nan_and_minus_inf_exactly_outside(case):
    name, data, _, flow = case
    extreme = torch.tensor([[1e6, -1e6], [-1e6, 1e6], [1e15, 1e15], [-40.0, -40.0]])
    inside = torch.cat([data[:200], extreme]) if name != "lower-bounded-output" else data[:200]
    outside = outside_points(name, flow)

    with torch.no_grad():
        inside_log_prob = flow.log_prob(inside)
        outside_log_prob = flow.log_prob(outside)
        mixed = flow.log_prob(torch.cat([outside, inside[:5]]))

    if name == "elu-toward-data":
        # Extreme points may fall outside this flow's quarter-plane: -inf there, never NaN.
        assert not torch.isnan(inside_log_prob).any()
        assert torch.isfinite(inside_log_prob[:200]).all()
    else:
        assert torch.isfinite(inside_log_prob).all(), inside_log_prob
    assert torch.all(outside_log_prob == -math.inf)
    assert torch.all(mixed[: len(outside)] == -math.inf)
    assert torch.isfinite(mixed[len(outside) :]).all()


def test_elu_tail_truncates_the_base():
    flow = build_flow("unbounded", 2, elu_tail=True, **TINY)
    fit_data_dependent_layers(flow, two_blobs(500, torch.Generator().manual_seed(1)))

    lower, upper = flow.base_box()

    assert flow.support.truncated_base
    assert torch.isfinite(lower).all() and torch.isinf(upper).all()
    assert not build_flow("unbounded", 2, **TINY).support.truncated_base
