"""flowkit against nflows' RealNVP and NSF and zuko's NSF and MAF, and a sweep of its presets.

Three parts, each reported in the data's own units:

1. ``moons``: flowkit's default preset against nflows' RealNVP (affine couplings) and
   neural spline flow (rational-quadratic couplings) and zuko's NSF and MAF (autoregressive)
   at a matched parameter count, the same steps and batch size; test NLL in nats, beside
   the true test NLL.
2. ``digits``: the same comparison on scikit-learn's 8x8 digits (64-D, values in [0, 1)),
   every model given the same logit pre-processing with its Jacobian counted; test bits per
   dimension of the [0, 1] scaling.
3. ``sweep``: flowkit with and without the ELU tail, spline against affine couplings, on
   several toy sets, at a short budget; VALIDATION NLL only, to choose preset defaults.

Run ``python -m benchmarks.compare_nflows [--quick] [--steps N] [--out DIR]``. The peers
(nflows and zuko) are trained by :func:`train_nflows_flow`: Adam with cosine decay,
gradient clipping at 5, validation every 200 steps, best validation weights kept. Every
model trains with one CPU thread so that wall times compare.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from nflows.distributions import StandardNormal
from nflows.flows import Flow as NflowsFlow
from nflows.nn.nets import ResidualNet
from nflows.transforms import (
    AffineCouplingTransform,
    CompositeTransform,
    PiecewiseRationalQuadraticCouplingTransform,
)
from torch import Tensor, nn

import flowkit
from benchmarks.runtime import single_thread_float32
from flowkit import build_flow, train
from flowkit.data import DataSplit, bits_per_dimension, load_dataset
from flowkit.presets import PRESET_DEFAULTS

__all__ = [
    "Budget",
    "FULL_BUDGET",
    "QUICK_BUDGET",
    "Preprocessing",
    "build_nflows_flow",
    "count_parameters",
    "main",
    "match_hidden_features",
    "train_nflows_flow",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SWEEP_DATASETS = ("moons", "eight-gaussians", "rings", "checkerboard", "two-spirals")
BOUNDED_DATASET = "gamma-lognormal"
LOGIT_EPSILON = 1e-6
PEER_LEARNING_RATE = 1e-3
PEER_GRADIENT_CLIP = 5.0
# Every model, flowkit's and the peers', validates this often, so that keeping the best
# weights has the same granularity for all.
PEER_VALIDATION_INTERVAL = 100
PARAMETER_TOLERANCE = 0.10


def _default_steps() -> int:
    """The flowkit CLI's default steps if ``flowkit.cli`` defines them, else 4000."""
    try:
        cli = importlib.import_module("flowkit.cli")
    except ImportError:
        return 4000

    return int(getattr(cli, "DEFAULT_STEPS", 4000))


@dataclass(frozen=True)
class Budget:
    """Steps, batch sizes, data sizes and model sizes of one benchmark run."""

    moons_steps: int
    digits_steps: int
    sweep_steps: int
    moons_batch_size: int = 256
    digits_batch_size: int = 128
    sweep_batch_size: int = 256
    toy_sizes: tuple[int, int, int] = (20000, 5000, 20000)
    digits_layers: int | None = None
    digits_hidden: int | None = None
    digits_blocks: int | None = None
    sweep_validation_interval: int = 100


FULL_BUDGET = Budget(moons_steps=_default_steps(), digits_steps=3000, sweep_steps=1000)
QUICK_BUDGET = Budget(
    moons_steps=20,
    digits_steps=10,
    sweep_steps=8,
    toy_sizes=(1000, 400, 1000),
    digits_layers=2,
    digits_hidden=32,
    digits_blocks=1,
    sweep_validation_interval=4,
)


# --- pre-processing shared by the peers --------------------------------------------------------


