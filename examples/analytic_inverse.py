"""Time and exactness of sampling through ELU layers against layers inverted by bisection.

Sampling runs a flow's layers backwards (noise to data). flowkit's ELU has a closed-form
inverse, :math:`x = \\mathrm{log1p}(z / \\alpha)` on its negative side, so a stack of them
inverts in one pass. The baseline is the same stack (same shapes, same number of layers,
same per-feature :math:`\\alpha`) of a monotone element-wise map without a closed-form
inverse, the residual ELU

.. math:: g(x) = x + \\mathrm{elu}_\\alpha(x),

whose inverse on the negative side needs the Lambert W function; it is inverted here as a
black box, by bisection down to adjacent floating-point numbers.

For each dtype the script reports the time to invert one batch, the ratio of the two
times, the bisection's iteration count, and the round-trip errors
:math:`\\max|z - f(f^{-1}(z))|` (noise side) and :math:`\\max|x - f^{-1}(f(x))|` (data
side) for noise :math:`z = f(x)` made from data :math:`x \\sim N(0, 1.5^2)`.

Run: python examples/analytic_inverse.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from nflows.transforms import Transform
from torch import Tensor

from flowkit import ELU
from flowkit.transforms.elu_math import elu_forward


class ResidualELU(Transform):
    r"""Maps data x to noise z by :math:`z = x + \mathrm{elu}_\alpha(x)`; inverts by bisection.

    The map is :math:`2x` for :math:`x > 0` and :math:`x + \alpha\,\mathrm{expm1}(x)` for
    :math:`x \le 0`, increasing with :math:`dz/dx \ge 1` and :math:`z(0) = 0`, so the inverse
    lies between 0 and :math:`z`. The inverse is found by bisection of that bracket until no
    floating-point number lies strictly between its ends (to the last bit), then the end
    with the smaller residual is taken. The iterations of the last inverse are kept in
    ``last_iterations``.

    Args:
        features: number of features.
        alpha: per-feature :math:`\alpha > 0`, shape ``(features,)``.
    """

    def __init__(self, features: int, alpha: Tensor) -> None:
        super().__init__()

        self.features = features
        self.register_buffer("alpha", alpha.clone())
        self.last_iterations = 0

    def _map(self, inputs: Tensor) -> Tensor:
        return inputs + elu_forward(inputs, self.alpha.to(inputs.dtype))

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Maps data to noise; ``log|dz/dx|`` is ``log 2`` or ``log1p(alpha exp(x))``."""
        alpha = self.alpha.to(inputs.dtype)
        negative = torch.clamp(inputs, max=0.0)
        log_derivative = torch.where(
            inputs > 0,
            torch.full_like(inputs, math.log(2.0)),
            torch.log1p(alpha * torch.exp(negative)),
        )

        return self._map(inputs), log_derivative.sum(dim=1)

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Maps noise to data by bisection; the log-determinant comes from the forward map."""
        low = torch.clamp(inputs, max=0.0)
        high = torch.clamp(inputs, min=0.0)

        iterations = 0
        while True:
            middle = low + (high - low) / 2
            # No float strictly between the ends: the bracket cannot shrink any more.
            open_entries = (middle > low) & (middle < high)
            if not torch.any(open_entries):
                break
            iterations += 1
            below = self._map(middle) < inputs
            low = torch.where(open_entries & below, middle, low)
            high = torch.where(open_entries & ~below, middle, high)

        self.last_iterations = iterations
        low_error = (self._map(low) - inputs).abs()
        high_error = (self._map(high) - inputs).abs()
        outputs = torch.where(low_error <= high_error, low, high)
        _, logabsdet = self.forward(outputs)

        return outputs, -logabsdet


def to_noise(layers: list[Transform], data: Tensor) -> Tensor:
    """Runs a stack from data to noise."""
    hidden = data
    for layer in layers:
        hidden, _ = layer(hidden)

    return hidden


def to_data(layers: list[Transform], noise: Tensor) -> Tensor:
    """Runs a stack from noise to data (what sampling does)."""
    hidden = noise
    for layer in reversed(layers):
        hidden, _ = layer.inverse(hidden)

    return hidden


def build_stacks(
    features: int, num_layers: int, dtype: torch.dtype, seed: int = 0
) -> tuple[list[Transform], list[Transform]]:
    """The ELU stack and the bisection stack, with the same per-layer alphas in [0.5, 2]."""
    generator = torch.Generator().manual_seed(seed)
    elu_stack, bisection_stack = [], []
    for _ in range(num_layers):
        alpha = torch.exp(math.log(2.0) * (2 * torch.rand(features, generator=generator) - 1))
        elu_stack.append(ELU(features, alpha=alpha, learnable=False).to(dtype))
        bisection_stack.append(ResidualELU(features, alpha).to(dtype))

    return elu_stack, bisection_stack


def seconds(function: Callable[[], object]) -> float:
    """Wall time of one call of ``function()``."""
    started = time.perf_counter()
    function()

    return time.perf_counter() - started


@torch.no_grad()
def measure(
    dtype: torch.dtype, batch: int, features: int, num_layers: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Inverts one batch through both stacks in ``dtype``; returns time and errors of each."""
    elu_stack, bisection_stack = build_stacks(features, num_layers, dtype)
    data = 1.5 * torch.randn(batch, features, generator=torch.Generator().manual_seed(1))
    data = data.to(dtype)

    figures, inverses = {}, {}
    for name, stack in (("elu", elu_stack), ("bisection", bisection_stack)):
        noise = to_noise(stack, data)
        recovered = to_data(stack, noise)
        inverses[name] = partial(to_data, stack, noise)
        figures[name] = {
            "noise_round_trip": (noise - to_noise(stack, recovered)).abs().max().item(),
            "data_round_trip": (data - recovered).abs().max().item(),
            # Evaluations of an element-wise map per layer while inverting.
            "iterations": max(getattr(layer, "last_iterations", 1) for layer in stack),
        }

    # The two timings alternate, so that load from other work on a shared machine falls on
    # both alike; each ratio is taken within one pair, and the pairs' median is reported.
    times = {"elu": [], "bisection": []}
    for _ in range(repeats):
        for name, inverse in inverses.items():
            times[name].append(seconds(inverse))
    for name, values in times.items():
        figures[name]["seconds"] = min(values)
    ratios = [slow / fast for slow, fast in zip(times["bisection"], times["elu"], strict=True)]
    figures["ratio"] = statistics.median(ratios)

    return figures


