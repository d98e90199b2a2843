"""Training throughput with 1 and 2 processes on the CPU, and streaming rows per second.

Training: the same flow and global batch trained by one process and by ``torchrun
--nproc_per_node 2`` (gloo, loopback), each rank on one torch thread; the figure is
training samples (global batch times steps) per second of the ``train`` call, which
includes the data-dependent initialisation and one validation. Streaming: ``flowkit
logprob`` over a ``.npy`` file and ``flowkit sample`` to a ``.npy`` file, each in its own
process, with rows per second (after the imports) and that process's peak resident
memory. The machine's other load shows in every figure; on shared cores two processes
cannot run faster than one.

Run: python -m benchmarks.throughput [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import flowkit

__all__ = ["main", "measure_streaming", "measure_training"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPOSITORY = Path(__file__).resolve().parent.parent

FULL = {"features": 8, "steps": 150, "batch_size": 1024, "rows": 10_000_000, "repeats": 1}
QUICK = {"features": 8, "steps": 40, "batch_size": 512, "rows": 200_000, "repeats": 1}


def _training_data(features: int, rows: int = 20_000) -> torch.Tensor:
    """Correlated, skewed data, the same on every rank (fixed seed)."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(rows, features, generator=generator)
    mixing = torch.eye(features) + 0.3 * torch.ones(features, features) / features

    return (base @ mixing).sinh()


def _train_worker(arguments: argparse.Namespace) -> None:
    """One rank (or the only process) of a timed training run; rank 0 writes the figure."""
    from flowkit.distributed import init_from_environment, shutdown
    from flowkit.presets import build_flow
    from flowkit.training import train

    torch.set_num_threads(1)
    group = init_from_environment("cpu")
    data = _training_data(arguments.features)
    torch.manual_seed(0)
    # A fixed flow and recipe (the presets' before they changed), so that the committed
    # figures do not move with the presets' defaults; the throughput is what is measured.
    flow = build_flow(
        "unbounded", features=arguments.features, num_layers=4, hidden_features=64, num_bins=8
    )

    started = time.perf_counter()
    result = train(
        flow,
        data,
        steps=arguments.steps,
        batch_size=arguments.batch_size,
        validation_interval=arguments.steps,
        progress=False,
        learning_rate=2e-3,
        warmup_steps=50,
    )
    seconds = time.perf_counter() - started

    if group.rank == 0:
        figure = {
            "processes": group.world_size,
            "steps": result.steps_completed,
            "global_batch": arguments.batch_size,
            "seconds": seconds,
            "samples_per_second": result.steps_completed * arguments.batch_size / seconds,
            "validation_nll": result.best_validation_nll,
        }
        Path(arguments.worker_output).write_text(json.dumps(figure), encoding="utf-8")
    shutdown()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment() -> dict[str, str]:
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPOSITORY), environment.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)

    return environment


def measure_training(processes: int, settings: dict[str, int], folder: Path) -> dict[str, Any]:
    """Trains once with ``processes`` ranks and returns rank 0's figures."""
    output = folder / f"train-{processes}.json"
    worker = [
        "-m",
        "benchmarks.throughput",
        "--worker-output",
        str(output),
        "--features",
        str(settings["features"]),
        "--steps",
        str(settings["steps"]),
        "--batch-size",
        str(settings["batch_size"]),
    ]
    if processes == 1:
        command = [sys.executable, *worker]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            *worker,
        ]
    finished = subprocess.run(
        command, cwd=REPOSITORY, env=_environment(), capture_output=True, text=True
    )
    if finished.returncode != 0:
        raise RuntimeError(f"training with {processes} process(es) failed:\n{finished.stderr}")

    return json.loads(output.read_text(encoding="utf-8"))


_TIMED_COMMAND = (
    "import sys, time\n"
    "from flowkit.cli import main\n"
    "started = time.perf_counter()\n"
    "status = main(sys.argv[1:])\n"
    "print('seconds', time.perf_counter() - started)\n"
    "sys.exit(status)\n"
)


def _timed_process(arguments: list[str]) -> tuple[float, float]:
    """Runs ``flowkit ARGUMENTS`` in a fresh process.

    Returns the seconds the command took after the imports, and the process's peak
    resident memory in MiB (Linux ``ru_maxrss``).
    """
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", _TIMED_COMMAND, *arguments],
            cwd=REPOSITORY,
            env=_environment(),
            stdout=stdout,
            stderr=stderr,
            text=True,
        )
        # wait4 reports this child's own peak memory, which Popen.wait does not.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        output, errors = stdout.read(), stderr.read()
    if process.returncode != 0:
        raise RuntimeError(f"flowkit {' '.join(arguments)} failed:\n{errors}")
    seconds = float(output.rsplit("seconds", 1)[1])

    return seconds, usage.ru_maxrss / 1024