class Preprocessing:
    """A fixed map of raw data onto the real line, with its log-Jacobian per row.

    Optionally the logit ``x -> logit(eps + (1 - 2 eps) x)`` first (data in [0, 1]), then
    standardization with the training mean and standard deviation. The log-Jacobian is added
    to a peer's log-likelihood, so its NLL is a density of the raw data's units.

    Args:
        train: training data, shape ``(rows, features)``.
        logit: apply the logit pre-processing first.
        epsilon: the logit's squeeze.
    """

    def __init__(self, train: Tensor, logit: bool = False, epsilon: float = LOGIT_EPSILON):
        self.logit = logit
        self.epsilon = epsilon
        hidden = self._logit(train)[0] if logit else train
        self.mean = hidden.mean(dim=0)
        self.std = hidden.std(dim=0)
        if torch.any(self.std <= 0):
            raise ValueError("a feature is constant in the training data")

    def _logit(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        squeezed = self.epsilon + (1 - 2 * self.epsilon) * inputs
        log_p, log_q = torch.log(squeezed), torch.log1p(-squeezed)
        log_derivative = math.log1p(-2 * self.epsilon) - log_p - log_q

        return log_p - log_q, log_derivative.sum(dim=1)

    def __call__(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(mapped inputs, log |det J|)`` per row."""
        logabsdet = inputs.new_zeros(inputs.shape[0])
        if self.logit:
            inputs, logabsdet = self._logit(inputs)
        outputs = (inputs - self.mean) / self.std

        return outputs, logabsdet - torch.log(self.std).sum()


# --- nflows peers ------------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def build_nflows_flow(
    kind: str,
    features: int,
    hidden_features: int,
    num_layers: int,
    num_blocks: int = 2,
    num_bins: int = 8,
    tail_bound: float = 4.0,
) -> NflowsFlow:
    """An nflows flow of coupling layers with alternating masks and a standard normal base.

    Args:
        kind: ``"realnvp"`` (nflows' ``AffineCouplingTransform``) or ``"nsf"`` (nflows'
            ``PiecewiseRationalQuadraticCouplingTransform`` with linear tails).
        features: data dimension.
        hidden_features: width of each ``ResidualNet`` conditioner.
        num_layers: coupling layers.
        num_blocks: residual blocks per conditioner.
        num_bins: spline bins (``"nsf"`` only).
        tail_bound: the spline is the identity outside ``[-tail_bound, tail_bound]``.
    """
    if kind not in ("realnvp", "nsf"):
        raise ValueError(f"kind must be 'realnvp' or 'nsf', got {kind!r}")

    def conditioner(in_features: int, out_features: int) -> ResidualNet:
        return ResidualNet(
            in_features, out_features, hidden_features=hidden_features, num_blocks=num_blocks
        )

    layers = []
    for index in range(num_layers):
        mask = (torch.arange(features) + index) % 2
        if kind == "realnvp":
            layers.append(AffineCouplingTransform(mask, conditioner))
        else:
            layers.append(
                PiecewiseRationalQuadraticCouplingTransform(
                    mask, conditioner, num_bins=num_bins, tails="linear", tail_bound=tail_bound
                )
            )

    return NflowsFlow(CompositeTransform(layers), StandardNormal([features]))


def match_hidden_features(build: Callable[[int], nn.Module], target: int) -> tuple[int, int]:
    """Finds the width whose model's parameter count is closest to ``target``.

    The count grows with the width, so a bisection finds the crossing.

    Returns:
        ``(hidden_features, parameter count)``.
    """
    low, high = 1, 2
    while count_parameters(build(high)) < target:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if count_parameters(build(middle)) < target:
            low = middle
        else:
            high = middle
    candidates = [(abs(count_parameters(build(w)) - target), w) for w in (low, high)]
    width = min(candidates)[1]

    return width, count_parameters(build(width))


@torch.no_grad()
def _log_prob_in_batches(
    log_prob: Callable[[Tensor], Tensor], data: Tensor, batch_size: int = 4096
) -> Tensor:
    return torch.cat(
        [log_prob(data[start : start + batch_size]) for start in range(0, len(data), batch_size)]
    )


def train_nflows_flow(
    model: NflowsFlow,
    train_data: Tensor,
    validation_data: Tensor,
    steps: int,
    batch_size: int,
    learning_rate: float = PEER_LEARNING_RATE,
    gradient_clip: float = PEER_GRADIENT_CLIP,
    validation_interval: int = PEER_VALIDATION_INTERVAL,
    seed: int = 0,
    batch_map: Callable[[Tensor, torch.Generator], Tensor] | None = None,
) -> dict[str, Any]:
    """Trains an nflows flow by maximum likelihood; leaves it holding the best weights.

    Adam with cosine decay of the learning rate to zero, gradient-norm clipping, a
    validation pass every ``validation_interval`` steps (and at the end); the weights with
    the lowest validation NLL are kept. ``train_data`` and ``validation_data`` are already
    pre-processed, unless ``batch_map`` is given: then ``train_data`` is raw and every batch
    goes through ``batch_map(batch, generator)`` (fresh dequantization noise, then the
    pre-processing); the NLLs returned are in the pre-processed units.

    Returns:
        ``best_validation_nll``, ``best_step``, ``steps_completed``, ``stop_reason``.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    best = {"best_validation_nll": math.inf, "best_step": 0}
    best_state = copy.deepcopy(model.state_dict())
    stop_reason, completed = "completed", 0

    model.train()
    for step in range(1, steps + 1):
        batch = train_data[torch.randint(len(train_data), (batch_size,), generator=generator)]
        if batch_map is not None:
            batch = batch_map(batch, generator)
        loss = -model.log_prob(batch).mean()
        if not torch.isfinite(loss):
            stop_reason = "non-finite loss"
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), gradient_clip)
        optimizer.step()
        scheduler.step()
        completed = step

        if step % validation_interval == 0 or step == steps:
            model.eval()
            validation_nll = -_log_prob_in_batches(model.log_prob, validation_data).mean().item()
            model.train()
            if validation_nll < best["best_validation_nll"]:
                best = {"best_validation_nll": validation_nll, "best_step": step}
                best_state = copy.deepcopy(model.state_dict())

    model.load_state_dict(best_state)
    model.eval()

    return {**best, "steps_completed": completed, "stop_reason": stop_reason}


