"""The ``flowkit`` command line: list data sets, train, sample, score and plot flows."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nflows.transforms import InputOutsideDomain
from torch import Tensor
from tqdm.auto import tqdm

from flowkit import checkpoints, distributed, plots, scoring
from flowkit._version import __version__
from flowkit.checkpoints import CheckpointError, json_ready
from flowkit.data import (
    TOY_DATASETS,
    DataError,
    DataSplit,
    bits_per_dimension,
    dataset_names,
    load_array,
    load_dataset,
)
from flowkit.devices import (
    DEVICE_CHOICES,
    MIXED_PRECISION_CHOICES,
    check_mixed_precision,
    resolve_device,
)
from flowkit.flow import Flow
from flowkit.presets import build_flow
from flowkit.training import mean_negative_log_likelihood, train

__all__ = [
    "AUTO_LOWER_MARGIN",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_STEPS",
    "SHIPPED_CHECKPOINTS",
    "build_parser",
    "main",
]

logger = logging.getLogger(__name__)

DEFAULT_STEPS = 4000
"""Training steps of ``flowkit train``."""

DEFAULT_BATCH_SIZE = 256
"""Points per training step."""

AUTO_LOWER_MARGIN = 0.05
"""``--lower auto`` puts each bound this share of the feature's training range below its
smallest training value: a learned bound needs a margin, or it sits on the data."""

SAMPLE_CHUNK_ROWS = 65_536
"""Rows ``flowkit sample`` draws and writes at a time, which bounds its memory."""

SHIPPED_CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
"""The folder of trained flows that ship with flowkit; ``train`` refuses to write into it."""

PRESET_CHOICES = ("auto", "unbounded", "bounded", "unit-interval")

_DIGITS_DESCRIPTION = (
    "scikit-learn's 8x8 handwritten digits: 64 pixels dequantized to [0, 1), "
    "fixed 1257 / 270 / 270 split"
)
_CHUNK = 8192

# Errors that mean "the input or the arguments are wrong"; they end the command with one line.
_USER_ERRORS = (DataError, CheckpointError, ValueError, TypeError, OSError, InputOutsideDomain)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr, like every other error."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse's hook
        """Reports a usage error in one line and exits with status 2."""
        self.exit(2, f"flowkit: error: {message} (see '{self.prog} --help')\n")


def _argument_type(
    convert: Callable[[str], Any], accept: Callable[[Any], bool], expected: str
) -> Callable[[str], Any]:
    """An argparse ``type`` that converts a value and refuses it unless ``accept`` holds."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")

        return value

    return parse


_positive_int = _argument_type(int, lambda value: value >= 1, "a positive integer")
_non_negative_int = _argument_type(int, lambda value: value >= 0, "an integer >= 0")
_positive_float = _argument_type(
    float, lambda value: value > 0 and math.isfinite(value), "a positive number"
)