def measure_streaming(rows: int, folder: Path) -> dict[str, Any]:
    """Times ``flowkit sample`` and ``flowkit logprob`` on ``rows`` rows, each in a process.

    The seconds count from after the imports; the peak resident memory is that of the whole
    process, beside that of a process that only starts (``flowkit datasets``).
    """
    from flowkit import checkpoints
    from flowkit.presets import build_flow, fit_data_dependent_layers

    torch.manual_seed(0)
    flow = build_flow("unbounded", features=2, num_layers=2, hidden_features=16, num_bins=8)
    fit_data_dependent_layers(flow, _training_data(2))
    model = checkpoints.save(flow, folder / "model.pt")
    samples, scores = folder / "samples.npy", folder / "scores.npy"

    _, startup_memory = _timed_process(["datasets"])
    sample_seconds, sample_memory = _timed_process(
        ["sample", str(model), "-n", str(rows), "-o", str(samples), "--device", "cpu"]
    )
    score_seconds, score_memory = _timed_process(
        ["logprob", str(model), str(samples), "-o", str(scores), "--device", "cpu"]
    )
    scored = np.load(scores, mmap_mode="r")
    if len(scored) != rows or not np.isfinite(scored).all():
        raise RuntimeError("logprob did not score every sampled row with a finite value")

    return {
        "rows": rows,
        "startup_peak_mib": startup_memory,
        "sample_seconds": sample_seconds,
        "sample_rows_per_second": rows / sample_seconds,
        "sample_peak_mib": sample_memory,
        "logprob_seconds": score_seconds,
        "logprob_rows_per_second": rows / score_seconds,
        "logprob_peak_mib": score_memory,
        "input_file_mib": samples.stat().st_size / 2**20,
    }


def _markdown(results: dict[str, Any]) -> str:
    one, two = results["training"]["1"], results["training"]["2"]
    stream = results["streaming"]
    lines = [
        "# Throughput: 1 and 2 training processes on the CPU, streaming sample and logprob",
        "",
        f"{results['platform']}; torch {results['torch']}; flowkit {results['flowkit']}; "
        f"{results['cpu_count']} CPU cores visible; one torch thread per process"
        + ("; quick settings" if results["quick"] else "")
        + ".",
        "",
        f"Training: unbounded preset, {results['settings']['features']} features, 4 spline "
        f"couplings of width 64, global batch {one['global_batch']}, {one['steps']} steps.",
        "",
        "| processes | seconds | samples / s | speed-up | validation NLL |",
        "|---|---|---|---|---|",
    ]
    for figure in (one, two):
        lines.append(
            f"| {figure['processes']} | {figure['seconds']:.1f} | "
            f"{figure['samples_per_second']:.0f} | "
            f"{figure['samples_per_second'] / one['samples_per_second']:.2f} | "
            f"{figure['validation_nll']:.4f} |"
        )
    lines += [
        "",
        f"Streaming, {stream['rows']:,} rows of a 2-feature flow, each command in a fresh "
        "process (seconds counted after the imports; peak resident memory of the process):",
        "",
        "| command | seconds | rows / s | peak memory (MiB) |",
        "|---|---|---|---|",
        f"| flowkit sample -n {stream['rows']} -o samples.npy | {stream['sample_seconds']:.1f} | "
        f"{stream['sample_rows_per_second']:.0f} | {stream['sample_peak_mib']:.0f} |",
        f"| flowkit logprob model.pt samples.npy -o scores.npy | "
        f"{stream['logprob_seconds']:.1f} | {stream['logprob_rows_per_second']:.0f} | "
        f"{stream['logprob_peak_mib']:.0f} |",
        f"| flowkit datasets (startup only) | | | {stream['startup_peak_mib']:.0f} |",
        "",
        f"The sampled file, the input of logprob, is {stream['input_file_mib']:.0f} MiB. "
        "Both commands hold one chunk of rows at a time; the pages of the memory-mapped "
        "file they write (and logprob's input) count in the resident size until the kernel "
        "drops them, which is much of the growth over the startup.",
        "",
    ]

    return "\n".join(lines)


def main(argv: Sequence[str | Path] | None = None) -> dict[str, Any]:
    """Measures training and streaming throughput; writes throughput.json and .md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings, for CI")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)
    parser.add_argument("--features", type=int, default=FULL["features"], help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=FULL["steps"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--batch-size", type=int, default=FULL["batch_size"], help=argparse.SUPPRESS
    )
    arguments = parser.parse_args(None if argv is None else [str(item) for item in argv])
    if arguments.worker_output:
        _train_worker(arguments)
        return {}

    settings = QUICK if arguments.quick else FULL
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        training = {str(count): measure_training(count, settings, folder) for count in (1, 2)}
        streaming = measure_streaming(settings["rows"], folder)
    results = {
        "quick": arguments.quick,
        "settings": settings,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "flowkit": flowkit.__version__,
        "cpu_count": os.cpu_count(),
        "training": training,
        "streaming": streaming,
    }

    arguments.out.mkdir(parents=True, exist_ok=True)
    stem = "throughput-quick" if arguments.quick else "throughput"
    (arguments.out / f"{stem}.json").write_text(
        json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    (arguments.out / f"{stem}.md").write_text(_markdown(results), encoding="utf-8")
    print(_markdown(results))

    return results


if __name__ == "__main__":
    main()