# --- one model, one data set -------------------------------------------------------------------


def _nll(log_probs: Tensor) -> tuple[float, float]:
    """Mean NLL over finite log-densities, and the share that is ``-inf``."""
    finite = torch.isfinite(log_probs)
    outside = 1.0 - finite.double().mean().item()
    if not torch.any(finite):
        return math.inf, outside

    return -log_probs[finite].double().mean().item(), outside


def _run_flowkit(
    split: DataSplit,
    preset: str,
    steps: int,
    batch_size: int,
    validation_interval: int = PEER_VALIDATION_INTERVAL,
    **options: Any,
) -> dict[str, Any]:
    torch.manual_seed(0)
    flow = build_flow(preset, split.features, **options)
    started = time.perf_counter()
    result = train(
        flow,
        split.train,
        validation_data=split.validation,
        steps=steps,
        batch_size=batch_size,
        validation_interval=validation_interval,
        seed=0,
        progress=False,
        augment=split.augment,
    )
    seconds = time.perf_counter() - started
    flow.eval()
    test_nll, test_outside = _nll(_log_prob_in_batches(flow.log_prob, split.test))
    validation_nll, validation_outside = _nll(
        _log_prob_in_batches(flow.log_prob, split.validation)
    )

    return {
        "library": "flowkit",
        "preset": preset,
        "options": options,
        "parameters": count_parameters(flow),
        "validation_nll": validation_nll,
        "validation_outside": validation_outside,
        "test_nll": test_nll,
        "test_outside": test_outside,
        "best_step": result.best_step,
        "steps_completed": result.steps_completed,
        "stop_reason": result.stop_reason,
        "undone_steps": result.undone_steps,
        "train_seconds": seconds,
    }