def run(quick: bool = False) -> dict:
    """Measures both stacks in float32 and float64; returns the figures per dtype."""
    torch.set_num_threads(1)
    settings = {
        "batch": 512 if quick else 10_000,
        "features": 4 if quick else 8,
        "num_layers": 4 if quick else 8,
        "repeats": 1 if quick else 7,
    }

    results = {"settings": settings}
    for dtype in (torch.float32, torch.float64):
        results[str(dtype).removeprefix("torch.")] = measure(dtype, **settings)

    return results


def main() -> None:
    """Prints a table: time per batch, ratio, iterations and round-trip errors."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small batch, one repeat")
    arguments = parser.parse_args()

    results = run(quick=arguments.quick)
    settings = results["settings"]
    print(
        f"inverse of one batch of {settings['batch']} x {settings['features']} through "
        f"{settings['num_layers']} layers, one thread; time: fastest of {settings['repeats']}, "
        "ratio: median over paired runs"
    )
    print(
        f"{'dtype':8s} {'inverse':10s} {'ms/batch':>9} {'iter/layer':>10} "
        f"{'max|z - f(f^-1(z))|':>20} {'max|x - f^-1(f(x))|':>20}"
    )
    for dtype in ("float32", "float64"):
        for name in ("elu", "bisection"):
            figures = results[dtype][name]
            label = "analytic" if name == "elu" else "bisection"
            print(
                f"{dtype:8s} {label:10s} {1e3 * figures['seconds']:9.2f} "
                f"{figures['iterations']:10d} {figures['noise_round_trip']:20.3e} "
                f"{figures['data_round_trip']:20.3e}"
            )
        print(f"{dtype:8s} bisection / analytic time: {results[dtype]['ratio']:.1f}x")


if __name__ == "__main__":
    main()