def _common_flags() -> argparse.ArgumentParser:
    # The global flags are accepted after the verb too. SUPPRESS keeps a verb's parser from
    # resetting a flag given before the verb; these actions must not be shared with the
    # top-level parser, whose defaults are False.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress"
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback on errors",
    )

    return common


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of the ``flowkit`` command."""
    common = _common_flags()
    parser = _Parser(
        prog="flowkit",
        description="Normalizing flows with an exact, invertible ELU bijector.",
    )
    parser.add_argument("--verbose", action="store_true", help="log progress")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--version", action="version", version=f"flowkit {__version__}")
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    datasets = verbs.add_parser("datasets", help="list the built-in data sets", parents=[common])
    datasets.set_defaults(handler=_run_datasets)

    _add_train_parser(verbs, common)

    sample = verbs.add_parser("sample", help="draw samples from a checkpoint", parents=[common])
    sample.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.pt file")
    sample.add_argument("-n", "--num-samples", type=_positive_int, required=True, help="points")
    sample.add_argument("-o", "--output", required=True, help="a .csv or .npy file to write")
    sample.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the draws")
    _add_device_flag(sample)
    sample.set_defaults(handler=_run_sample)

    logprob = verbs.add_parser(
        "logprob", help="per-row log-likelihoods of a data file", parents=[common]
    )
    logprob.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.pt file")
    logprob.add_argument("data", metavar="FILE", help="a .csv or .npy file of points")
    logprob.add_argument("-o", "--output", required=True, help="a .csv or .npy file to write")
    _add_device_flag(logprob)
    logprob.set_defaults(handler=_run_logprob)

    _add_score_parser(verbs, common)

    plot = verbs.add_parser(
        "plot", help="plot a checkpoint's density or samples", parents=[common]
    )
    plot.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.pt file")
    plot.add_argument("-o", "--output", required=True, help="the .png file to write")
    plot.add_argument(
        "--data",
        help="data to show beside the model: a built-in name or a .csv/.npy file "
        "(default: the data set stored in the checkpoint)",
    )
    plot.add_argument(
        "--kind",
        choices=("density", "samples"),
        help="density (1 or 2 features; the default there) or samples (the default above)",
    )
    plot.set_defaults(handler=_run_plot)

    return parser


def _add_train_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    train_parser = verbs.add_parser(
        "train",
        help="train a flow on a data set",
        description="Train a flow by maximum likelihood and write model.pt, plots and "
        "metrics.json into a run folder.",
        parents=[common],
    )
    train_parser.add_argument(
        "data", metavar="DATA", help=f"one of {', '.join(dataset_names())}, or a .csv/.npy file"
    )
    train_parser.add_argument(
        "--preset",
        choices=PRESET_CHOICES,
        default="auto",
        help="auto: unit-interval for digits, bounded when lower bounds are known or given, "
        "else unbounded",
    )
    train_parser.add_argument(
        "--coupling",
        choices=("spline", "affine"),
        help="coupling layers (default: the preset's, spline for 2-D data)",
    )
    train_parser.add_argument(
        "--layers", type=_positive_int, help="coupling layers (default: the preset's)"
    )
    train_parser.add_argument(
        "--hidden", type=_positive_int, help="conditioner width (default: the preset's)"
    )
    train_parser.add_argument(
        "--steps",
        type=_positive_int,
        default=DEFAULT_STEPS,
        help="optimizer steps (default: %(default)s)",
    )
    train_parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="points per step (default: %(default)s)",
    )
    train_parser.add_argument(
        "--lr",
        type=_positive_float,
        help="peak learning rate (default: a resumed run's own, else the preset's: 1.2e-2 for "
        "unbounded and bounded, 2e-3 for unit-interval)",
    )
    train_parser.add_argument(
        "--warmup-steps",
        type=_non_negative_int,
        help="steps of linear learning-rate warm-up (default: as for --lr; 150 for "
        "unbounded, 50 otherwise)",
    )
    train_parser.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of the weights and batches"
    )
    train_parser.add_argument(
        "--data-seed", type=_non_negative_int, default=0, help="seed of the data set's draws"
    )
    train_parser.add_argument(
        "--lower",
        help="per-feature lower bounds as a comma list ('none' for an unbounded feature), or "
        f"'auto': the training minimum less {AUTO_LOWER_MARGIN:g} of the feature's range",
    )
    train_parser.add_argument(
        "--out", help="folder to write into (default: a new runs/<data>-<UTC time> folder)"
    )
    train_parser.add_argument(
        "--force",
        action="store_true",
        help="allow --out inside the shipped checkpoints folder or over an earlier run",
    )
    train_parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads (default 1: flows this small gain nothing from more, and "
        "two threads slow down sharply when the cores are shared)",
    )
    train_parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train_parser.add_argument(
        "--drop-nonfinite",
        action="store_true",
        help="drop the rows of a data file that hold NaN or inf (default: an error naming them)",
    )
    train_parser.add_argument(
        "--drop-constant",
        action="store_true",
        help="drop the constant columns of a data file (default: an error naming them)",
    )
    train_parser.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="continue the run that wrote this model.pt (same DATA, --data-seed, --seed and "
        "--batch-size; the architecture comes from the checkpoint; --steps counts the total)",
    )
    _add_device_flag(train_parser)
    train_parser.add_argument(
        "--mixed-precision",
        choices=MIXED_PRECISION_CHOICES,
        default="none",
        help="bf16: run the conditioner networks under bf16 autocast (CUDA only; "
        "log-determinants and base densities stay float32)",
    )
    train_parser.set_defaults(handler=_run_train)


def _add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="cpu",
        help=f"{DEVICE_CHOICES} (default cpu, where runs repeat to the last bit; auto: the "
        "first GPU if there is one, else the CPU; under torchrun, auto and cuda mean each "
        "rank's own GPU)",
    )


def _add_score_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    score_parser = verbs.add_parser(
        "score",
        help="per-row out-of-distribution scores of a data file",
        description="Score each row of FILE by its log-likelihood, its ELU saturation (the "
        "share of the flow's ELU units near their floor -alpha) and their combination (the "
        "sum of both, standardized on in-distribution reference data; high means unusual). "
        "Writes the columns log_likelihood, elu_saturation, combined.",
        parents=[common],
    )
    score_parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.pt file")
    score_parser.add_argument("data", metavar="FILE", help="a .csv or .npy file of points")
    score_parser.add_argument(
        "-o",
        "--out",
        help="a .csv (with a header) or .npy (rows x 3) file to write (default: CSV on stdout)",
    )
    score_parser.add_argument(
        "--reference",
        metavar="REFERENCE",
        help="in-distribution .csv/.npy points that fix the combination (default: the "
        "validation part of the data set named in the checkpoint, as load_dataset cuts it)",
    )
    score_parser.add_argument(
        "--margin",
        type=_argument_type(float, lambda value: 0 < value < 1, "a number in (0, 1)"),
        default=scoring.DEFAULT_MARGIN,
        help="a unit is near its floor when within margin * alpha of -alpha "
        f"(default {scoring.DEFAULT_MARGIN})",
    )
    score_parser.set_defaults(handler=_run_score)


# --- datasets ---------------------------------------------------------------------------------


def _run_datasets(args: argparse.Namespace) -> int:
    width = max(len(name) for name in dataset_names())
    for name in dataset_names():
        if name == "digits":
            description = _DIGITS_DESCRIPTION
        else:
            description = TOY_DATASETS[name].description
        print(f"{name:<{width}}  {description}")
    print("Any .csv or .npy file of numbers (rows = points) can be given instead of a name.")

    return 0


# --- train ------------------------------------------------------------------------------------


def _parse_lower(text: str, split: DataSplit) -> tuple[list[float | None], bool]:
    """Returns the bounds from ``--lower`` and whether they were chosen automatically."""
    if text.strip().lower() == "auto":
        low = split.train.double().min(dim=0).values
        high = split.train.double().max(dim=0).values
        bounds = low - AUTO_LOWER_MARGIN * (high - low)
        return [float(bound) for bound in bounds], True

    parts = [part.strip() for part in text.split(",")]
    if len(parts) != split.features:
        raise ValueError(
            f"--lower needs {split.features} comma-separated values (one per feature, 'none' "
            f"for unbounded), got {len(parts)}: {text!r}"
        )
    bounds: list[float | None] = []
    for part in parts:
        if part.lower() in ("none", "-inf"):
            bounds.append(None)
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"--lower: {part!r} is neither a number nor 'none'") from None
        if not math.isfinite(value):
            raise ValueError(f"--lower: bounds must be finite numbers or 'none', got {part!r}")
        bounds.append(value)

    return bounds, False


def _known_lower(split: DataSplit) -> list[float | None] | None:
    if split.lower_bound is None:
        return None
    bounds = [float(bound) if math.isfinite(bound) else None for bound in split.lower_bound]

    return bounds if any(bound is not None for bound in bounds) else None


def _choose_preset(requested: str, split: DataSplit, lower: list[float | None] | None) -> str:
    if requested == "auto":
        if split.preprocessing == "logit01":
            return "unit-interval"
        return "bounded" if lower is not None else "unbounded"

    if requested == "bounded" and lower is None:
        raise ValueError(
            f"preset 'bounded' needs at least one finite lower bound, and none is known or "
            f"given for {split.name!r}; give --lower with a number for at least one feature "
            "(a comma list such as 0,none, or 'auto')"
        )

    return requested


def _outside_share(data: Tensor, lower: list[float | None]) -> float:
    bounded = torch.tensor([bound is not None for bound in lower])
    bounds = torch.tensor([-math.inf if bound is None else bound for bound in lower])
    below = (data.double() <= bounds.double()) & bounded

    return below.any(dim=1).double().mean().item()


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _output_folder(out: str | None, force: bool, name: str) -> Path:
    if out is not None:
        folder = Path(out)
        if _inside(folder, SHIPPED_CHECKPOINTS) and not force:
            raise ValueError(
                f"--out {out} is inside the shipped checkpoints folder {SHIPPED_CHECKPOINTS}; "
                "choose another folder, or pass --force to write there anyway"
            )
        if (folder / "model.pt").exists() and not force:
            raise ValueError(
                f"--out {out} already holds a model.pt from an earlier run; choose another "
                "folder, or pass --force to overwrite it"
            )
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = f"{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}-{stamp}"
    for attempt in range(1, 1000):
        folder = Path("runs") / (base if attempt == 1 else f"{base}-{attempt}")
        if _inside(folder, SHIPPED_CHECKPOINTS):
            raise ValueError(
                f"the default run folder {folder.resolve()} would be inside the shipped "
                "checkpoints folder; give --out"
            )
        try:
            # exist_ok=False makes the choice of a fresh folder race-free.
            folder.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        return folder

    raise ValueError(f"could not create a new run folder runs/{base}-N; give --out")


@torch.no_grad()
def _log_probs(flow: Flow, data: Tensor) -> Tensor:
    return flow.log_prob_in_chunks(data, _CHUNK).cpu()


def _evaluate(flow: Flow, split: DataSplit) -> dict[str, Any]:
    test_nll, test_outside = mean_negative_log_likelihood(flow, split.test)
    metrics: dict[str, Any] = {
        "test_points": len(split.test),
        "test_nll_nats": test_nll,
        "test_outside_share": test_outside,
    }
    if split.preprocessing == "logit01" and math.isfinite(test_nll):
        nll = torch.tensor(-test_nll, dtype=torch.float64)
        metrics["test_bits_per_dim"] = float(bits_per_dimension(nll, split.features))

    if split.true_log_prob is not None:
        model = _log_probs(flow, split.test).double()
        truth = split.true_log_prob(split.test).double().cpu()
        both = torch.isfinite(model) & torch.isfinite(truth)
        metrics["true_test_nll_nats"] = -truth[torch.isfinite(truth)].mean().item()
        # Points outside the model's support would make the estimate infinite; they are
        # counted in test_outside_share instead.
        metrics["kl_estimate_nats"] = (truth[both] - model[both]).mean().item()

    return metrics


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turns SIGTERM into the same clean stop as Ctrl-C while training runs.

    The trainer then keeps the best weights and the run folder gets its checkpoint.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signal_number: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_resume_flags(args: argparse.Namespace) -> None:
    # The architecture is the checkpoint's; a flag that asks for another would be ignored.
    given = [
        flag
        for flag, value in (
            ("--coupling", args.coupling),
            ("--layers", args.layers),
            ("--hidden", args.hidden),
            ("--lower", args.lower),
        )
        if value is not None
    ]
    if args.preset != "auto":
        given.insert(0, "--preset")
    if given:
        raise ValueError(
            f"--resume takes the architecture from {args.resume}; drop {', '.join(given)}"
        )


def _resumed_flow(args: argparse.Namespace) -> tuple[Flow, dict[str, Any], str]:
    """The flow, training state and preset of the checkpoint named by ``--resume``."""
    _check_resume_flags(args)
    state = checkpoints.read_training_state(args.resume)
    flow = checkpoints.load(args.resume)
    preset = checkpoints.read_metadata(args.resume)["config"].get("preset", "unknown")

    return flow, state, str(preset)


def _run_folder(args: argparse.Namespace, name: str) -> Path | None:
    """Rank 0 makes the run folder; the other ranks get None and write nothing.

    A refusal on rank 0 reaches every rank, which would otherwise wait for it in training.
    """
    rank, world_size = distributed.world()
    folder, error = None, None
    # Remembered so that a run refused once training starts removes a folder it made itself.
    args.new_run_folder = None
    if rank == 0:
        existed = args.out is not None and Path(args.out).exists()
        try:
            folder = _output_folder(args.out, args.force, name)
        except ValueError as caught:
            error = caught
        else:
            args.new_run_folder = None if existed else folder
    if world_size > 1 and distributed.agree_any(error is not None, args.training_device):
        raise error or ValueError("rank 0 could not make the run folder; see its message")
    if error is not None:
        raise error

    return folder


def _run_train(args: argparse.Namespace) -> int:
    # torchrun's environment makes this one rank of a data-parallel run; alone, a no-op.
    _command_line_device(args.device)
    group = distributed.init_from_environment(args.device)
    args.training_device = group.device
    try:
        return _train_command(args)
    finally:
        distributed.shutdown()


def _train_command(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    split = load_dataset(
        args.data,
        seed=args.data_seed,
        drop_nonfinite=args.drop_nonfinite,
        drop_constant=args.drop_constant,
    )
    if args.batch_size > len(split.train):
        raise ValueError(
            f"--batch-size {args.batch_size} is larger than the {len(split.train)} training "
            f"points of {split.name}; give at most {len(split.train)}"
        )
    # Refused before the run folder is made, so a refused run leaves nothing behind.
    check_mixed_precision(args.mixed_precision, args.training_device)
    processes = distributed.world()[1]
    if args.batch_size % processes != 0:
        # Checked before the run folder is made, so a refused run leaves nothing behind.
        raise ValueError(
            f"--batch-size {args.batch_size} is the global batch and must be divisible by the "
            f"{processes} processes; give a multiple of {processes}"
        )
    if args.resume is not None:
        # Read before the run folder is made, so a bad checkpoint leaves nothing behind.
        flow, resume, preset = _resumed_flow(args)
        folder = _run_folder(args, split.name)
        return _train_and_write(args, split, flow, preset, None, False, resume, folder)

    auto_lower = False
    if args.lower is not None:
        lower, auto_lower = _parse_lower(args.lower, split)
        if all(bound is None for bound in lower):
            lower = None
    else:
        lower = _known_lower(split)
    preset = _choose_preset(args.preset, split, lower)
    if lower is not None and args.lower is not None and preset != "bounded":
        raise ValueError(f"--lower needs --preset bounded or auto, not {preset!r}")
    folder = _run_folder(args, split.name)

    # Options left out take the preset's own defaults (see flowkit.presets.PRESET_DEFAULTS).
    given = {"coupling": args.coupling, "num_layers": args.layers, "hidden_features": args.hidden}
    options: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    if preset == "bounded":
        options["lower"] = lower
    # Seeded before building, so the initial weights repeat too.
    torch.manual_seed(args.seed)
    flow = build_flow(preset, features=split.features, **options)

    return _train_and_write(args, split, flow, preset, lower, auto_lower, None, folder)


def _train_and_write(
    args: argparse.Namespace,
    split: DataSplit,
    flow: Flow,
    preset: str,
    lower: list[float | None] | None,
    auto_lower: bool,
    resume: dict[str, Any] | None,
    folder: Path | None,
) -> int:
    """Trains ``flow`` (fresh, or continuing ``resume``) and writes the run folder.

    ``folder`` is None on the ranks other than 0 of a multi-process run: they train and
    write nothing.
    """
    if split.features != flow.features:
        raise ValueError(
            f"{args.data} has {split.features} feature(s), but the flow in {args.resume} "
            f"models {flow.features}"
        )
    # The flow is built in torch's default dtype; the data follow it, not the reverse.
    dtype = flow.log_normalizer.dtype
    split = dataclasses.replace(
        split,
        train=split.train.to(dtype),
        validation=split.validation.to(dtype),
        test=split.test.to(dtype),
    )

    started = time.perf_counter()
    try:
        with _sigterm_as_interrupt():
            result = train(
                flow,
                split.train,
                validation_data=split.validation,
                steps=args.steps,
                batch_size=args.batch_size,
                learning_rate=args.lr,
                warmup_steps=args.warmup_steps,
                seed=args.seed,
                progress=not args.no_progress,
                augment=split.augment,
                resume=resume,
                device=args.training_device,
                mixed_precision=args.mixed_precision,
            )
    except Exception:
        # A refusal (bad arguments, data outside the support, another run's resume state)
        # leaves no empty run folder behind; a folder that existed before stays.
        new_folder = getattr(args, "new_run_folder", None)
        if new_folder is not None and new_folder.is_dir() and not any(new_folder.iterdir()):
            new_folder.rmdir()
        raise
    seconds = time.perf_counter() - started
    status = 130 if result.stop_reason == "interrupted" else 0
    if folder is None:
        return status
    # Evaluation, plots and the checkpoint work on the CPU, whatever device trained.
    flow.to("cpu")

    metrics = {
        "dataset": split.name,
        "preset": preset,
        "features": split.features,
        "train_points": len(split.train),
        "training_seconds": seconds,
        "best_step": result.best_step,
        "best_validation_nll_nats": result.best_validation_nll,
        "steps_completed": result.steps_completed,
        "stop_reason": result.stop_reason,
        **_evaluate(flow, split),
    }
    if resume is not None:
        metrics["resumed_from"] = str(Path(args.resume).resolve())
        metrics["resumed_at_step"] = int(resume["step"])
    if auto_lower:
        metrics["auto_lower"] = lower
        metrics["validation_below_lower_share"] = _outside_share(split.validation, lower)
        metrics["test_below_lower_share"] = _outside_share(split.test, lower)

    source = args.data if args.data in dataset_names() else str(Path(args.data).resolve())
    written = _write_run(folder, flow, split, result, metrics, source)
    _print_summary(metrics, folder, written)

    # An interrupted run still wrote its folder; the status tells scripts it did not finish.
    return status


def _write_run(
    folder: Path,
    flow: Flow,
    split: DataSplit,
    result: Any,
    metrics: dict[str, Any],
    source: str,
) -> list[str]:
    checkpoints.save(
        flow, folder / "model.pt", training=result, dataset=source, metadata={"metrics": metrics}
    )
    written = ["model.pt"]

    if split.features <= 2:
        plots.plot_density(
            flow, split.train, folder / "density.png", true_log_prob=split.true_log_prob
        )
        written.append("density.png")
    else:
        plots.plot_samples(flow, split.train, folder / "samples.png")
        written.append("samples.png")
    if result.history:
        plots.plot_training_curve(result, folder / "training.png")
        written.append("training.png")

    text = json.dumps(json_ready(metrics), indent=2, allow_nan=False, sort_keys=True)
    (folder / "metrics.json").write_text(text + "\n", encoding="utf-8")
    written.append("metrics.json")

    return written


def _print_summary(metrics: dict[str, Any], folder: Path, written: list[str]) -> None:
    print(
        f"trained the {metrics['preset']} preset on {metrics['dataset']} "
        f"({metrics['features']} features, {metrics['train_points']} training points) "
        f"in {metrics['training_seconds']:.1f} s: {metrics['steps_completed']} steps "
        f"({metrics['stop_reason']}), best validation NLL "
        f"{metrics['best_validation_nll_nats']:.4f} at step {metrics['best_step']}"
    )
    line = f"test NLL {metrics['test_nll_nats']:.4f} nats"
    if "test_bits_per_dim" in metrics:
        line += f", {metrics['test_bits_per_dim']:.4f} bits/dim"
    if metrics["test_outside_share"] > 0:
        line += f" ({metrics['test_outside_share']:.2%} of test points outside the support)"
    print(line)
    if "true_test_nll_nats" in metrics:
        print(
            f"true test NLL {metrics['true_test_nll_nats']:.4f} nats; "
            f"KL estimate {metrics['kl_estimate_nats']:.4f} nats"
        )
    if "auto_lower" in metrics:
        bounds = ", ".join(f"{bound:.6g}" for bound in metrics["auto_lower"])
        print(
            f"automatic lower bounds {bounds}: {metrics['validation_below_lower_share']:.2%} of "
            f"validation and {metrics['test_below_lower_share']:.2%} of test points lie below"
        )
    print(f"wrote {folder} ({', '.join(written)})")


# --- sample, logprob, plot --------------------------------------------------------------------


def _command_line_device(text: str) -> torch.device:
    """Resolves ``--device``; the ``meta`` device holds no values, so it is refused here."""
    device = resolve_device(text)
    if device.type == "meta":
        raise ValueError(f"--device must be {DEVICE_CHOICES}, got {text!r}")

    return device


def _load_on_device(checkpoint: str, device_text: str) -> Flow:
    """Loads a checkpoint on the CPU, where it is always readable, then moves the flow."""
    device = _command_line_device(device_text)

    return checkpoints.load(checkpoint).to(device)


@contextlib.contextmanager
def _atomic_output(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` that replaces it only once fully written.

    An error half-way (a NaN row in the input, an interrupt) leaves an earlier file at
    ``path`` as it was and no half-written one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix stays last: np.save would otherwise append its own ".npy".
    temporary = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_table(path: Path, values: np.ndarray) -> None:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".npy"):
        raise ValueError(f"{path}: the output must end in .csv or .npy")

    with _atomic_output(path) as temporary:
        if suffix == ".npy":
            np.save(temporary, values)
        else:
            # Enough digits to read every value back exactly.
            digits = 9 if values.dtype == np.float32 else 17
            np.savetxt(temporary, values, delimiter=",", fmt=f"%.{digits}g")


def _stream_table(
    path: Path,
    chunks: Iterator[Tensor],
    rows: int,
    features: int,
    dtype: torch.dtype,
    flatten: bool = False,
) -> None:
    """Writes chunks of rows as they come, so memory is bounded by one chunk.

    ``flatten`` writes a one-column table as a 1-D ``.npy``, as ``logprob`` does.
    """
    numpy_dtype = np.float32 if dtype == torch.float32 else np.float64

    with _atomic_output(path) as temporary:
        if path.suffix.lower() == ".npy":
            # A .npy header needs the final shape, which is known: fill a memory-mapped file.
            shape = (rows,) if flatten else (rows, features)
            table = np.lib.format.open_memmap(temporary, mode="w+", dtype=numpy_dtype, shape=shape)
            start = 0
            for chunk in chunks:
                values = chunk.cpu().numpy()
                table[start : start + len(chunk)] = values[:, 0] if flatten else values
                start += len(chunk)
            table.flush()
            del table
            return

        digits = 9 if numpy_dtype == np.float32 else 17
        with temporary.open("w", encoding="utf-8") as handle:
            for chunk in chunks:
                np.savetxt(handle, chunk.cpu().numpy(), delimiter=",", fmt=f"%.{digits}g")


def _run_sample(args: argparse.Namespace) -> int:
    flow = _load_on_device(args.checkpoint, args.device)
    output = Path(args.output)
    if output.suffix.lower() not in (".csv", ".npy"):
        raise ValueError(f"{output}: the output must end in .csv or .npy")

    generator = torch.Generator(device=flow.log_normalizer.device).manual_seed(args.seed)
    chunks = flow.sample_in_chunks(args.num_samples, SAMPLE_CHUNK_ROWS, generator=generator)
    _stream_table(output, chunks, args.num_samples, flow.features, flow.dtype)
    print(f"wrote {args.num_samples} samples of {flow.features} features to {output}")

    return 0


def _open_npy_rows(path: str) -> np.ndarray | None:
    """Memory-maps a plain numeric .npy of rows, or returns None to take the checked path."""
    if Path(path).suffix.lower() != ".npy":
        return None
    try:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if table.ndim not in (1, 2) or table.dtype.kind not in "iuf" or len(table) == 0:
        return None

    return table if table.ndim == 2 else table.reshape(-1, 1)


def _check_finite_rows(path: str, table: np.ndarray) -> None:
    """Refuses a memory-mapped table with NaN or inf before any output is written.

    One pass in chunks, so memory stays bounded; rows and columns are counted from 1, as
    :func:`flowkit.data.files.load_array` counts them.
    """
    bad_rows: list[int] = []
    first: tuple[int, int, float] | None = None
    for start in range(0, len(table), _CHUNK):
        values = np.asarray(table[start : start + _CHUNK], dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if bad.size and first is None:
            column = int(np.flatnonzero(~np.isfinite(values[bad[0]]))[0])
            first = (start + int(bad[0]) + 1, column + 1, float(values[bad[0], column]))
        bad_rows.extend((bad + start + 1).tolist())
    if first is None:
        return

    listed = ", ".join(str(row) for row in bad_rows[:5])
    if len(bad_rows) > 5:
        listed += f" and {len(bad_rows) - 5} more"
    raise DataError(
        f"{path}: {len(bad_rows)} row(s) hold NaN or infinite values, rows {listed} (first at "
        f"row {first[0]}, column {first[1]}: {first[2]}); nothing was written"
    )


def _stream_logprob(args: argparse.Namespace, flow: Flow, table: np.ndarray) -> int:
    """Scores a memory-mapped table chunk by chunk, writing as it goes."""
    output = Path(args.output)
    rows = len(table)
    if table.shape[1] != flow.features:
        raise ValueError(
            f"{args.data} has {table.shape[1]} feature(s) per row, but the flow in "
            f"{args.checkpoint} models {flow.features}"
        )
    _check_finite_rows(args.data, table)

    def scored_chunks() -> Iterator[Tensor]:
        for start in tqdm(range(0, rows, _CHUNK), desc="scoring", unit="chunk", leave=False):
            values = np.asarray(table[start : start + _CHUNK], dtype=np.float64)
            with torch.no_grad():
                yield _log_probs(flow, torch.from_numpy(values))[:, None]

    totals = {"sum": 0.0, "finite": 0}

    def counted(chunks: Iterator[Tensor]) -> Iterator[Tensor]:
        for chunk in chunks:
            finite = torch.isfinite(chunk)
            totals["sum"] += -chunk[finite].double().sum().item()
            totals["finite"] += int(finite.sum())
            yield chunk

    _stream_table(output, counted(scored_chunks()), rows, 1, flow.dtype, flatten=True)
    outside = rows - totals["finite"]
    mean_nll = totals["sum"] / totals["finite"] if totals["finite"] else math.inf
    print(
        f"mean NLL {mean_nll:.4f} nats over {totals['finite']} rows; {outside} of "
        f"{rows} rows outside the support (log-likelihood -inf); wrote {output}"
    )

    return 0


def _run_logprob(args: argparse.Namespace) -> int:
    flow = _load_on_device(args.checkpoint, args.device)
    output = Path(args.output)
    if output.suffix.lower() not in (".csv", ".npy"):
        raise ValueError(f"{output}: the output must end in .csv or .npy")
    # A .npy streams through a memory map, so files larger than memory can be scored.
    table = _open_npy_rows(args.data)
    if table is not None:
        return _stream_logprob(args, flow, table)
    values = load_array(args.data, for_training=False).values
    if values.shape[1] != flow.features:
        raise ValueError(
            f"{args.data} has {values.shape[1]} feature(s) per row, but the flow in "
            f"{args.checkpoint} models {flow.features}"
        )

    log_probs = _log_probs(flow, torch.from_numpy(values))
    _write_table(output, log_probs.numpy())

    finite = torch.isfinite(log_probs)
    outside = int((~finite).sum())
    mean_nll = -log_probs[finite].double().mean().item() if finite.any() else math.inf
    print(
        f"mean NLL {mean_nll:.4f} nats over {int(finite.sum())} rows; {outside} of "
        f"{len(log_probs)} rows outside the support (log-likelihood -inf); wrote {output}"
    )

    return 0


SCORE_COLUMNS = ("log_likelihood", "elu_saturation", "combined")
"""Columns ``flowkit score`` writes, in this order."""


def _score_rows(path: str, flow: Flow, what: str) -> np.ndarray:
    """Reads a data file's rows for scoring; a .npy stays a memory map."""
    table = _open_npy_rows(path)
    if table is None:
        table = load_array(path, for_training=False).values
    if table.shape[1] != flow.features:
        raise ValueError(
            f"{what} {path} has {table.shape[1]} column(s) per row, but the flow models "
            f"{flow.features} feature(s)"
        )
    _check_finite_rows(path, table)

    return table