PEER_KINDS = ("realnvp", "nsf", "zuko-nsf", "zuko-maf")
"""nflows' RealNVP and NSF, zuko's NSF and MAF; zuko's get two hidden layers per network."""


def _peer_name(kind: str) -> str:
    return kind if kind.startswith("zuko-") else f"nflows-{kind}"


def _build_peer(
    kind: str,
    features: int,
    width: int,
    num_layers: int,
    num_blocks: int,
    num_bins: int,
    tail_bound: float,
) -> nn.Module:
    if not kind.startswith("zuko-"):
        return build_nflows_flow(
            kind, features, width, num_layers, num_blocks, num_bins, tail_bound
        )

    import zuko

    from benchmarks.quality import ZukoModel

    flow_class = zuko.flows.NSF if kind == "zuko-nsf" else zuko.flows.MAF
    return ZukoModel(
        flow_class(features=features, transforms=num_layers, hidden_features=(width, width))
    )


def _run_peer(
    split: DataSplit,
    kind: str,
    target_parameters: int,
    steps: int,
    batch_size: int,
    num_layers: int,
    num_blocks: int,
    logit: bool,
    num_bins: int = 8,
    tail_bound: float = 4.0,
    validation_interval: int = PEER_VALIDATION_INTERVAL,
) -> dict[str, Any]:
    def build(width: int) -> nn.Module:
        return _build_peer(
            kind, split.features, width, num_layers, num_blocks, num_bins, tail_bound
        )

    width, parameters = match_hidden_features(build, target_parameters)
    torch.manual_seed(0)
    model = build(width)
    preprocessing = Preprocessing(split.train, logit=logit)
    validation_y, _ = preprocessing(split.validation)
    if split.augment is not None:
        augment = split.augment

        def batch_map(batch: Tensor, generator: torch.Generator) -> Tensor:
            return preprocessing(augment(batch, generator))[0]

        train_y = split.train
    else:
        batch_map = None
        train_y, _ = preprocessing(split.train)

    started = time.perf_counter()
    outcome = train_nflows_flow(
        model,
        train_y,
        validation_y,
        steps,
        batch_size,
        validation_interval=validation_interval,
        batch_map=batch_map,
    )
    seconds = time.perf_counter() - started

    def log_probs(data: Tensor) -> Tensor:
        mapped, logabsdet = preprocessing(data)
        return _log_prob_in_batches(model.log_prob, mapped) + logabsdet

    validation_nll, validation_outside = _nll(log_probs(split.validation))
    test_nll, test_outside = _nll(log_probs(split.test))

    return {
        "library": "zuko" if kind.startswith("zuko-") else "nflows",
        "preset": kind,
        "options": {
            "hidden_features": width,
            "num_layers": num_layers,
            "num_blocks": num_blocks,
            **({"num_bins": num_bins, "tail_bound": tail_bound} if kind == "nsf" else {}),
            **({"num_bins": 8} if kind == "zuko-nsf" else {}),
            "learning_rate": PEER_LEARNING_RATE,
            "logit": logit,
        },
        "parameters": parameters,
        "validation_nll": validation_nll,
        "validation_outside": validation_outside,
        "test_nll": test_nll,
        "test_outside": test_outside,
        "best_step": outcome["best_step"],
        "steps_completed": outcome["steps_completed"],
        "stop_reason": outcome["stop_reason"],
        "undone_steps": 0,
        "train_seconds": seconds,
    }


def _public(run: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in run.items() if not key.startswith("_")}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_match(runs: dict[str, dict[str, Any]], reference: str) -> None:
    target = runs[reference]["parameters"]
    for name, run in runs.items():
        share = abs(run["parameters"] - target) / target
        run["parameter_ratio"] = run["parameters"] / target
        if share > PARAMETER_TOLERANCE:
            raise RuntimeError(
                f"{name} has {run['parameters']} parameters, more than "
                f"{PARAMETER_TOLERANCE:.0%} away from {reference}'s {target}"
            )


