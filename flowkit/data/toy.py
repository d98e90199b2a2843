"""Seeded two-dimensional toy distributions with their true log-densities."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from functools import cache

import numpy as np
import torch
from torch import Tensor

from flowkit.data.errors import DataError, DensityNotAvailableError

__all__ = [
    "TOY_DATASETS",
    "Checkerboard",
    "Circles",
    "EightGaussians",
    "GammaLogNormal",
    "Moons",
    "Pinwheel",
    "Rings",
    "ToyDistribution",
    "TwoSpirals",
    "get_toy",
    "toy_names",
]

_LOG_2PI = math.log(2.0 * math.pi)

# Points per chunk in the quadrature sums; with at most 3072 nodes a chunk's buffer of
# (points, nodes) float64 terms stays below 13 MB.
_CHUNK_POINTS = 512


def _make_generator(seed: int | None) -> torch.Generator | None:
    """Return a CPU generator seeded by ``seed``, or None to use the global RNG."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"seed must be an int or None, found {seed!r}")
    return torch.Generator().manual_seed(seed)


@cache
def _gauss_legendre(low: float, high: float, panels: int, order: int) -> tuple[Tensor, Tensor]:
    """Composite Gauss-Legendre rule on [low, high]: float64 nodes and log-weights."""
    base_nodes, base_weights = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(low, high, panels + 1)
    half = 0.5 * (edges[1:] - edges[:-1])
    mid = 0.5 * (edges[1:] + edges[:-1])
    nodes = (mid[:, None] + half[:, None] * base_nodes[None, :]).ravel()
    weights = (half[:, None] * base_weights[None, :]).ravel()

    return torch.from_numpy(nodes), torch.from_numpy(np.log(weights))


def _log_curve_mixture(x: Tensor, centers: Tensor, log_weights: Tensor, sigma: float) -> Tensor:
    r"""Log of :math:`\sum_j w_j \, N(x; c_j, \sigma^2 I_2)` for float64 ``x`` of shape (n, 2).

    ``centers`` (m, 2) and ``log_weights`` (m,) discretize a measure on a curve; the sum is
    taken with logsumexp. Points are sorted into cells of side :math:`4\sigma` and handled in
    chunks of nearby points; for each chunk's bounding box, nodes whose largest possible term
    is below :math:`e^{-40}` times the smallest possible largest term are skipped, which
    changes the sum by a relative amount below :math:`m e^{-40}` (about 1e-14).
    """
    finite = torch.isfinite(x).all(dim=1)
    xf = torch.where(finite[:, None], x, torch.zeros_like(x))
    out = x.new_empty(x.shape[0])
    const = log_weights - math.log(2.0 * math.pi * sigma**2)
    scale = -0.5 / sigma**2

    # Sort the points by cell so that each chunk covers a small region.
    cell = torch.floor(xf / (4.0 * sigma)).clamp(-1e6, 1e6)
    order = torch.argsort(cell[:, 0] * 4e6 + cell[:, 1], stable=True)
    chunk = _CHUNK_POINTS
    for start in range(0, x.shape[0], chunk):
        index = order[start : start + chunk]
        part = xf[index]

        # Bounds on |x - c|^2 over the chunk's box, and the nodes that can matter.
        low, high = part.min(dim=0).values, part.max(dim=0).values
        near_sq = ((low - centers).clamp_min(0) + (centers - high).clamp_min(0)).square().sum(1)
        far_sq = torch.maximum((centers - low).abs(), (centers - high).abs()).square().sum(1)
        floor = (const + scale * far_sq).max()
        keep = const + scale * near_sq >= floor - 40.0
        nodes, node_const = centers[keep], const[keep]

        # In place: terms = const - |x - c|^2 / (2 sigma^2), one (points, nodes) buffer.
        terms = (part[:, 0:1] - nodes[:, 0]).square_()
        terms.add_((part[:, 1:2] - nodes[:, 1]).square_())
        terms.mul_(scale).add_(node_const)
        out[index] = torch.logsumexp(terms, dim=1)

    # Infinite coordinates have zero density; NaN stays NaN.
    out[~finite] = -math.inf
    out[x.isnan().any(dim=1)] = math.nan
    return out