def _score_reference(args: argparse.Namespace, flow: Flow) -> tuple[Any, str]:
    """Returns in-distribution reference rows and where they came from."""
    if args.reference is not None:
        return _score_rows(args.reference, flow, "reference"), args.reference

    source = checkpoints.read_metadata(args.checkpoint).get("dataset")
    if source and (source in dataset_names() or Path(source).is_file()):
        validation = load_dataset(source).validation
        if validation.shape[1] != flow.features:
            raise ValueError(
                f"the data set {source} named in {args.checkpoint} has {validation.shape[1]} "
                f"feature(s), but the flow models {flow.features}; give --reference"
            )
        return validation, f"the validation part of {source}"

    raise ValueError(
        f"{args.checkpoint} names no data set that can be read here ({source!r}); give "
        "--reference with in-distribution points"
    )


def _run_score(args: argparse.Namespace) -> int:
    flow = checkpoints.load(args.checkpoint)
    output = Path(args.out) if args.out is not None else None
    if output is not None and output.suffix.lower() not in (".csv", ".npy"):
        raise ValueError(f"{output}: the output must end in .csv or .npy")
    table = _score_rows(args.data, flow, "data file")
    reference_rows, reference_source = _score_reference(args, flow)

    reference = scoring.ScoreReference.fit(scoring.score(flow, reference_rows, margin=args.margin))
    scores = scoring.score(flow, table, margin=args.margin)
    combined = reference.combine(scores)
    values = torch.stack([scores.log_likelihood, scores.elu_saturation, combined], dim=1)
    values = values.double().numpy()

    if output is None:
        header = ",".join(SCORE_COLUMNS)
        np.savetxt(sys.stdout, values, delimiter=",", fmt="%.17g", header=header, comments="")
    elif output.suffix.lower() == ".npy":
        with _atomic_output(output) as temporary:
            np.save(temporary, values)
    else:
        with _atomic_output(output) as temporary:
            header = ",".join(SCORE_COLUMNS)
            np.savetxt(temporary, values, delimiter=",", fmt="%.17g", header=header, comments="")

    finite = torch.isfinite(scores.log_likelihood)
    mean_log_likelihood = (
        scores.log_likelihood[finite].double().mean().item() if finite.any() else -math.inf
    )
    # With the table on stdout, the summary goes to stderr so the table stays clean.
    print(
        f"scored {len(scores)} rows ({int((~finite).sum())} outside the support): mean "
        f"log-likelihood {mean_log_likelihood:.4f} nats, mean ELU saturation "
        f"{scores.elu_saturation.double().mean().item():.4f} of {scores.elu_units} units "
        f"(margin {args.margin:g}); combination standardized on {reference_source}; wrote "
        + (str(output) if output is not None else "stdout"),
        file=sys.stdout if output is not None else sys.stderr,
    )

    return 0