# --- the three parts ---------------------------------------------------------------------------


def run_moons(budget: Budget) -> dict[str, Any]:
    """flowkit's default against nflows' RealNVP and NSF on moons; test NLL in nats."""
    split = load_dataset("moons", seed=0, **_toy_sizes(budget))
    steps, batch_size = budget.moons_steps, budget.moons_batch_size
    runs: dict[str, dict[str, Any]] = {}
    runs["flowkit"] = _run_flowkit(split, "unbounded", steps, batch_size)
    _log(_progress("moons", "flowkit", runs["flowkit"]))
    # The peers get the preset's layers, blocks and bins, at a width matched to its count.
    config = flowkit.FlowConfig(**PRESET_DEFAULTS["unbounded"])
    for kind in PEER_KINDS:
        runs[_peer_name(kind)] = _run_peer(
            split,
            kind,
            runs["flowkit"]["parameters"],
            steps,
            batch_size,
            num_layers=config.num_layers,
            num_blocks=config.num_blocks,
            logit=False,
            num_bins=config.num_bins,
            tail_bound=config.tail_bound,
        )
        _log(_progress("moons", _peer_name(kind), runs[_peer_name(kind)]))
    _check_match(runs, "flowkit")

    true_nll = -split.true_log_prob(split.test).double().mean().item()
    return {
        "data": _describe(split),
        "steps": steps,
        "batch_size": batch_size,
        "true_test_nll": true_nll,
        "models": {name: _public(run) for name, run in runs.items()},
    }


def run_digits(budget: Budget) -> dict[str, Any]:
    """flowkit's unit-interval preset against nflows' RealNVP and NSF on digits; bits/dim.

    flowkit runs its preset as ``flowkit train digits`` would (the quick budget shrinks it);
    the peers get the same number of coupling layers and residual blocks, a width matched
    to flowkit's parameter count, the same logit pre-processing and the same fresh
    dequantization noise at every step.
    """
    split = load_dataset("digits", seed=0)
    steps, batch_size = budget.digits_steps, budget.digits_batch_size
    size = {
        key: value
        for key, value in {
            "num_layers": budget.digits_layers,
            "hidden_features": budget.digits_hidden,
            "num_blocks": budget.digits_blocks,
        }.items()
        if value is not None
    }
    config = flowkit.FlowConfig(
        **{**PRESET_DEFAULTS["unit-interval"], **size, "preset": "unit-interval", "features": 64}
    )
    runs: dict[str, dict[str, Any]] = {}
    runs["flowkit"] = _run_flowkit(split, "unit-interval", steps, batch_size, **size)
    _log(_progress("digits", "flowkit", runs["flowkit"]))
    for kind in PEER_KINDS:
        name = _peer_name(kind)
        runs[name] = _run_peer(
            split,
            kind,
            runs["flowkit"]["parameters"],
            steps,
            batch_size,
            num_layers=config.num_layers,
            num_blocks=max(1, config.num_blocks),
            logit=True,
            num_bins=config.num_bins,
            tail_bound=config.tail_bound,
        )
        _log(_progress("digits", name, runs[name]))
    for run in runs.values():
        for part in ("validation", "test"):
            nll = run[f"{part}_nll"]
            run[f"{part}_bits_per_dim"] = bits_per_dimension(
                torch.tensor(-nll), split.features
            ).item()
    _check_match(runs, "flowkit")

    return {
        "data": _describe(split),
        "steps": steps,
        "batch_size": batch_size,
        "models": {name: _public(run) for name, run in runs.items()},
    }


SWEEP_CONFIGS = (
    ("spline", True),
    ("spline", False),
    ("affine", True),
    ("affine", False),
)


