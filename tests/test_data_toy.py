"""Tests of the toy 2-D distributions: sampling, true densities, supports."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from flowkit.data import (
    TOY_DATASETS,
    DataError,
    DensityNotAvailableError,
    ToyDistribution,
    get_toy,
    toy_names,
)

NAMES = toy_names()
WITH_DENSITY = [name for name in NAMES if TOY_DATASETS[name].has_log_prob]
UNBOUNDED_BOX = [name for name in WITH_DENSITY if name != "gamma-lognormal"]

# Grid for the integration and histogram tests: midpoints of squares of side H.
H = 0.0625
CELL = 0.5
NUM_HIST_SAMPLES = 200_000


def test_registry_lists_every_required_set() -> None:
    required = {
        "moons",
        "circles",
        "eight-gaussians",
        "checkerboard",
        "two-spirals",
        "pinwheel",
        "rings",
        "gamma-lognormal",
    }
    assert required <= set(NAMES)
    assert all(isinstance(TOY_DATASETS[name], ToyDistribution) for name in NAMES)
    assert all(TOY_DATASETS[name].name == name for name in NAMES)


def test_get_toy_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DataError, match="valid names: .*moons"):
        get_toy("moon")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_shape_dtype_finite(name: str, dtype: torch.dtype) -> None:
    x = get_toy(name).sample(1000, seed=0, dtype=dtype)

    assert x.shape == (1000, 2)
    assert x.dtype == dtype
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", NAMES)
def test_sample_seeded_is_deterministic_and_leaves_global_rng(name: str) -> None:
    toy = get_toy(name)
    state = torch.get_rng_state()

    a = toy.sample(500, seed=7)
    b = toy.sample(500, seed=7)
    c = toy.sample(500, seed=8)

    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("name", NAMES)
def test_sample_rejects_bad_count(name: str) -> None:
    with pytest.raises(DataError, match="num_samples"):
        get_toy(name).sample(-1, seed=0)


@pytest.mark.parametrize("name", NAMES)
def test_samples_live_in_the_advertised_box(name: str) -> None:
    x = get_toy(name).sample(20_000, seed=1, dtype=torch.float64)
    if name == "gamma-lognormal":
        assert (x > 0).all()
    else:
        assert x.abs().max() < 5.0
        assert (x.abs() < 4.0).all(dim=1).double().mean() > 0.99


def test_pinwheel_has_no_density() -> None:
    toy = get_toy("pinwheel")
    assert not toy.has_log_prob
    with pytest.raises(DensityNotAvailableError, match="no tractable form"):
        toy.log_prob(torch.zeros(3, 2))
    assert issubclass(DensityNotAvailableError, NotImplementedError)


@pytest.mark.parametrize("name", WITH_DENSITY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_prob_shape_dtype_and_finite_on_samples(name: str, dtype: torch.dtype) -> None:
    toy = get_toy(name)
    x = toy.sample(2000, seed=3, dtype=dtype)
    log_p = toy.log_prob(x)

    assert log_p.shape == (2000,)
    assert log_p.dtype == dtype
    assert torch.isfinite(log_p).all()


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_log_prob_rejects_wrong_shape(name: str) -> None:
    with pytest.raises(DataError, match=r"shape \(n, 2\)"):
        get_toy(name).log_prob(torch.zeros(4, 3))


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_log_prob_never_nan(name: str) -> None:
    far = torch.linspace(-50.0, 50.0, 21, dtype=torch.float64)
    near = torch.linspace(-6.0, 6.0, 49, dtype=torch.float64)
    grid = torch.cat((torch.cartesian_prod(far, far), torch.cartesian_prod(near, near)))
    extremes = torch.tensor(
        [[math.inf, 0.0], [-math.inf, 1.0], [1e300, -1e300], [0.0, 0.0], [-0.0, 5.0]],
        dtype=torch.float64,
    )
    log_p = get_toy(name).log_prob(torch.cat((grid, extremes)))

    assert not log_p.isnan().any()


def test_checkerboard_support() -> None:
    toy = get_toy("checkerboard")
    inside = torch.tensor([[-3.0, -3.0], [-1.0, -1.0], [3.9, 3.9], [-4.0, -4.0], [-2.0, -2.0]])
    outside = torch.tensor(
        [[-3.0, -1.0], [1.0, -1.0], [4.0, 3.0], [4.5, 0.5], [-4.01, -3.0], [0.0, 5.0]]
    )

    assert torch.allclose(toy.log_prob(inside), torch.full((5,), -math.log(32.0)))
    assert torch.equal(toy.log_prob(outside), torch.full((6,), -math.inf))
    assert toy.lower_bound == (-4.0, -4.0)


def test_gamma_lognormal_support() -> None:
    toy = get_toy("gamma-lognormal")
    outside = torch.tensor(
        [[0.0, 1.0], [1.0, 0.0], [-1.0, 1.0], [1.0, -1e-12], [-0.0, -0.0]], dtype=torch.float64
    )
    inside = torch.tensor([[1e-30, 1e-30], [1.0, 1.0], [30.0, 1e3], [1e-5, 50.0]])

    assert torch.equal(toy.log_prob(outside), torch.full((5,), -math.inf, dtype=torch.float64))
    assert torch.isfinite(toy.log_prob(inside)).all()
    assert toy.lower_bound == (0.0, 0.0)


def test_gamma_lognormal_closed_form_against_scipy() -> None:
    from scipy import stats

    x = get_toy("gamma-lognormal").sample(200, seed=4, dtype=torch.float64)
    expected = stats.gamma(a=2.0).logpdf(x[:, 0].numpy()) + stats.lognorm(
        s=0.5, scale=np.sqrt(x[:, 0].numpy())
    ).logpdf(x[:, 1].numpy())

    np.testing.assert_allclose(get_toy("gamma-lognormal").log_prob(x).numpy(), expected, 1e-12)


def test_unbounded_sets_have_no_lower_bound() -> None:
    for name in NAMES:
        if name not in ("checkerboard", "gamma-lognormal"):
            assert get_toy(name).lower_bound is None


def _reference_log_prob(name: str, x: tuple[float, float]) -> float:
    """Log-density by adaptive quadrature (scipy), independent of the library's rule."""
    toy = get_toy(name)
    s2 = toy.sigma**2

    def gauss(cx: float, cy: float) -> float:
        return math.exp(-((x[0] - cx) ** 2 + (x[1] - cy) ** 2) / (2 * s2)) / (2 * math.pi * s2)

    total = 0.0
    if name == "moons":
        for (cx, cy), start in zip(toy.centers, toy.starts, strict=True):

            def f(t: float, cx: float = cx, cy: float = cy) -> float:
                r = toy.radius
                return 0.5 / math.pi * gauss(cx + r * math.cos(t), cy + r * math.sin(t))

            total += integrate.quad(f, start, start + math.pi, epsabs=0, epsrel=1e-12, limit=500)[
                0
            ]
    else:
        for sign in (1.0, -1.0):

            def f(t: float, sign: float = sign) -> float:
                c = sign * toy.scale * t
                weight = 0.5 * 2.0 * t / toy.t_max**2
                return weight * gauss(c * math.cos(t), c * math.sin(t))

            total += integrate.quad(f, 0.0, toy.t_max, epsabs=0, epsrel=1e-12, limit=500)[0]

    return math.log(total)