def _plot_data(source: str) -> tuple[Tensor, Callable[[Tensor], Tensor] | None]:
    if source in dataset_names():
        split = load_dataset(source)
        return split.train, split.true_log_prob

    return torch.from_numpy(load_array(source, for_training=False).values), None


def _run_plot(args: argparse.Namespace) -> int:
    flow = checkpoints.load(args.checkpoint)
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise ValueError(f"{output}: the plot is written as PNG; give a .png file")
    source = args.data or checkpoints.read_metadata(args.checkpoint).get("dataset")
    if not source:
        raise ValueError(f"{args.checkpoint} names no data set; give --data")
    data, true_log_prob = _plot_data(source)

    kind = args.kind or ("density" if flow.features <= 2 else "samples")
    if kind == "density":
        plots.plot_density(flow, data, output, true_log_prob=true_log_prob)
    else:
        plots.plot_samples(flow, data, output)
    print(f"wrote {output}")

    return 0


# --- entry point ------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``flowkit`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 on success, 1 when the input or arguments are wrong (one line
    on stderr; the traceback with ``--debug``), 2 for a usage error, 130 on Ctrl-C.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exit_request:
        # --help, --version and usage errors end here; main returns instead of exiting.
        code = exit_request.code
        return code if isinstance(code, int) else (0 if code is None else 1)

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )

    try:
        return args.handler(args)
    except BrokenPipeError:
        # The reader of stdout stopped early (`flowkit score ... | head`): not an error of
        # ours. Pointing stdout at /dev/null keeps Python's exit-time flush quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except _USER_ERRORS as error:
        if args.debug:
            raise
        print(f"flowkit: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flowkit: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the last resort keeps the one-line promise
        if args.debug:
            raise
        print(
            f"flowkit: internal error: {type(error).__name__}: {_one_line(error)} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1
