"""Scaling: time per training step against batch size and against dimension.

flowkit's unbounded preset against nflows' neural spline flow and zuko's NSF, each with 4
transforms, conditioners of width 64 and 8 spline bins (the same architecture, so that the
slopes compare; parameter counts in the JSON), on standard normal data: one step is a
forward pass, the backward pass and an Adam update. Every setting times all models in
interleaved rounds (one torch thread) and keeps the median; the slopes of ``log(time)``
against ``log(batch)`` and ``log(dimension)`` are least-squares fits, drawn on a log-log
plot.

Run: python -m benchmarks.scaling [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import flowkit
from benchmarks.compare_nflows import build_nflows_flow, count_parameters
from benchmarks.quality import ZukoModel
from benchmarks.runtime import single_thread_float32

__all__ = ["MODELS", "fit_slope", "main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODELS = ("flowkit-unbounded", "nflows-nsf", "zuko-nsf")
BATCHES = (256, 1024, 4096, 16_384)
DIMENSIONS = (2, 4, 8, 16, 32, 64)
WIDTH = 64
BINS = 8


def _build(kind: str, features: int, layers: int, data: Tensor) -> nn.Module:
    torch.manual_seed(0)
    if kind == "flowkit-unbounded":
        flow = flowkit.build_flow(
            "unbounded", features, num_layers=layers, hidden_features=WIDTH, num_bins=BINS
        )
        flowkit.fit_data_dependent_layers(flow, data)
        return flow
    if kind == "nflows-nsf":
        return build_nflows_flow("nsf", features, WIDTH, layers, num_bins=BINS)

    import zuko

    return ZukoModel(
        zuko.flows.NSF(features=features, transforms=layers, hidden_features=(WIDTH, WIDTH))
    )


def _step_function(model: nn.Module, data: Tensor, batch: int) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()

    def step() -> None:
        rows = torch.randint(len(data), (batch,), generator=generator)
        loss = -model.log_prob(data[rows]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _time_setting(
    features: int, batch: int, layers: int, rounds: int, kinds: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    data = torch.randn(max(4 * batch, 4096), features, generator=torch.Generator().manual_seed(1))
    models = {kind: _build(kind, features, layers, data) for kind in kinds}
    steps = {kind: _step_function(model, data, batch) for kind, model in models.items()}
    # Small batches repeat the step so that one timing lasts long enough to read.
    repeats = max(1, 4096 // (batch * features))
    times: dict[str, list[float]] = {kind: [] for kind in kinds}

    for round_index in range(rounds + 1):
        for kind, step in steps.items():
            started = time.perf_counter()
            for _ in range(repeats):
                step()
            if round_index > 0:
                times[kind].append((time.perf_counter() - started) / repeats)

    return {
        kind: {
            "seconds_per_step": statistics.median(times[kind]),
            "parameters": count_parameters(models[kind]),
        }
        for kind in kinds
    }


def fit_slope(sizes: list[float], seconds: list[float]) -> float:
    """The least-squares slope of ``log(seconds)`` against ``log(sizes)``."""
    x = [math.log(size) for size in sizes]
    y = [math.log(value) for value in seconds]
    x_mean, y_mean = statistics.fmean(x), statistics.fmean(y)
    covariance = sum((a - x_mean) * (b - y_mean) for a, b in zip(x, y, strict=True))

    return covariance / sum((a - x_mean) ** 2 for a in x)


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for axis, sweep, label in zip(
        axes, ("batch", "dimension"), ("batch size", "dimension"), strict=True
    ):
        part = report[sweep]
        for kind in report["models"]:
            seconds = [
                part["points"][str(size)][kind]["seconds_per_step"] for size in part["sizes"]
            ]
            slope = part["slopes"][kind]
            axis.loglog(part["sizes"], seconds, marker="o", label=f"{kind} (slope {slope:.2f})")
        # Label the measured sizes themselves; matplotlib's minor log labels overlap.
        axis.set_xticks(part["sizes"], [str(size) for size in part["sizes"]])
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel(label)
        axis.set_ylabel("seconds per training step")
        axis.set_title(part["title"], fontsize=9)
        axis.legend(fontsize=7)
        axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(argv: list[str | Path] | None = None) -> dict[str, Any]:
    """Times every model over the batch and dimension sweeps; writes JSON, Markdown, PNG."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sweeps, for a smoke test")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dimension-batch", type=int, default=1024)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    arguments = parser.parse_args(None if argv is None else [str(item) for item in argv])
    batches, dimensions = list(BATCHES), list(DIMENSIONS)
    if arguments.quick:
        batches, dimensions, arguments.dimension_batch = [64, 256], [2, 4], 64
        arguments.rounds, arguments.layers = 1, 1
    kinds = tuple(arguments.models.split(","))

    report: dict[str, Any] = {
        "command": "python -m benchmarks.scaling "
        + " ".join(str(item) for item in (sys.argv[1:] if argv is None else argv)),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": 1,
        },
        "versions": {"torch": torch.__version__, "flowkit": flowkit.__version__},
        "models": list(kinds),
        "layers": arguments.layers,
        "width": WIDTH,
        "rounds": arguments.rounds,
    }
    with single_thread_float32():
        sweeps = {
            "batch": (batches, lambda size: (2, size), "2 features, batch varied"),
            "dimension": (
                dimensions,
                lambda size: (size, arguments.dimension_batch),
                f"batch {arguments.dimension_batch}, dimension varied",
            ),
        }
        for sweep, (sizes, setting, title) in sweeps.items():
            points = {}
            for size in sizes:
                features, batch = setting(size)
                points[str(size)] = _time_setting(
                    features, batch, arguments.layers, arguments.rounds, kinds
                )
                print(
                    sweep,
                    size,
                    {k: f"{v['seconds_per_step']:.4f}" for k, v in points[str(size)].items()},
                    flush=True,
                )
            slopes = {
                kind: fit_slope(
                    sizes, [points[str(size)][kind]["seconds_per_step"] for size in sizes]
                )
                for kind in kinds
            }
            report[sweep] = {"sizes": sizes, "title": title, "points": points, "slopes": slopes}

    arguments.out.mkdir(parents=True, exist_ok=True)
    (arguments.out / "scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, arguments.out / "scaling.png")
    markdown = render_markdown(report)
    (arguments.out / "scaling.md").write_text(markdown)
    print(markdown)

    return report


def render_markdown(report: dict[str, Any]) -> str:
    """Milliseconds per step for every setting and model, and the fitted log-log slopes."""
    kinds = report["models"]
    lines = [
        "# Scaling: time per training step (milliseconds)",
        "",
        f"- command: `{report['command']}`",
        f"- {report['layers']} transforms, conditioner width {report['width']}, Adam, standard "
        f"normal data; median of {report['rounds']} interleaved rounds, one torch thread, "
        f"{report['machine']['platform']}, torch {report['versions']['torch']}",
        "- the cores were shared with other jobs: absolute times are noisy; the slopes and "
        "the ratios within a row are what compare",
        "- plot: `scaling.png` (log-log)",
    ]
    for sweep in ("batch", "dimension"):
        part = report[sweep]
        lines += [
            "",
            f"## Against {sweep} ({part['title']})",
            "",
            f"| {sweep} | " + " | ".join(kinds) + " |",
            "|---|" + "---|" * len(kinds),
        ]
        for size in part["sizes"]:
            cells = [
                f"{part['points'][str(size)][kind]['seconds_per_step'] * 1e3:.2f}"
                for kind in kinds
            ]
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
        slopes = " | ".join(f"{part['slopes'][kind]:.2f}" for kind in kinds)
        lines.append(f"| log-log slope | {slopes} |")

    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
