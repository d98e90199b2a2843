"""Density quality against the truth: KL(p||q) on every 2-D set whose density is known.

Every model sees the same training points in the same batches (the same seeded index
stream), the same number of steps and batch size, at a parameter count matched within
10 % of flowkit's. flowkit runs its preset for the kind of data (``bounded`` where the set
has a known lower bound, ``unbounded`` otherwise), with its own trainer; the peers (nflows
RealNVP and neural spline flow, zuko NSF and MAF) use the standard recipe of
:func:`benchmarks.compare_nflows.train_nflows_flow` on standardized data. Reported:
test NLL on fresh samples and ``KL = E_p[log p - log q]`` with the standard error of the
paired differences. Each set also gets a PNG of every model's learned density beside the
truth, ``quality_densities/<set>.png`` under the output folder.

Run: python -m benchmarks.quality [--quick] [--steps N] [--sets a,b] [--out DIR] [--no-plots]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import flowkit
from benchmarks.compare_nflows import (
    Preprocessing,
    build_nflows_flow,
    count_parameters,
    match_hidden_features,
    train_nflows_flow,
)
from benchmarks.runtime import (
    QUICK_SPLIT_SIZES,
    SPLIT_SIZES,
    single_thread_float32,
    train_on_split,
)
from flowkit.data import load_dataset

__all__ = [
    "KNOWN_DENSITY_SETS",
    "ZukoModel",
    "build_peer",
    "kl_estimate",
    "main",
    "plot_densities",
    "train_flowkit",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
KNOWN_DENSITY_SETS = (
    "moons",
    "circles",
    "eight-gaussians",
    "checkerboard",
    "two-spirals",
    "rings",
    "gamma-lognormal",
)
PEERS = ("nflows-realnvp", "nflows-nsf", "zuko-nsf", "zuko-maf")


class ZukoModel(nn.Module):
    """Gives a zuko flow the ``log_prob(x)`` method the shared peer trainer calls."""

    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    def log_prob(self, inputs: Tensor) -> Tensor:
        """Log-density of the standardized inputs."""
        return self.flow().log_prob(inputs)

    def sample(self, num_samples: int) -> Tensor:
        """Draws ``num_samples`` points in the standardized units."""
        return self.flow().sample((num_samples,))


def build_peer(kind: str, width: int, layers: int) -> nn.Module:
    """A peer of :data:`PEERS` on 2 features, ``layers`` transforms of width ``width``."""
    if kind.startswith("nflows-"):
        return build_nflows_flow(kind.removeprefix("nflows-"), 2, width, layers)

    import zuko

    flow_class = zuko.flows.NSF if kind == "zuko-nsf" else zuko.flows.MAF
    return ZukoModel(flow_class(features=2, transforms=layers, hidden_features=(width, width)))


def kl_estimate(true_log_prob: Tensor, model_log_prob: Tensor) -> tuple[float, float, float]:
    """``(KL, standard error, share of points the model gives -inf)`` from paired values."""
    finite = torch.isfinite(model_log_prob)
    outside = 1.0 - finite.double().mean().item()
    if outside > 0:
        return math.inf, math.nan, outside
    difference = (true_log_prob - model_log_prob).double()

    return (
        difference.mean().item(),
        (difference.std() / math.sqrt(len(difference))).item(),
        outside,
    )


def _evaluate(log_prob, split) -> dict[str, float]:
    with torch.no_grad():
        model = torch.cat([log_prob(chunk) for chunk in split.test.split(8192)])
        truth = split.true_log_prob(split.test)
    kl, error, outside = kl_estimate(truth, model)
    finite = torch.isfinite(model)

    return {
        "test_nll": -model[finite].double().mean().item(),
        "kl": kl,
        "kl_standard_error": error,
        "test_outside": outside,
    }


def train_flowkit(
    split,
    steps: int,
    batch_size: int,
    preset: str | None = None,
    training: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[dict[str, Any], flowkit.Flow]:
    """Trains a flowkit preset on ``split`` with flowkit's trainer; returns metrics and flow.

    ``preset`` defaults to the one for the kind of data: ``bounded`` (with the set's known
    bounds) where the set has a lower bound, ``unbounded`` otherwise. ``options`` go to
    :func:`flowkit.build_flow` (``elu_tail=True``, for instance) and ``training`` to
    :func:`flowkit.train`; what neither gives is the preset's own choice.
    """
    if preset is None:
        preset = "unbounded" if split.lower_bound is None else "bounded"
    if preset == "bounded" and "lower" not in options:
        options["lower"] = [b if math.isfinite(b) else None for b in split.lower_bound.tolist()]
    torch.manual_seed(0)
    flow = flowkit.build_flow(preset, 2, **options)
    started = time.perf_counter()
    train_on_split(flow, split, steps, batch_size, **(training or {}))
    seconds = time.perf_counter() - started
    flow.eval()
    result = {
        "preset": preset,
        "configuration": {
            key: flow.config[key] for key in ("num_layers", "hidden_features", "num_bins")
        },
        "parameters": count_parameters(flow),
        "train_seconds": seconds,
        **_evaluate(flow.log_prob, split),
    }

    return result, flow


def _run_peer(
    kind: str, split, target: int, steps: int, batch_size: int, layers: int
) -> tuple[dict[str, Any], Callable[[Tensor], Tensor]]:
    width, parameters = match_hidden_features(lambda w: build_peer(kind, w, layers), target)
    torch.manual_seed(0)
    model = build_peer(kind, width, layers)
    preprocessing = Preprocessing(split.train)
    train_y, _ = preprocessing(split.train)
    validation_y, _ = preprocessing(split.validation)
    started = time.perf_counter()
    train_nflows_flow(model, train_y, validation_y, steps, batch_size, validation_interval=100)
    seconds = time.perf_counter() - started

    def log_prob(data: Tensor) -> Tensor:
        mapped, logabsdet = preprocessing(data)
        return model.log_prob(mapped) + logabsdet

    result = {
        "hidden_features": width,
        "parameters": parameters,
        "train_seconds": seconds,
        **_evaluate(log_prob, split),
    }

    return result, log_prob


def plot_densities(
    name: str,
    split,
    log_probs: dict[str, Callable[[Tensor], Tensor]],
    path: Path,
    resolution: int = 160,
) -> Path:
    """Draws the true density and each model's beside it on one grid; writes a PNG.

    The window spans the 0.1 % to 99.9 % quantiles of the test points, padded by a tenth;
    every panel shares the colour scale of the truth, so brighter means denser throughout.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low = torch.quantile(split.test.double(), 0.001, dim=0)
    high = torch.quantile(split.test.double(), 0.999, dim=0)
    low, high = low - 0.1 * (high - low), high + 0.1 * (high - low)
    if split.lower_bound is not None:
        low = torch.maximum(low, split.lower_bound.double())
    axes_values = [torch.linspace(low[i], high[i], resolution) for i in range(2)]
    grid_x, grid_y = torch.meshgrid(*axes_values, indexing="xy")
    points = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)

    panels = {"truth": split.true_log_prob}
    panels.update(log_probs)
    densities = {}
    with torch.no_grad():
        for label, log_prob in panels.items():
            values = torch.cat([log_prob(chunk) for chunk in points.float().split(8192)])
            densities[label] = values.double().exp().reshape(resolution, resolution).numpy()
    top = float(densities["truth"].max())

    figure, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8))
    extent = (float(low[0]), float(high[0]), float(low[1]), float(high[1]))
    for axis, (label, density) in zip(axes, densities.items(), strict=True):
        axis.imshow(density, origin="lower", extent=extent, vmin=0, vmax=top, aspect="auto")
        axis.set_title(label, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{name}: learned density beside the truth", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)

    return path


def compare_with_best_peer(
    split, runs: dict[str, dict[str, Any]], log_probs: dict[str, Callable[[Tensor], Tensor]]
) -> dict[str, Any]:
    """KL(flowkit) - KL(best peer) with the standard error of the per-point differences.

    Both KLs are taken on the same test points, so the truth's log-density cancels from the
    difference ``mean(log q_peer - log q_flowkit)``, and its standard error is far smaller
    than either KL's own.
    """
    peer = min(PEERS, key=lambda kind: runs[kind]["kl"])
    with torch.no_grad():
        ours = torch.cat([log_probs["flowkit"](chunk) for chunk in split.test.split(8192)])
        theirs = torch.cat([log_probs[peer](chunk) for chunk in split.test.split(8192)])
    difference = (theirs - ours).double()
    if not torch.isfinite(difference).all():
        return {"peer": peer, "kl_difference": math.nan, "standard_error": math.nan}

    return {
        "peer": peer,
        "kl_difference": difference.mean().item(),
        "standard_error": (difference.std() / math.sqrt(len(difference))).item(),
    }


def _format_kl(run: dict[str, Any]) -> str:
    if not math.isfinite(run["kl"]):
        return f"inf ({run['test_outside']:.1%} -inf)"
    return f"{run['kl']:.4f} ± {run['kl_standard_error']:.4f}"


def main(argv: list[str | Path] | None = None) -> dict[str, Any]:
    """Trains every model on every known-density set; writes JSON and a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke test")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--layers", type=int, default=4, help="coupling layers of each peer (flowkit: preset's)"
    )
    parser.add_argument("--sets", default=",".join(KNOWN_DENSITY_SETS))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-plots", action="store_true", help="skip the density PNGs")
    arguments = parser.parse_args(None if argv is None else [str(item) for item in argv])
    sizes, flowkit_options = SPLIT_SIZES, {}
    if arguments.quick:
        arguments.steps, arguments.layers = 6, 1
        sizes, flowkit_options = QUICK_SPLIT_SIZES, {"num_layers": 1}

    rows: dict[str, dict[str, Any]] = {}
    with single_thread_float32():
        for name in arguments.sets.split(","):
            split = load_dataset(name, seed=0, **sizes)
            result, flow = train_flowkit(
                split, arguments.steps, arguments.batch_size, **flowkit_options
            )
            runs = {"flowkit": result}
            log_probs = {"flowkit": flow.log_prob}
            for kind in PEERS:
                runs[kind], log_probs[kind] = _run_peer(
                    kind,
                    split,
                    runs["flowkit"]["parameters"],
                    arguments.steps,
                    arguments.batch_size,
                    arguments.layers,
                )
            if not arguments.no_plots:
                resolution = 40 if arguments.quick else 160
                path = arguments.out / "quality_densities" / f"{name}.png"
                plot_densities(name, split, log_probs, path, resolution)
            true_nll = -split.true_log_prob(split.test).double().mean().item()
            rows[name] = {
                "true_test_nll": true_nll,
                "runs": runs,
                "flowkit_minus_best_peer": compare_with_best_peer(split, runs, log_probs),
            }
            print(name, {kind: _format_kl(run) for kind, run in runs.items()}, flush=True)

    report = {
        "command": "python -m benchmarks.quality " + " ".join(str(item) for item in (argv or [])),
        "steps": arguments.steps,
        "batch_size": arguments.batch_size,
        "machine": {"platform": platform.platform(), "threads": 1},
        "versions": {"torch": torch.__version__, "flowkit": flowkit.__version__},
        "rows": rows,
    }
    models = ["flowkit", *PEERS]
    lines = [
        "# Density quality: KL(p||q) in nats (± standard error), lower is better",
        "",
        f"{arguments.steps} steps of batch {arguments.batch_size}, parameters matched within "
        "10 % of flowkit's (counts in the JSON), one thread, torch " + torch.__version__ + ". "
        "flowkit: its preset for the kind of data with the preset's own training recipe "
        "(`flowkit.presets.PRESET_DEFAULTS`, `PRESET_TRAINING`); peers: "
        f"{arguments.layers} layers, Adam at their standard learning rate, cosine decay, "
        "clipping.",
        "",
        "| data | " + " | ".join(models) + " | flowkit − best peer (paired SE) |",
        "|---|" + "---|" * (len(models) + 1),
    ]
    for name, row in rows.items():
        best = min(row["runs"][model]["kl"] for model in models)
        cells = []
        for model in models:
            text = _format_kl(row["runs"][model])
            cells.append(f"**{text}**" if row["runs"][model]["kl"] == best else text)
        preset = row["runs"]["flowkit"]["preset"]
        versus = row["flowkit_minus_best_peer"]
        cells.append(
            f"{versus['kl_difference']:+.4f} ± {versus['standard_error']:.4f} ({versus['peer']})"
        )
        lines.append(f"| {name} ({preset}) | " + " | ".join(cells) + " |")
    arguments.out.mkdir(parents=True, exist_ok=True)
    (arguments.out / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    (arguments.out / "quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    return report


if __name__ == "__main__":
    main()
