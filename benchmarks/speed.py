"""Speed per model, flowkit's overhead over the nflows layers it wraps, and ELU sampling cost.

Three parts, all timed on one torch thread, each as medians of interleaved repeats (every
model, or both sides of a pair, once per round) so that load on the machine hits all sides
alike:

- **models**: training steps per second (Adam, clipped gradients, batch 256; the same step
  function for every model, so flowkit's own trainer's checks are not in it), ``log_prob``
  and ``sample`` points per second, and peak memory, for flowkit's unbounded and bounded
  presets and the quality table's peers at matched parameter counts (nflows RealNVP and
  NSF, zuko NSF and MAF). The unbounded models run on moons, the bounded preset on
  gamma-lognormal; peers see standardized data and sample in standardized units.
  Memory is the peak resident-set growth over each phase, measured in a fresh process per
  model (Linux ``/proc/self/clear_refs`` resets the peak, ``VmHWM`` reads it), which counts
  every allocation torch's CPU allocator makes, unlike ``tracemalloc``.
- **overhead**: the very same nflows transform objects (the unbounded preset's ActNorm and
  spline couplings) run bare, as ``nflows.flows.Flow(CompositeTransform, StandardNormal)``,
  and inside :class:`flowkit.Flow`; ``log_prob`` and ``sample``, paired A B A B, median of
  the per-pair time ratios.
- **elu**: sampling (and ``log_prob``) of exact flows with their ELU layers against the
  same stack without them: the unbounded preset with the ELU tail (truncated-normal base)
  against the same layers minus the ELU (standard normal base), and the bounded preset's
  lower-bounded ELU output layer against a fitted standardization in its place.

Run: python -m benchmarks.speed [--quick] [--parts models,overhead,elu] [--out DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from nflows.distributions import StandardNormal
from nflows.flows import Flow as NflowsFlow
from nflows.transforms import CompositeTransform
from torch import Tensor, nn

import flowkit
from benchmarks.compare_nflows import Preprocessing, count_parameters, match_hidden_features
from benchmarks.quality import build_peer
from benchmarks.runtime import single_thread_float32
from flowkit.data import load_dataset
from flowkit.transforms import ELU, LowerBound, Standardize

__all__ = ["MODELS", "build_model", "main", "paired_ratio", "peak_memory"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODELS = (
    "flowkit-unbounded",
    "flowkit-bounded",
    "nflows-realnvp",
    "nflows-nsf",
    "zuko-nsf",
    "zuko-maf",
)
PARTS = ("models", "overhead", "elu")
TRAIN_BATCH = 256


class Model:
    """One model behind a common face: its module, training data, and sampling call."""

    def __init__(self, module: nn.Module, data: Tensor, sample: Callable[[int], Tensor]):
        self.module = module
        self.data = data
        self.sample = sample

    def log_prob(self, inputs: Tensor) -> Tensor:
        """Log-density of ``inputs`` (data units for flowkit, standardized for peers)."""
        return self.module.log_prob(inputs)


def _toy(name: str, quick: bool):
    sizes = (600, 100, 100) if quick else (20_000, 1000, 1000)
    return load_dataset(
        name, seed=0, num_train=sizes[0], num_validation=sizes[1], num_test=sizes[2]
    )


PEER_LAYERS = 4
"""Coupling layers of every peer unless ``--layers`` says otherwise, as in the quality table."""


def _size(layers: int | None) -> dict[str, int]:
    """flowkit's build options for ``--layers``: the preset's own depth when not given."""
    return {} if layers is None else {"num_layers": layers}


def build_model(kind: str, layers: int | None = None, quick: bool = False) -> Model:
    """Builds one of :data:`MODELS` as the quality table does, ready to train and sample.

    flowkit's presets are fitted to their data (standardization, bounds, ActNorm) and keep
    their own depth unless ``layers`` is given; peers get ``layers`` (default
    :data:`PEER_LAYERS`) at the width that matches the unbounded preset's parameter count
    within 10 %.
    """
    if kind not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {kind!r}")

    torch.manual_seed(0)
    if kind.startswith("flowkit-"):
        preset = kind.removeprefix("flowkit-")
        split = _toy("gamma-lognormal" if preset == "bounded" else "moons", quick)
        options = {"lower": [0.0, 0.0]} if preset == "bounded" else {}
        flow = flowkit.build_flow(preset, 2, **_size(layers), **options)
        flowkit.fit_data_dependent_layers(flow, split.train)
        return Model(flow, split.train, flow.sample)

    split = _toy("moons", quick)
    target = count_parameters(flowkit.build_flow("unbounded", 2, **_size(layers)))
    peer_layers = layers or PEER_LAYERS
    width, _ = match_hidden_features(lambda w: build_peer(kind, w, peer_layers), target)
    torch.manual_seed(0)
    module = build_peer(kind, width, peer_layers)
    data, _ = Preprocessing(split.train)(split.train)
    # ActNorm-free peers still get one pass in training mode, as their first step would.
    module.log_prob(data[:TRAIN_BATCH])

    return Model(module, data, module.sample)


def _training_step(model: Model) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.module.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        rows = torch.randint(len(model.data), (TRAIN_BATCH,), generator=generator)
        loss = -model.log_prob(model.data[rows]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.module.parameters(), 5.0)
        optimizer.step()

    return step


def _repeat(function: Callable[[], object], times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            function()

    return run


def _points(data: Tensor, count: int) -> Tensor:
    return data[torch.arange(count) % len(data)].contiguous()


def _timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()

    return time.perf_counter() - started


# --- peak memory in a fresh process ---------------------------------------------------------


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()

    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


def _peak_growth_mib(function: Callable[[], object]) -> float | None:
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    resident = _status_kib("VmRSS")
    function()

    return (_status_kib("VmHWM") - resident) / 1024


def peak_memory(
    kind: str, points: int, train_batch: int, quick: bool, layers: int | None = None
) -> dict[str, float | None]:
    """Peak resident-memory growth in MiB of one model's three phases, in this process.

    Meant to run in a fresh process (see :func:`_memory_in_subprocess`), so that no other
    model's freed pages blur the figures. ``None`` where the peak cannot be reset (not
    Linux).
    """
    torch.set_num_threads(1)
    model = build_model(kind, layers, quick=quick)
    optimizer = torch.optim.Adam(model.module.parameters(), lr=1e-3)
    batch = _points(model.data, train_batch)
    inputs = _points(model.data, points)

    def train_steps() -> None:
        for _ in range(2):
            loss = -model.log_prob(batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    train = _peak_growth_mib(train_steps)
    model.module.eval()
    with torch.no_grad():
        log_prob = _peak_growth_mib(lambda: model.log_prob(inputs))
        sample = _peak_growth_mib(lambda: model.sample(points))

    return {"train": train, "log_prob": log_prob, "sample": sample}


def _memory_in_subprocess(
    kind: str, points: int, train_batch: int, quick: bool, layers: int | None
) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.speed",
        "--memory-of",
        kind,
        "--points",
        str(points),
        "--memory-train-batch",
        str(train_batch),
    ]
    if layers is not None:
        command += ["--layers", str(layers)]
    if quick:
        command.append("--quick")
    repository = Path(__file__).resolve().parents[1]
    finished = subprocess.run(command, capture_output=True, text=True, check=True, cwd=repository)

    return json.loads(finished.stdout.strip().splitlines()[-1])


# --- paired timing --------------------------------------------------------------------------


def paired_ratio(
    first: Callable[[], object], second: Callable[[], object], repeats: int
) -> dict[str, float]:
    """Times ``first`` and ``second`` alternately; returns medians and the median ratio.

    The ratio is ``second / first`` per pair (the time of B over the time of A), so that a
    burst of load that slows one pair cancels within it.
    """
    first()
    second()
    first_times, second_times = [], []
    for _ in range(repeats):
        first_times.append(_timed(first))
        second_times.append(_timed(second))
    ratios = [b / a for a, b in zip(first_times, second_times, strict=True)]

    return {
        "first_ms": statistics.median(first_times) * 1e3,
        "second_ms": statistics.median(second_times) * 1e3,
        "median_ratio": statistics.median(ratios),
        "pairs": repeats,
    }


# --- the three parts ------------------------------------------------------------------------


def run_models(kinds: list[str], arguments: argparse.Namespace) -> dict[str, Any]:
    """Throughput of every model in interleaved rounds, and peak memory per model."""
    models = {kind: build_model(kind, arguments.layers, arguments.quick) for kind in kinds}
    steps = {
        kind: _repeat(_training_step(model), arguments.train_steps)
        for kind, model in models.items()
    }
    inputs = {kind: _points(model.data, arguments.points) for kind, model in models.items()}
    times: dict[str, dict[str, list[float]]] = {
        kind: {"train": [], "log_prob": [], "sample": []} for kind in kinds
    }

    for round_index in range(arguments.rounds + 1):
        for kind, model in models.items():
            model.module.train()
            train_seconds = _timed(steps[kind])
            model.module.eval()
            with torch.no_grad():
                log_prob_seconds = _timed(partial(model.log_prob, inputs[kind]))
                sample_seconds = _timed(partial(model.sample, arguments.points))
            # Round 0 warms caches and allocator pools; it is not counted.
            if round_index > 0:
                times[kind]["train"].append(train_seconds)
                times[kind]["log_prob"].append(log_prob_seconds)
                times[kind]["sample"].append(sample_seconds)

    rows = {}
    for kind, model in models.items():
        medians = {phase: statistics.median(values) for phase, values in times[kind].items()}
        rows[kind] = {
            "parameters": count_parameters(model.module),
            "train_steps_per_second": arguments.train_steps / medians["train"],
            "log_prob_points_per_second": arguments.points / medians["log_prob"],
            "sample_points_per_second": arguments.points / medians["sample"],
        }
        # A fresh process per model costs seconds of imports; the smoke run measures one.
        measure = not arguments.no_memory and not (arguments.quick and kind != kinds[0])
        if measure:
            rows[kind]["peak_memory_mib"] = _memory_in_subprocess(
                kind,
                arguments.points,
                arguments.memory_train_batch,
                arguments.quick,
                arguments.layers,
            )

    return {
        "train_batch": TRAIN_BATCH,
        "train_steps_per_round": arguments.train_steps,
        "points": arguments.points,
        "rounds": arguments.rounds,
        "memory_train_batch": arguments.memory_train_batch,
        "rows": rows,
    }


def _standardized_moons(quick: bool, layers: int | None) -> tuple[flowkit.Flow, Tensor]:
    torch.manual_seed(0)
    split = _toy("moons", quick)
    flow = flowkit.build_flow("unbounded", 2, **_size(layers))
    flowkit.fit_data_dependent_layers(flow, split.train)
    standardized, _ = flow.layers[0](split.train)

    return flow, standardized


def run_overhead(arguments: argparse.Namespace) -> dict[str, Any]:
    """The same nflows layers bare (A) and inside ``flowkit.Flow`` (B), paired."""
    preset_flow, standardized = _standardized_moons(arguments.quick, arguments.layers)
    layers = list(preset_flow.layers)[1:]
    if any(isinstance(layer, Standardize) for layer in layers):
        raise RuntimeError("the overhead stack must hold nflows layers only")
    bare = NflowsFlow(CompositeTransform(layers), StandardNormal([2])).eval()
    wrapped = flowkit.Flow(layers, features=2).eval()

    rows = {}
    with torch.no_grad():
        check = standardized[:512]
        if not torch.allclose(bare.log_prob(check), wrapped.log_prob(check), atol=1e-5):
            raise RuntimeError("bare and wrapped stacks disagree; the comparison is void")
        for batch in arguments.overhead_batches:
            inputs = _points(standardized, batch)
            repeats = max(5, arguments.pairs * 4096 // max(batch, 4096))
            rows[f"log_prob@{batch}"] = paired_ratio(
                partial(bare.log_prob, inputs), partial(wrapped.log_prob, inputs), repeats
            )
            rows[f"sample@{batch}"] = paired_ratio(
                partial(bare.sample, batch), partial(wrapped.sample, batch), repeats
            )

    return {
        "stack": f"{preset_flow.config['num_layers']} x (ActNorm, rational-quadratic spline "
        "coupling), nflows layers",
        "ratio": "time inside flowkit.Flow / time in nflows Flow; target <= 1.05",
        "rows": rows,
    }


def _bounded_pair(quick: bool, layers: int | None) -> tuple[flowkit.Flow, flowkit.Flow, Tensor]:
    torch.manual_seed(0)
    split = _toy("gamma-lognormal", quick)
    with_elu = flowkit.build_flow("bounded", 2, **_size(layers), lower=[0.0, 0.0])
    flowkit.fit_data_dependent_layers(with_elu, split.train)
    if not isinstance(with_elu.layers[0], LowerBound):
        raise RuntimeError("the bounded preset no longer starts with its LowerBound layer")
    standardize = Standardize(2)
    standardize.fit(split.train)
    without = flowkit.Flow([standardize, *list(with_elu.layers)[1:]], features=2)

    return with_elu, without, split.train


def _tail_pair(quick: bool, layers: int | None) -> tuple[flowkit.Flow, flowkit.Flow, Tensor]:
    torch.manual_seed(0)
    split = _toy("moons", quick)
    with_elu = flowkit.build_flow("unbounded", 2, **_size(layers), elu_tail=True)
    flowkit.fit_data_dependent_layers(with_elu, split.train)
    without = flowkit.Flow(
        [layer for layer in with_elu.layers if not isinstance(layer, ELU)], features=2
    )
    if not with_elu.support.truncated_base or without.support.truncated_base:
        raise RuntimeError("the ELU tail no longer truncates the base; the pair is void")

    return with_elu, without, split.train


def run_elu(arguments: argparse.Namespace) -> dict[str, Any]:
    """Exact flows with their ELU layers (B) against the same stacks without them (A)."""
    rows = {}
    pairs = {"elu-tail": _tail_pair, "elu-output (bounded)": _bounded_pair}
    with torch.no_grad():
        for label, build in pairs.items():
            with_elu, without, data = build(arguments.quick, arguments.layers)
            with_elu.eval()
            without.eval()
            for batch in arguments.elu_batches:
                inputs = _points(data, batch)
                repeats = max(5, arguments.pairs * 4096 // max(batch, 4096))
                sample = paired_ratio(
                    partial(without.sample, batch), partial(with_elu.sample, batch), repeats
                )
                sample["speed_ratio"] = 1 / sample["median_ratio"]
                rows[f"{label} sample@{batch}"] = sample
                rows[f"{label} log_prob@{batch}"] = paired_ratio(
                    partial(without.log_prob, inputs),
                    partial(with_elu.log_prob, inputs),
                    repeats,
                )

    return {
        "ratio": "time with ELU / time without; speed_ratio = 1 / that, target >= 0.95",
        "rows": rows,
    }


# --- report ---------------------------------------------------------------------------------


def _memory_cell(memory: dict[str, float | None] | None) -> str:
    if memory is None:
        return "not measured"
    return " / ".join("n/a" if value is None else f"{value:.1f}" for value in memory.values())


def render_markdown(report: dict[str, Any]) -> str:
    """The three tables, with the command, machine and load caveat on top."""
    lines = [
        "# Speed: models, wrapper overhead, ELU sampling",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {report['machine']['platform']}, {report['machine']['cpu_count']} CPUs "
        f"shared with other jobs, one torch thread; torch {report['versions']['torch']}, "
        f"nflows {report['versions']['nflows']}, zuko {report['versions']['zuko']}, "
        f"flowkit {report['versions']['flowkit']}",
        "- timings are medians of interleaved repeats; other processes shared the cores, so "
        "absolute figures are noisy and only the ratios within one table compare",
    ]
    if "models" in report:
        part = report["models"]
        lines += [
            "",
            f"## Per model (training batch {part['train_batch']}; log_prob and sample on "
            f"{part['points']:,} points; {part['rounds']} rounds)",
            "",
            "Peak memory: growth of the peak resident set (VmHWM) over each phase, in a fresh "
            f"process per model: 2 training steps at batch {part['memory_train_batch']:,} / "
            f"log_prob of {part['points']:,} points / sample of {part['points']:,} points.",
            "",
            "| model | parameters | train steps/s | log_prob points/s | sample points/s | "
            "peak MiB (train / log_prob / sample) |",
            "|---|---|---|---|---|---|",
        ]
        for kind, row in part["rows"].items():
            lines.append(
                f"| {kind} | {row['parameters']:,} | {row['train_steps_per_second']:.1f} | "
                f"{row['log_prob_points_per_second']:,.0f} | "
                f"{row['sample_points_per_second']:,.0f} | "
                f"{_memory_cell(row.get('peak_memory_mib'))} |"
            )
    if "overhead" in report:
        part = report["overhead"]
        lines += [
            "",
            "## flowkit.Flow over the bare nflows Flow (same layer objects)",
            "",
            f"{part['stack']}; ratio = {part['ratio']}.",
            "",
            "| call @ batch | nflows ms | flowkit ms | median ratio | target |",
            "|---|---|---|---|---|",
        ]
        for name, row in part["rows"].items():
            met = "met" if row["median_ratio"] <= 1.05 else "missed"
            lines.append(
                f"| {name} | {row['first_ms']:.2f} | {row['second_ms']:.2f} | "
                f"{row['median_ratio']:.3f} | {met} |"
            )
    if "elu" in report:
        part = report["elu"]
        lines += [
            "",
            "## Exact flows with ELU layers against the same stack without them",
            "",
            f"{part['ratio']}.",
            "",
            "| stack, call @ batch | without ms | with ms | time ratio | speed ratio | target |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in part["rows"].items():
            speed = f"{1 / row['median_ratio']:.3f}"
            met = ""
            if "speed_ratio" in row:
                met = "met" if row["speed_ratio"] >= 0.95 else "missed"
            lines.append(
                f"| {name} | {row['first_ms']:.2f} | {row['second_ms']:.2f} | "
                f"{row['median_ratio']:.3f} | {speed} | {met} |"
            )

    return "\n".join(lines) + "\n"


def _parse(argv: list[str | Path] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke test")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--layers",
        type=int,
        help="coupling layers of every flow (default: each flowkit preset's own, "
        f"{PEER_LAYERS} for the peers)",
    )
    parser.add_argument("--points", type=int, default=65_536)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--train-steps", type=int, default=10, help="steps timed per round")
    parser.add_argument("--memory-train-batch", type=int, default=4096)
    parser.add_argument("--pairs", type=int, default=41, help="A B pairs at batch <= 4096")
    parser.add_argument("--overhead-batches", default="256,4096,65536")
    parser.add_argument("--elu-batches", default="1024,65536")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-of", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    arguments = parser.parse_args(None if argv is None else [str(item) for item in argv])
    if arguments.quick and arguments.memory_of is None:
        arguments.points, arguments.rounds, arguments.train_steps = 1024, 1, 2
        arguments.layers = 1
        arguments.memory_train_batch, arguments.pairs = 512, 3
        arguments.overhead_batches, arguments.elu_batches = "256", "512"
    arguments.overhead_batches = [int(item) for item in arguments.overhead_batches.split(",")]
    arguments.elu_batches = [int(item) for item in arguments.elu_batches.split(",")]

    return arguments


def main(argv: list[str | Path] | None = None) -> dict[str, Any]:
    """Runs the chosen parts; writes ``speed.{json,md}`` (memory children print JSON only)."""
    arguments = _parse(argv)
    if arguments.memory_of is not None:
        memory = peak_memory(
            arguments.memory_of,
            arguments.points,
            arguments.memory_train_batch,
            arguments.quick,
            arguments.layers,
        )
        print(json.dumps(memory))
        return memory

    import nflows
    import zuko

    report: dict[str, Any] = {
        "command": "python -m benchmarks.speed "
        + " ".join(str(item) for item in (sys.argv[1:] if argv is None else argv)),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": __import__("os").cpu_count(),
            "threads": 1,
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "nflows": getattr(nflows, "__version__", "0.14"),
            "zuko": zuko.__version__,
            "flowkit": flowkit.__version__,
        },
    }
    parts = arguments.parts.split(",")
    with single_thread_float32():
        if "models" in parts:
            report["models"] = run_models(arguments.models.split(","), arguments)
        if "overhead" in parts:
            report["overhead"] = run_overhead(arguments)
        if "elu" in parts:
            report["elu"] = run_elu(arguments)

    arguments.out.mkdir(parents=True, exist_ok=True)
    (arguments.out / "speed.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    (arguments.out / "speed.md").write_text(markdown)
    print(markdown)

    return report


if __name__ == "__main__":
    main()