def _config_name(coupling: str, elu_tail: bool) -> str:
    return f"{coupling}{'+elu' if elu_tail else ''}"


def run_sweep(budget: Budget) -> dict[str, Any]:
    """Validation NLL of flowkit's preset choices on toy sets at a short budget."""
    cases: list[tuple[str, str, dict[str, Any]]] = [
        (name, "unbounded", {}) for name in SWEEP_DATASETS
    ]
    cases += [
        (BOUNDED_DATASET, "bounded", {"lower": [0.0, 0.0]}),
        (BOUNDED_DATASET, "unbounded", {}),
    ]
    rows = []
    for dataset, preset, extra in cases:
        split = load_dataset(dataset, seed=0, **_toy_sizes(budget))
        row: dict[str, Any] = {"dataset": dataset, "preset": preset, "runs": {}}
        for coupling, elu_tail in SWEEP_CONFIGS:
            run = _run_flowkit(
                split,
                preset,
                budget.sweep_steps,
                budget.sweep_batch_size,
                validation_interval=budget.sweep_validation_interval,
                coupling=coupling,
                elu_tail=elu_tail,
                **extra,
            )
            public = _public(run)
            # The sweep chooses presets: the test figure is never reported, lest it be used.
            for key in ("test_nll", "test_outside"):
                public.pop(key)
            row["runs"][_config_name(coupling, elu_tail)] = public
            _log(_progress(f"sweep {dataset} ({preset})", _config_name(coupling, elu_tail), run))
        row["best"] = min(row["runs"], key=lambda name: row["runs"][name]["validation_nll"])
        rows.append(row)

    wins = {_config_name(*config): 0 for config in SWEEP_CONFIGS}
    for row in rows:
        wins[row["best"]] += 1
    return {
        "steps": budget.sweep_steps,
        "batch_size": budget.sweep_batch_size,
        "rows": rows,
        "wins": wins,
    }


def _toy_sizes(budget: Budget) -> dict[str, int]:
    train_size, validation_size, test_size = budget.toy_sizes
    return {"num_train": train_size, "num_validation": validation_size, "num_test": test_size}


def _describe(split: DataSplit) -> dict[str, Any]:
    return {
        "name": split.name,
        "features": split.features,
        "train": len(split.train),
        "validation": len(split.validation),
        "test": len(split.test),
    }


def _progress(part: str, name: str, run: dict[str, Any]) -> str:
    return (
        f"[{part}] {name}: {run['parameters']} parameters, validation NLL "
        f"{run['validation_nll']:.4f}, {run['steps_completed']} steps "
        f"({run['stop_reason']}), {run['train_seconds']:.1f} s"
    )


