"""The ELU layer alone against the bare torch operations it is built from.

Forward with log-determinant against ``torch.nn.functional.elu``, and the inverse against
``torch.log1p``, on the same tensor (10^6 elements, 64 features), in eager mode and compiled
with ``torch.compile`` (falling back to eager, and saying so, where no compiler works).
Timings are medians of interleaved repeats (A B A B), reported as ratios, on one torch
thread by default (``--threads``), as every other speed benchmark here: with two threads
the ratio was 5.6 against 3.2 on one, so it then measures how each side uses the thread
pool as much as the layer.

Run: python -m benchmarks.elu_speed [--quick] [--elements N] [--repeats N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import flowkit
from flowkit.transforms import ELU

__all__ = ["main", "paired_medians"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
logger = logging.getLogger(__name__)


def paired_medians(
    first: Callable[[], object], second: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median seconds of two functions timed alternately, after one warm-up call each."""
    first()
    second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for index, function in enumerate((first, second)):
            started = time.perf_counter()
            function()
            times[index].append(time.perf_counter() - started)

    return statistics.median(times[0]), statistics.median(times[1])


def _compiled(function: Callable, label: str) -> tuple[Callable, bool]:
    try:
        compiled = torch.compile(function)
        compiled()
        return compiled, True
    except Exception as error:  # noqa: BLE001 - any compiler failure means eager fallback
        logger.warning("torch.compile failed for %s (%s); timing eager", label, error)
        return function, False


def main(argv: list[str | Path] | None = None) -> dict:
    """Times the ELU layer against the bare operations; writes JSON and Markdown."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 64 000 elements, 3 repeats, eager"
    )
    arguments = parser.parse_args(None if argv is None else [str(item) for item in argv])
    if arguments.quick:
        arguments.elements, arguments.repeats, arguments.no_compile = 64_000, 3, True

    threads = torch.get_num_threads()
    torch.set_num_threads(arguments.threads)
    try:
        return _measure(arguments)
    finally:
        torch.set_num_threads(threads)


def _measure(arguments: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    inputs = torch.randn(
        arguments.elements // arguments.features, arguments.features, dtype=torch.float32
    )
    layer = ELU(arguments.features).eval()
    with torch.no_grad():
        outputs, _ = layer(inputs)

    cases = {
        "forward_with_log_det": (
            lambda: layer(inputs),
            lambda: torch.nn.functional.elu(inputs),
        ),
        "inverse_with_log_det": (lambda: layer.inverse(outputs), lambda: torch.log1p(outputs)),
    }
    rows = {}
    with torch.no_grad():
        for name, (ours, floor) in cases.items():
            ours_seconds, floor_seconds = paired_medians(ours, floor, arguments.repeats)
            row = {"eager_ratio": ours_seconds / floor_seconds, "eager_ms": ours_seconds * 1e3}
            if not arguments.no_compile:
                ours_compiled, compiled = _compiled(ours, name)
                floor_compiled, _ = _compiled(floor, name + " floor")
                seconds = paired_medians(ours_compiled, floor_compiled, arguments.repeats)
                row["compiled"] = compiled
                row["compiled_ratio"] = seconds[0] / seconds[1]
                row["compiled_ms"] = seconds[0] * 1e3
            rows[name] = row

    report = {
        "elements": inputs.numel(),
        "features": arguments.features,
        "threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "versions": {"torch": torch.__version__, "flowkit": flowkit.__version__},
        "rows": rows,
    }
    arguments.out.mkdir(parents=True, exist_ok=True)
    (arguments.out / "elu_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# ELU layer against the bare torch operations",
        "",
        f"{report['elements']:,} elements, {arguments.features} features, "
        f"{report['threads']} thread(s), torch {torch.__version__}, {platform.platform()}",
        "",
        "| operation | eager ratio | compiled ratio |",
        "|---|---|---|",
    ]
    for name, row in rows.items():
        compiled = f"{row['compiled_ratio']:.2f}" if "compiled_ratio" in row else "not run"
        if row.get("compiled") is False:
            compiled += " (compiler unavailable: eager)"
        lines.append(f"| {name} | {row['eager_ratio']:.2f} | {compiled} |")
    (arguments.out / "elu_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    return report


if __name__ == "__main__":
    main()