class ToyDistribution(ABC):
    """A seeded two-dimensional toy distribution, with its true log-density when known.

    Attributes:
        name: registry name, for example ``"moons"``.
        description: one line saying what the points look like.
        lower_bound: per-coordinate lower bound of the support, or None when unbounded.
        has_log_prob: whether :meth:`log_prob` returns the true density.
    """

    name: str = ""
    description: str = ""
    lower_bound: tuple[float, float] | None = None
    has_log_prob: bool = True

    def sample(
        self, num_samples: int, seed: int | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Draw ``num_samples`` points, shape (num_samples, 2), in ``dtype``.

        Points are drawn in float64 with a local ``torch.Generator`` seeded by ``seed``, so the
        same seed gives the same points and the global RNG is not touched; with ``seed=None``
        the global RNG is used.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
            raise DataError(f"num_samples must be an int >= 0, found {num_samples!r}")
        generator = _make_generator(seed)
        points = self._sample64(num_samples, generator)

        return points.to(dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """True log-density at ``x`` of shape (n, 2); returns shape (n,) in ``x``'s dtype.

        Computed in float64; ``-inf`` outside a bounded support.
        """
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise DataError(
                f"{self.name}: log_prob expects a tensor of shape (n, 2), found {shape}"
            )
        out_dtype = x.dtype if x.is_floating_point() else torch.float64
        values = self._log_prob64(x.detach().to(device="cpu", dtype=torch.float64))

        return values.to(device=x.device, dtype=out_dtype)

    @abstractmethod
    def _sample64(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        """Draw float64 points of shape (num_samples, 2)."""

    @abstractmethod
    def _log_prob64(self, x: Tensor) -> Tensor:
        """Log-density of float64 points of shape (n, 2)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Moons(ToyDistribution):
    r"""Two interleaved half circles with isotropic Gaussian noise.

    Parameters: radius :math:`R = 2`, noise :math:`\sigma = 0.2`, upper arc centred at
    :math:`c_1 = (-1, -0.5)` with angles :math:`\theta \in [0, \pi]`, lower arc centred at
    :math:`c_2 = (1, 0.5)` with angles :math:`\theta \in [\pi, 2\pi]`, each arc with
    probability 1/2, the angle uniform on its arc. Points lie in about [-3.6, 3.6] x [-2.1, 2.1].

    Density (no closed form; a 1-D integral over the angle):

    .. math::
        p(x) = \sum_{k=1}^{2} \frac{1}{2} \int_{a_k}^{a_k + \pi} \frac{1}{\pi}
        \mathcal{N}\big(x;\, c_k + R(\cos\theta, \sin\theta),\, \sigma^2 I\big)\, d\theta,

    evaluated with a composite Gauss-Legendre rule (32 panels of 16 nodes per arc, panel width
    0.1 rad, against an angular width of the integrand of at least about 0.05 rad) in log
    space with logsumexp. Against adaptive quadrature the log-density agrees to about 1e-13
    on [-5, 5]^2; halving the panels still gives 4e-9.
    """

    name = "moons"
    description = "two interleaved half circles (radius 2) with Gaussian noise 0.2"
    radius = 2.0
    sigma = 0.2
    centers = ((-1.0, -0.5), (1.0, 0.5))
    starts = (0.0, math.pi)

    def _sample64(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        arc = torch.randint(0, 2, (num_samples,), generator=generator)
        theta = math.pi * torch.rand(num_samples, generator=generator, dtype=torch.float64)
        theta = theta + arc.to(torch.float64) * math.pi
        center = torch.tensor(self.centers, dtype=torch.float64)[arc]
        curve = center + self.radius * torch.stack((theta.cos(), theta.sin()), dim=1)
        noise = torch.randn(num_samples, 2, generator=generator, dtype=torch.float64)

        return curve + self.sigma * noise

    def _nodes(self) -> tuple[Tensor, Tensor]:
        theta, log_w = _gauss_legendre(0.0, math.pi, 32, 16)
        centers, log_weights = [], []
        for (cx, cy), start in zip(self.centers, self.starts, strict=True):
            angle = theta + start
            arc = torch.stack((cx + self.radius * angle.cos(), cy + self.radius * angle.sin()), 1)
            centers.append(arc)
            log_weights.append(log_w - math.log(math.pi) - math.log(2.0))

        return torch.cat(centers), torch.cat(log_weights)

    def _log_prob64(self, x: Tensor) -> Tensor:
        centers, log_weights = self._nodes()
        return _log_curve_mixture(x, centers, log_weights, self.sigma)


class Circles(ToyDistribution):
    r"""Two concentric circles with isotropic Gaussian noise.

    Parameters: radii :math:`R_1 = 3`, :math:`R_2 = 1.5`, each with probability 1/2, angle
    uniform on :math:`[0, 2\pi)`, noise :math:`\sigma = 0.2`. Points lie in about [-4, 4]^2.

    Density (closed form; the angular integral of a Gaussian is a Bessel function):

    .. math::
        p(x) = \sum_{k=1}^{2} \frac{1}{2} \frac{1}{2\pi\sigma^2}
        \exp\!\Big(-\frac{r^2 + R_k^2}{2\sigma^2}\Big) I_0\!\Big(\frac{r R_k}{\sigma^2}\Big),
        \qquad r = |x|,

    computed as :math:`-(r - R_k)^2 / (2\sigma^2) + \log \mathrm{i0e}(r R_k / \sigma^2)` with
    the exponentially scaled Bessel function, which neither overflows nor loses precision.
    """

    name = "circles"
    description = "two concentric circles (radii 3 and 1.5) with Gaussian noise 0.2"
    radii = (3.0, 1.5)
    sigma = 0.2

    def _sample64(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        which = torch.randint(0, 2, (num_samples,), generator=generator)
        radius = torch.tensor(self.radii, dtype=torch.float64)[which]
        theta = 2.0 * math.pi * torch.rand(num_samples, generator=generator, dtype=torch.float64)
        curve = radius[:, None] * torch.stack((theta.cos(), theta.sin()), dim=1)
        noise = torch.randn(num_samples, 2, generator=generator, dtype=torch.float64)

        return curve + self.sigma * noise

    def _log_prob64(self, x: Tensor) -> Tensor:
        r = x.norm(dim=1, keepdim=True)
        radii = torch.tensor(self.radii, dtype=torch.float64)
        z = r * radii / self.sigma**2
        terms = (
            -((r - radii) ** 2) / (2.0 * self.sigma**2)
            + torch.special.i0e(z).log()
            - math.log(2.0 * math.pi * self.sigma**2)
            - math.log(2.0)
        )

        return torch.logsumexp(terms, dim=1)


class EightGaussians(ToyDistribution):
    r"""Eight Gaussians evenly spaced on a circle.

    Parameters: centres :math:`\mu_k = 2.5(\cos(k\pi/4), \sin(k\pi/4))`, :math:`k = 0..7`,
    equal weights 1/8, isotropic standard deviation :math:`\sigma = 0.3`. Points lie in about
    [-3.7, 3.7]^2.

    Density (closed form):

    .. math::
        p(x) = \frac{1}{8} \sum_{k=0}^{7} \mathcal{N}(x; \mu_k, \sigma^2 I),

    summed with logsumexp.
    """

    name = "eight-gaussians"
    description = "eight Gaussians (std 0.3) on a circle of radius 2.5"
    radius = 2.5
    sigma = 0.3

    def _means(self) -> Tensor:
        angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4.0)
        return self.radius * torch.stack((angle.cos(), angle.sin()), dim=1)

    def _sample64(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        which = torch.randint(0, 8, (num_samples,), generator=generator)
        noise = torch.randn(num_samples, 2, generator=generator, dtype=torch.float64)

        return self._means()[which] + self.sigma * noise

    def _log_prob64(self, x: Tensor) -> Tensor:
        sq = (x[:, None, :] - self._means()[None, :, :]).square().sum(dim=2)
        terms = -sq / (2.0 * self.sigma**2) - math.log(2.0 * math.pi * self.sigma**2)

        return torch.logsumexp(terms, dim=1) - math.log(8.0)


class Checkerboard(ToyDistribution):
    r"""Uniform distribution on the dark squares of a 4 x 4 checkerboard.

    Parameters: the board :math:`[-4, 4)^2` is cut into 16 squares of side 2; square
    :math:`(i, j)` (:math:`i, j = 0..3`, lower-left corner :math:`(-4 + 2i, -4 + 2j)`) is
    filled when :math:`i + j` is even, 8 squares in all. Squares are half-open,
    :math:`[a, a + 2) \times [b, b + 2)`.

    Density (closed form):

    .. math::
        p(x) = \frac{1}{32} \text{ on the filled squares}, \qquad 0 \text{ elsewhere},

    so ``log_prob`` is :math:`-\log 32` on the support and ``-inf`` outside it. The support is
    bounded; ``lower_bound`` is (-4, -4).
    """

    name = "checkerboard"
    description = "uniform on the 8 dark squares (side 2) of a board on [-4, 4)^2"
    lower_bound = (-4.0, -4.0)
    side = 2.0

    def _sample64(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        square = torch.randint(0, 8, (num_samples,), generator=generator)
        i = square // 2
        j = 2 * (square % 2) + (i % 2)
        corner = torch.stack((i, j), dim=1).to(torch.float64) * self.side - 4.0
        offset = torch.rand(num_samples, 2, generator=generator, dtype=torch.float64)

        # Clamp guards the half-open upper edge against rounding in corner + side * u.
        upper = torch.nextafter(corner + self.side, corner)
        return torch.minimum(corner + self.side * offset, upper)

    def _log_prob64(self, x: Tensor) -> Tensor:
        cell = torch.floor((x + 4.0) / self.side)
        inside = ((cell >= 0) & (cell <= 3)).all(dim=1)
        filled = inside & ((cell.sum(dim=1) % 2) == 0)
        out = torch.full_like(x[:, 0], -math.inf)
        out[filled] = -math.log(32.0)
        out[x.isnan().any(dim=1)] = math.nan

        return out


class TwoSpirals(ToyDistribution):
    r"""Two interleaved Archimedean spirals with isotropic Gaussian noise.

    Parameters: the arms are :math:`c(t) = a t (\cos t, \sin t)` and :math:`-c(t)`, each with
    probability 1/2, :math:`a = 0.38`, :math:`t = t_{max} \sqrt{u}` with :math:`u \sim U(0, 1)`
    and :math:`t_{max} = 3\pi` (so :math:`t` has density :math:`2t / t_{max}^2`, close to
    uniform in arc length), noise :math:`\sigma = 0.2`. The arms reach radius 3.58; points lie
    in about [-4.2, 4.2]^2.

    Density (no closed form; a 1-D integral over the curve parameter):

    .. math::
        p(x) = \frac{1}{2} \sum_{s = \pm 1} \int_0^{t_{max}} \frac{2t}{t_{max}^2}\,
        \mathcal{N}\big(x;\, s\,c(t),\, \sigma^2 I\big)\, dt,

    evaluated with a composite Gauss-Legendre rule (96 panels of 16 nodes, panel width 0.1,
    against a width of the integrand in :math:`t` of at least about 0.05) in log space with
    logsumexp. Against adaptive quadrature the log-density agrees to about 1e-13 on
    [-5, 5]^2; with 64 panels it is 4e-11.
    """

    name = "two-spirals"
    description = "two interleaved spirals (1.5 turns, radius 3.6) with Gaussian noise 0.2"
    scale = 0.38
    t_max = 3.0 * math.pi
    sigma = 0.2

    def _curve(self, t: Tensor) -> Tensor:
        return self.scale * t[:, None] * torch.stack((t.cos(), t.sin()), dim=1)

    def _sample64(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        u = torch.rand(num_samples, generator=generator, dtype=torch.float64)
        sign = 1.0 - 2.0 * torch.randint(0, 2, (num_samples,), generator=generator)
        curve = sign[:, None].to(torch.float64) * self._curve(self.t_max * u.sqrt())
        noise = torch.randn(num_samples, 2, generator=generator, dtype=torch.float64)

        return curve + self.sigma * noise

    def _log_prob64(self, x: Tensor) -> Tensor:
        t, log_w = _gauss_legendre(0.0, self.t_max, 96, 16)
        curve = self._curve(t)
        log_density_t = torch.log(2.0 * t / self.t_max**2)
        log_weights = log_w + log_density_t - math.log(2.0)
        centers = torch.cat((curve, -curve))

        return _log_curve_mixture(x, centers, torch.cat((log_weights, log_weights)), self.sigma)


class Pinwheel(ToyDistribution):
    r"""Five curved arms of a pinwheel; the true density is not available.

    Parameters: :math:`K = 5` arms at angles :math:`\phi_k = 2\pi k / K`, each with
    probability 1/K; :math:`f = (f_1, f_2)` with :math:`f_1 \sim N(1, 0.3^2)` (radial) and
    :math:`f_2 \sim N(0, 0.1^2)` (tangential); the point is
    :math:`x = 2\, R(\phi_k + 0.25\, e^{f_1})\, f`, with :math:`R(\cdot)` the rotation matrix,
    so the twist grows with the radius. Points lie in about [-4, 4]^2.

    Density: the map from :math:`f` to :math:`x` keeps :math:`|f|` but is not injective on
    each circle (its angular derivative changes sign for large :math:`|f|`), so the density is
    a sum over a varying number of preimages with no closed form. ``has_log_prob`` is False
    and :meth:`log_prob` raises :class:`DensityNotAvailableError`.
    """

    name = "pinwheel"
    description = "five twisted arms of a pinwheel (no tractable density)"
    has_log_prob = False
    num_arms = 5
    radial_std = 0.3
    tangential_std = 0.1
    rate = 0.25
    scale = 2.0

    def _sample64(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        arm = torch.randint(0, self.num_arms, (num_samples,), generator=generator)
        noise = torch.randn(num_samples, 2, generator=generator, dtype=torch.float64)
        f1 = 1.0 + self.radial_std * noise[:, 0]
        f2 = self.tangential_std * noise[:, 1]
        angle = arm.to(torch.float64) * (2.0 * math.pi / self.num_arms) + self.rate * f1.exp()
        cos, sin = angle.cos(), angle.sin()

        return self.scale * torch.stack((cos * f1 - sin * f2, sin * f1 + cos * f2), dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        """Not available: raises :class:`DensityNotAvailableError`."""
        raise DensityNotAvailableError(
            "pinwheel: the true density has no tractable form (the twist map is not "
            "one-to-one, so the density is a sum over a varying number of preimages); "
            "use a toy set with has_log_prob=True to compare against a true density"
        )

    def _log_prob64(self, x: Tensor) -> Tensor:
        raise DensityNotAvailableError("pinwheel: the true density is not available")


class Rings(ToyDistribution):
    r"""Four concentric rings with a folded-normal radius and a uniform angle.

    Parameters: radii :math:`R_k \in \{0.8, 1.6, 2.4, 3.2\}` with equal weights 1/4, radius
    :math:`r = |R_k + \sigma\varepsilon|`, :math:`\varepsilon \sim N(0, 1)`, :math:`\sigma =
    0.15`, angle uniform on :math:`[0, 2\pi)`. Points lie in about [-3.9, 3.9]^2.

    Density (closed form): with :math:`r = |x|`,

    .. math::
        p_r(r) = \frac{1}{4} \sum_k \big[\mathcal{N}(r; R_k, \sigma^2)
        + \mathcal{N}(r; -R_k, \sigma^2)\big], \qquad
        p(x) = \frac{p_r(|x|)}{2\pi |x|}.

    At the origin the density diverges like :math:`1/|x|` (``log_prob`` is ``+inf`` there),
    an integrable singularity carrying a mass below 1e-6 within radius 0.1.
    """

    name = "rings"
    description = "four rings (radii 0.8 to 3.2) with folded-normal radial noise 0.15"
    radii = (0.8, 1.6, 2.4, 3.2)
    sigma = 0.15

    def _sample64(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        which = torch.randint(0, len(self.radii), (num_samples,), generator=generator)
        noise = torch.randn(num_samples, generator=generator, dtype=torch.float64)
        radius = (torch.tensor(self.radii, dtype=torch.float64)[which] + self.sigma * noise).abs()
        theta = 2.0 * math.pi * torch.rand(num_samples, generator=generator, dtype=torch.float64)

        return radius[:, None] * torch.stack((theta.cos(), theta.sin()), dim=1)

    def _log_prob64(self, x: Tensor) -> Tensor:
        r = x.norm(dim=1, keepdim=True)
        radii = torch.tensor(self.radii, dtype=torch.float64)
        centers = torch.cat((radii, -radii))
        terms = -((r - centers) ** 2) / (2.0 * self.sigma**2)
        log_pr = (
            torch.logsumexp(terms, dim=1)
            - 0.5 * _LOG_2PI
            - math.log(self.sigma)
            - math.log(len(self.radii))
        )

        return log_pr - _LOG_2PI - r[:, 0].log()


class GammaLogNormal(ToyDistribution):
    r"""A positive, right-skewed pair: a Gamma variable and a lognormal given it.

    Parameters: :math:`x_1 \sim \mathrm{Gamma}(\text{shape } k = 2, \text{scale } 1)`;
    :math:`x_2 \mid x_1 \sim \mathrm{LogNormal}(\mu = \tfrac12 \log x_1, s = 0.5)`. The
    support is :math:`(0, \infty)^2`, ``lower_bound`` is (0, 0), and :math:`x_2` has a heavy
    (lognormal) right tail; 99.9 % of points lie in [0, 9.3] x [0, 14].

    Density (closed form):

    .. math::
        \log p(x) = \log x_1 - x_1
        - \log x_2 - \log(s\sqrt{2\pi}) - \frac{(\log x_2 - \tfrac12 \log x_1)^2}{2 s^2},

    (:math:`\Gamma(2) = 1`) for :math:`x_1, x_2 > 0`, and ``-inf`` elsewhere. Both coordinates
    have density falling to zero at the bound. Samples are drawn as
    :math:`x_1 = -\log(U_1 U_2)` with :math:`U_i` uniform on (0, 1], clamped to the smallest
    positive normal number of the output dtype so that no point lands on the bound.
    """

    name = "gamma-lognormal"
    description = "x1 ~ Gamma(2, 1), x2 | x1 ~ LogNormal(0.5 log x1, 0.5); support (0, inf)^2"
    lower_bound = (0.0, 0.0)
    shape = 2.0
    log_sigma = 0.5

    def sample(
        self, num_samples: int, seed: int | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Draw points as in :meth:`ToyDistribution.sample`, strictly inside the support."""
        points = super().sample(num_samples, seed, dtype)
        return points.clamp_min(torch.finfo(dtype).tiny)

    def _sample64(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        u = 1.0 - torch.rand(num_samples, 2, generator=generator, dtype=torch.float64)
        x1 = -(u[:, 0].log() + u[:, 1].log())
        eps = torch.randn(num_samples, generator=generator, dtype=torch.float64)
        x2 = torch.exp(0.5 * x1.log() + self.log_sigma * eps)

        return torch.stack((x1, x2), dim=1)

    def _log_prob64(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, 0], x[:, 1]
        inside = torch.isfinite(x).all(dim=1) & (x1 > 0) & (x2 > 0)
        a = torch.where(inside, x1, torch.ones_like(x1))
        b = torch.where(inside, x2, torch.ones_like(x2))
        log_a, log_b = a.log(), b.log()
        s = self.log_sigma
        value = (
            log_a
            - a
            - log_b
            - math.log(s)
            - 0.5 * _LOG_2PI
            - (log_b - 0.5 * log_a) ** 2 / (2.0 * s**2)
        )
        out = torch.where(inside, value, torch.full_like(value, -math.inf))

        return torch.where(x.isnan().any(dim=1), torch.full_like(value, math.nan), out)


TOY_DATASETS: dict[str, ToyDistribution] = {
    toy.name: toy
    for toy in (
        Moons(),
        Circles(),
        EightGaussians(),
        Checkerboard(),
        TwoSpirals(),
        Pinwheel(),
        Rings(),
        GammaLogNormal(),
    )
}
"""All toy distributions by name."""


def toy_names() -> list[str]:
    """Names of the built-in toy distributions, in registry order."""
    return list(TOY_DATASETS)


def get_toy(name: str) -> ToyDistribution:
    """Return the toy distribution called ``name``; raises :class:`DataError` if unknown."""
    try:
        return TOY_DATASETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(TOY_DATASETS)
        raise DataError(f"unknown toy data set {name!r}; valid names: {valid}") from None