# --- reporting ---------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _model_rows(models: dict[str, dict[str, Any]], metric: str, digits: int) -> list[list[str]]:
    return [
        [
            name,
            f"{run['parameters']:,}",
            f"{run.get('parameter_ratio', 1.0):.3f}",
            f"{run[f'validation_{metric}']:.{digits}f}",
            f"**{run[f'test_{metric}']:.{digits}f}**",
            f"{run['test_outside']:.4f}",
            f"{run['best_step']}/{run['steps_completed']}",
            run["stop_reason"],
            f"{run['train_seconds']:.1f}",
        ]
        for name, run in models.items()
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, versions, command, and one table per part."""
    machine = report["machine"]
    versions = report["versions"]
    lines = [
        "# flowkit vs nflows and zuko",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {machine['platform']}, {machine['cpu_count']} CPUs, "
        f"{machine['torch_threads']} torch thread",
        f"- versions: python {versions['python']}, torch {versions['torch']}, "
        f"nflows {versions['nflows']}, zuko {versions.get('zuko', 'not recorded')}, "
        f"flowkit {versions['flowkit']}",
        f"- total wall time: {report['total_seconds']:.1f} s",
        "",
    ]
    headers = [
        "model",
        "parameters",
        "vs flowkit",
        "validation",
        "test",
        "test -inf share",
        "best/steps",
        "stop",
        "train s",
    ]
    if "moons" in report:
        moons = report["moons"]
        lines += [
            f"## Moons: test NLL (nats), {moons['steps']} steps, batch {moons['batch_size']}",
            "",
            _table(headers, _model_rows(moons["models"], "nll", 4)),
            "",
            f"True test NLL: {moons['true_test_nll']:.4f} nats.",
            "",
        ]
    if "digits" in report:
        digits = report["digits"]
        lines += [
            f"## Digits: test bits/dim of the [0, 1] scaling, {digits['steps']} steps, "
            f"batch {digits['batch_size']}",
            "",
            _table(
                headers,
                _model_rows(digits["models"], "bits_per_dim", 4),
            ),
            "",
        ]
    if "sweep" in report:
        sweep = report["sweep"]
        names = [_config_name(*config) for config in SWEEP_CONFIGS]
        rows = []
        for row in sweep["rows"]:
            cells = []
            for name in names:
                run = row["runs"][name]
                text = f"{run['validation_nll']:.4f}"
                if run["validation_outside"] > 0:
                    text += f" ({run['validation_outside']:.2%} -inf)"
                cells.append(f"**{text}**" if name == row["best"] else text)
            rows.append([f"{row['dataset']} ({row['preset']})", *cells])
        rows.append(["wins", *(str(sweep["wins"][name]) for name in names)])
        lines += [
            f"## Preset sweep: VALIDATION NLL (nats), {sweep['steps']} steps, "
            f"batch {sweep['batch_size']}",
            "",
            _table(["data (preset)", *names], rows),
            "",
        ]

    return "\n".join(lines)


def _environment() -> dict[str, Any]:
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "nflows": importlib.metadata.version("nflows"),
            "zuko": importlib.metadata.version("zuko"),
            "flowkit": flowkit.__version__,
        },
    }


def _parse(argv: Sequence[str | os.PathLike[str]] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_nflows", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke test")
    parser.add_argument("--steps", type=int, default=None, help="moons training steps")
    parser.add_argument("--digits-steps", type=int, default=None)
    parser.add_argument("--sweep-steps", type=int, default=None)
    parser.add_argument(
        "--parts", default="moons,digits,sweep", help="comma-separated subset to run"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results")
    arguments = None if argv is None else [os.fspath(argument) for argument in argv]

    return parser.parse_args(arguments)


def main(argv: Sequence[str | os.PathLike[str]] | None = None) -> dict[str, Any]:
    """Runs the benchmark, prints the Markdown tables and writes JSON and Markdown results.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The report that was written to ``compare_nflows.json``.
    """
    args = _parse(argv)
    budget = QUICK_BUDGET if args.quick else FULL_BUDGET
    overrides = {
        "moons_steps": args.steps,
        "digits_steps": args.digits_steps,
        "sweep_steps": args.sweep_steps,
    }
    budget = Budget(**{**asdict(budget), **{k: v for k, v in overrides.items() if v}})
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = sorted(set(parts) - {"moons", "digits", "sweep"})
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; choose from moons, digits, sweep")

    command_arguments = sys.argv[1:] if argv is None else [os.fspath(a) for a in argv]
    started = time.perf_counter()
    with single_thread_float32():
        report: dict[str, Any] = {
            "command": " ".join(["python -m benchmarks.compare_nflows", *command_arguments]),
            **_environment(),
            "budget": asdict(budget),
        }
        runners = {"moons": run_moons, "digits": run_digits, "sweep": run_sweep}
        for part in parts:
            report[part] = runners[part](budget)
        report["total_seconds"] = time.perf_counter() - started

    markdown = render_markdown(report)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare_nflows.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "compare_nflows.md").write_text(markdown + "\n")

    return report


if __name__ == "__main__":
    main()