@pytest.mark.parametrize("name", ["moons", "two-spirals"])
def test_quadrature_density_matches_adaptive_quadrature(name: str) -> None:
    toy = get_toy(name)
    on_data = toy.sample(8, seed=11, dtype=torch.float64)
    spread = torch.tensor([[0.0, 0.0], [3.0, -3.0], [-4.5, 0.5], [1.0, 2.5]], dtype=torch.float64)
    x = torch.cat((on_data, spread))

    got = toy.log_prob(x)
    reference = [_reference_log_prob(name, tuple(p.tolist())) for p in x]
    expected = torch.tensor(reference, dtype=torch.float64)

    assert torch.allclose(got, expected, rtol=0, atol=1e-9), (got - expected).abs().max()


def _grid_density(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Density on the midpoints of an H-grid, and the grid's edges in each coordinate.

    Unbounded sets and the checkerboard use the box [-5, 5]^2 (its edges line up with the
    checkerboard's squares, so the midpoint rule is exact there). gamma-lognormal is
    integrated in log coordinates (u, v) = (log x1, log x2) on [-12, 4.5] x [-8, 5], where
    the density p(e^u, e^v) e^(u + v) is smooth and its mass outside the box is below 1e-12.
    """
    toy = get_toy(name)
    if name == "gamma-lognormal":
        edges = (torch.arange(-12.0, 4.5 + H / 2, H), torch.arange(-8.0, 5.0 + H / 2, H))
    else:
        edges = (torch.arange(-5.0, 5.0 + H / 2, H), torch.arange(-5.0, 5.0 + H / 2, H))
    edges = tuple(e.to(torch.float64) for e in edges)
    mids = [0.5 * (e[1:] + e[:-1]) for e in edges]
    grid = torch.cartesian_prod(*mids)
    if name == "gamma-lognormal":
        density = (toy.log_prob(grid.exp()) + grid.sum(dim=1)).exp()
    else:
        density = toy.log_prob(grid).exp()

    return density.reshape(len(mids[0]), len(mids[1])), edges[0], edges[1]


_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def grid_density(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if name not in _CACHE:
        _CACHE[name] = _grid_density(name)
    return _CACHE[name]


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_density_integrates_to_one(name: str) -> None:
    density, _, _ = grid_density(name)
    total = density.sum().item() * H * H

    assert abs(total - 1.0) < 2e-3, total


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_histogram_of_samples_matches_density(name: str) -> None:
    """Chi-square of 200k samples against the density integrated over 0.5 x 0.5 cells.

    Cells expecting at least 20 points are tested, the rest pooled into one cell (with the
    mass outside the box) when it expects at least 5 points. With about 100-300 cells the
    statistic per degree of freedom has a standard deviation below 0.15; the test asks for
    below 1.5 and no cell off by more than 5 standard deviations.
    """
    density, e0, e1 = grid_density(name)
    per_cell = round(CELL / H)
    n0, n1 = density.shape[0] // per_cell, density.shape[1] // per_cell
    cell_mass = density[: n0 * per_cell, : n1 * per_cell]
    cell_mass = cell_mass.reshape(n0, per_cell, n1, per_cell).sum(dim=(1, 3)) * H * H

    x = get_toy(name).sample(NUM_HIST_SAMPLES, seed=12345, dtype=torch.float64)
    if name == "gamma-lognormal":
        x = x.log()
    i = torch.floor((x[:, 0] - e0[0]) / CELL).long()
    j = torch.floor((x[:, 1] - e1[0]) / CELL).long()
    inside = (i >= 0) & (i < n0) & (j >= 0) & (j < n1)
    counts = torch.zeros(n0 * n1, dtype=torch.float64)
    counts.index_add_(0, (i * n1 + j)[inside], torch.ones(int(inside.sum()), dtype=torch.float64))

    expected = cell_mass.reshape(-1) * NUM_HIST_SAMPLES
    big = expected >= 20
    observed, wanted = counts[big], expected[big]
    rest_observed = NUM_HIST_SAMPLES - observed.sum()
    rest_wanted = NUM_HIST_SAMPLES - wanted.sum()
    if rest_wanted >= 5:
        observed = torch.cat((observed, rest_observed.reshape(1)))
        wanted = torch.cat((wanted, rest_wanted.reshape(1)))
    else:
        assert rest_observed <= 10
    z = (observed - wanted) / wanted.sqrt()
    chi2_per_dof = (z.square().sum() / (len(z) - 1)).item()

    assert big.sum() > 50
    assert chi2_per_dof < 1.5, chi2_per_dof
    assert z.abs().max() < 5.0, z.abs().max()
