"""Maximum-likelihood training with validation, early stopping and a support guard."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from flowkit.devices import check_mixed_precision, conditioner_autocast, resolve_device
from flowkit.distributed import agree_any, broadcast_module, broadcast_values, world
from flowkit.flow import Flow
from flowkit.presets import fit_data_dependent_layers, training_defaults
from flowkit.transforms import ELU

__all__ = ["RESUME_STATE_KEYS", "TrainingResult", "train", "mean_negative_log_likelihood"]

logger = logging.getLogger(__name__)

RESUME_STATE_KEYS = (
    "step",
    "flow",
    "optimizer",
    "scheduler",
    "generator",
    "torch_rng",
    "history",
    "best_step",
    "best_validation_nll",
    "validations_without_improvement",
    "interval_losses",
    "undone_steps",
    "seconds",
    "train_points",
    "train_checksum",
    "arguments",
)
"""The keys of :attr:`TrainingResult.resume_state`, each a tensor or a plain value."""

# Arguments that change what a resumed run computes; a resume with other values is refused.
_RESUME_FIXED_ARGUMENTS = (
    "batch_size",
    "seed",
    "validation_fraction",
    "learning_rate",
    "warmup_steps",
)


@dataclass
class TrainingResult:
    """What a training run did.

    Attributes:
        history: one dictionary per validation: ``step``, ``train_nll`` (mean over the steps
            since the last validation), ``validation_nll``, ``validation_outside`` (share of
            validation points with ``log_prob = -inf``), ``learning_rate``, ``seconds``.
        best_step: the step whose weights the flow holds at the end.
        best_validation_nll: validation NLL at that step (nats per point).
        steps_completed: optimizer steps taken.
        stop_reason: ``"completed"``, ``"early stopping"``, ``"non-finite loss"``,
            ``"interrupted"`` or ``"paused"`` (``stop_after`` reached).
        undone_steps: steps undone by the support guard.
        arguments: the training arguments, for provenance.
        resume_state: what ``train(..., resume=...)`` needs to continue the run (the keys of
            :data:`RESUME_STATE_KEYS`): the weights at the last step (the flow itself holds
            the best ones), the optimizer's and the scheduler's state dictionaries, the
            step, the batch generator's and torch's random states, the validation history,
            the early-stopping counter and a fingerprint of the training data. Tensors and
            plain values only, so :func:`flowkit.save` stores it and ``torch.load(...,
            weights_only=True)`` reads it back.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_validation_nll: float = math.inf
    steps_completed: int = 0
    stop_reason: str = "completed"
    undone_steps: int = 0
    arguments: dict[str, Any] = field(default_factory=dict)
    resume_state: dict[str, Any] | None = field(default=None, repr=False)


@torch.no_grad()
def mean_negative_log_likelihood(
    flow: Flow, data: Tensor, batch_size: int = 8192
) -> tuple[float, float]:
    """Returns ``(mean NLL over points inside the support, share of points outside)``.

    A point outside the support has ``log_prob = -inf``; averaging it in would make the
    figure infinite and hide how good the model is elsewhere, so the share is given apart.
    """
    log_probs = flow.log_prob_in_chunks(data, batch_size)

    inside = torch.isfinite(log_probs)
    outside_share = 1.0 - inside.double().mean().item()
    if not torch.any(inside):
        return math.inf, outside_share

    return -log_probs[inside].double().mean().item(), outside_share


def _support_depends_on_parameters(flow: Flow) -> bool:
    # A lower bound or a logit has a fixed domain; an ELU toward the data moves with alpha
    # and with everything before it.
    return any(
        isinstance(layer, ELU) and layer.orientation == "noise_to_data" for layer in flow.layers
    )


def _check_arguments(
    train_data: Tensor, validation_data: Tensor, arguments: dict[str, Any]
) -> None:
    problems = []
    if not isinstance(arguments["steps"], int) or arguments["steps"] < 1:
        problems.append(f"steps must be a positive integer, got {arguments['steps']!r}")
    if not isinstance(arguments["batch_size"], int) or arguments["batch_size"] < 1:
        problems.append(f"batch_size must be a positive integer, got {arguments['batch_size']!r}")
    elif arguments["batch_size"] > len(train_data):
        problems.append(
            f"batch_size {arguments['batch_size']} is larger than the {len(train_data)} "
            "training points"
        )
    if not (arguments["learning_rate"] > 0 and math.isfinite(arguments["learning_rate"])):
        problems.append(
            f"learning_rate must be positive and finite, got {arguments['learning_rate']!r}"
        )
    if not arguments["gradient_clip"] > 0:
        problems.append(f"gradient_clip must be positive, got {arguments['gradient_clip']!r}")
    for name, smallest, kind in (
        ("patience", 1, "a positive"),
        ("validation_interval", 1, "a positive"),
        ("warmup_steps", 0, "a non-negative"),
    ):
        value = arguments[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            problems.append(f"{name} must be {kind} integer, got {value!r}")
    if len(validation_data) < 1:
        problems.append("the validation set is empty")
    if problems:
        raise ValueError("invalid training arguments: " + "; ".join(problems))


def _split_validation(
    data: Tensor, fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {fraction!r}")
    if len(data) < 2:
        raise ValueError(f"need at least 2 data points to hold some out, got {len(data)}")

    order = torch.randperm(len(data), generator=generator)
    held_out = max(1, int(round(fraction * len(data))))

    return data[order[held_out:]], data[order[:held_out]]


def train(
    flow: Flow,
    data: Tensor,
    *,
    validation_data: Tensor | None = None,
    validation_fraction: float = 0.1,
    steps: int = 2000,
    batch_size: int = 256,
    learning_rate: float | None = None,
    weight_decay: float = 0.0,
    gradient_clip: float = 5.0,
    warmup_steps: int | None = None,
    validation_interval: int = 100,
    patience: int = 10,
    seed: int = 0,
    progress: bool = True,
    initialize: bool = True,
    on_validation: Callable[[Flow, dict[str, float]], None] | None = None,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    resume: Mapping[str, Any] | None = None,
    stop_after: int | None = None,
    device: str | torch.device | None = None,
    mixed_precision: str | None = None,
) -> TrainingResult:
    """Trains ``flow`` by maximum likelihood and leaves it holding the best weights.

    Adam with a linear warm-up and cosine decay of the learning rate, gradient-norm
    clipping, a validation pass every ``validation_interval`` steps, early stopping after
    ``patience`` validations without improvement counted once the learning rate has decayed
    to half its peak (the second half of the cosine), and a clean stop on a non-finite loss
    (the best weights so far are kept, never NaN ones). Ctrl-C also stops cleanly with the
    best weights. The same ``seed`` gives the same run.

    When the flow's support moves with its parameters (an ELU toward the data), every step
    is checked on its batch and every validation on the whole training set: a step that
    pushes a training point out of the support is undone and retried with half the
    learning rate.

    A run continues where another stopped with ``resume=result.resume_state`` (or
    :func:`flowkit.checkpoints.read_training_state` of its checkpoint), given the flow that
    run left (holding its best weights, as :func:`flowkit.load` returns it), the same data
    and the same ``seed``, ``batch_size`` and ``validation_fraction``; ``steps`` counts the
    total. On CPU, a run paused with ``stop_after=n`` and resumed ends with the same weights,
    to the last bit, as one uninterrupted run of ``steps``: the learning-rate schedule
    follows ``steps``, not the length of each piece. During training SIGINT (Ctrl-C) and
    SIGTERM only set a flag that the loop reads at the next step boundary, so an interrupted
    run stops between two steps and, resumed with the same ``steps``, repeats the
    uninterrupted run in the same way. A larger ``steps`` stretches the cosine over the new
    total from where the run stopped: extending a finished run is not one longer run.

    Inside an initialised ``torch.distributed`` process group of N processes (``torchrun
    --nproc_per_node N``), training is data-parallel: every rank draws the same seeded
    global batch of ``batch_size`` points (which N must divide) and keeps its rows ``rank,
    rank + N, ...``; ``DistributedDataParallel`` averages the gradients, so each step is the
    one-process step on the same global batch, up to rounding. The data-dependent layers
    are fitted on rank 0 and broadcast; validation runs on rank 0 and its figures are
    broadcast; every stop (early stopping, a non-finite loss, the support guard, SIGINT or
    SIGTERM on any rank) is agreed on by all ranks at a step boundary, so none waits for
    another forever. Only rank 0 shows the progress bar and calls ``on_validation``.

    Args:
        flow: the flow to train, in the data's own units.
        data: training points, shape ``(rows, features)``.
        validation_data: held-out points; by default ``validation_fraction`` of ``data``.
        steps: optimizer steps.
        batch_size: points per step.
        learning_rate: peak learning rate; by default the run being resumed's, else the
            preset's (:data:`flowkit.presets.PRESET_TRAINING`: 1.2e-2 for ``unbounded`` and
            ``bounded``, 2e-3 for ``unit-interval`` and for flows assembled by hand).
        weight_decay: Adam weight decay.
        gradient_clip: largest gradient norm.
        warmup_steps: steps of linear warm-up; by default chosen as ``learning_rate`` is
            (150 for ``unbounded``, 50 otherwise).
        validation_interval: steps between validations.
        patience: validations without improvement, in the second half of the decay,
            before stopping.
        seed: seeds the batches, the split and torch's generator.
        progress: show a tqdm progress bar.
        initialize: fit standardization, bounds and ActNorm on the training data first.
        on_validation: called with the flow and the new history row after each validation.
        augment: redraws the random part of each training batch, ``augment(batch,
            generator)``, for example fresh dequantization noise (``DataSplit.augment``).
        resume: a :attr:`TrainingResult.resume_state` to continue from; ``initialize`` is
            then ignored.
        stop_after: end this run once this many steps (in total) are done, keeping the
            schedule of ``steps``; the result's ``stop_reason`` is ``"paused"``.
        device: move the flow to this device first (``"auto"``, ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``); by default the flow stays where it is. The data follow the flow.
        mixed_precision: ``"bf16"`` runs the conditioner networks under bf16 autocast, on
            CUDA only (refused elsewhere); log-determinants and base log-densities stay
            float32. ``None`` or ``"none"`` (the default) trains in the flow's dtype.

    Returns:
        A :class:`TrainingResult`.

    Example:
        >>> flow = build_flow("unbounded", features=2, num_layers=1, hidden_features=8)
        >>> result = train(flow, torch.randn(512, 2), steps=20, progress=False)
        >>> result.steps_completed
        20
    """
    # An argument left out follows the run being resumed, then the flow's preset.
    previous = (resume.get("arguments") or {}) if isinstance(resume, Mapping) else {}
    recipe = training_defaults(flow)
    if learning_rate is None:
        learning_rate = previous.get("learning_rate", recipe["learning_rate"])
    if warmup_steps is None:
        warmup_steps = previous.get("warmup_steps", recipe["warmup_steps"])

    arguments = {
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "gradient_clip": gradient_clip,
        "warmup_steps": warmup_steps,
        "validation_interval": validation_interval,
        "patience": patience,
        "seed": seed,
        "validation_fraction": validation_fraction,
    }
    rank, world_size = world()
    if world_size > 1:
        arguments["world_size"] = world_size
        if batch_size % world_size != 0:
            raise ValueError(
                f"the global batch_size {batch_size} must be divisible by the {world_size} "
                f"processes; give a multiple of {world_size}"
            )
    if device is not None:
        flow.to(resolve_device(device))
    precision = check_mixed_precision(mixed_precision, flow.log_normalizer.device)
    if precision != "none":
        arguments["mixed_precision"] = precision
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if validation_data is None:
        train_data, validation_data = _split_validation(data, validation_fraction, generator)
    else:
        train_data = data
    _check_arguments(train_data, validation_data, arguments)
    if stop_after is not None and (
        isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1
    ):
        raise ValueError(f"stop_after must be a positive integer or None, got {stop_after!r}")

    if warmup_steps >= steps and resume is None:
        logger.warning(
            "warmup_steps %d is not shorter than the %d steps: the learning rate only rises, "
            "never decays, and early stopping never counts; give fewer warm-up steps",
            warmup_steps,
            steps,
        )

    # Data follow the flow's device and dtype, so that float32 data train a float64 flow.
    reference = flow.log_normalizer
    train_data = train_data.to(device=reference.device, dtype=reference.dtype)
    validation_data = validation_data.to(device=reference.device, dtype=reference.dtype)
    device = reference.device
    if resume is not None:
        _check_resume(resume, arguments, train_data)
    elif initialize and world_size == 1:
        fit_data_dependent_layers(flow, train_data[:8192])
    elif initialize:
        _fit_on_rank_zero(flow, train_data[:8192], rank, device)
    if world_size > 1:
        broadcast_module(flow)
    _check_training_support(flow, train_data)

    # foreach: one fused update over all tensors, which matters for many small layers.
    optimizer = torch.optim.Adam(
        flow.parameters(), lr=learning_rate, weight_decay=weight_decay, foreach=True
    )

    def learning_rate_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress_share = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress_share)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)
    guard = _support_depends_on_parameters(flow)
    result = TrainingResult(arguments=arguments)
    # A resumed run's flow holds the best weights of the run it continues.
    best_state = copy.deepcopy(flow.state_dict())
    validations_without_improvement = 0
    interval_losses: list[float] = []
    first_step, seconds_before = 1, 0.0
    if resume is not None:
        flow.load_state_dict(resume["flow"])
        # The optimizer after the scheduler: the scheduler's constructor sets the rate.
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        result.history = [dict(row) for row in resume["history"]]
        result.best_step = int(resume["best_step"])
        result.best_validation_nll = float(resume["best_validation_nll"])
        result.undone_steps = int(resume["undone_steps"])
        result.steps_completed = int(resume["step"])
        validations_without_improvement = int(resume["validations_without_improvement"])
        interval_losses = [float(loss) for loss in resume["interval_losses"]]
        first_step, seconds_before = result.steps_completed + 1, float(resume["seconds"])
    started = time.perf_counter() - seconds_before

    flow.train()
    model: torch.nn.Module = flow
    if world_size > 1:
        # Buffers (standardization, ActNorm flags) were broadcast above and never change.
        model = DistributedDataParallel(
            flow,
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,
        )
    autocast = conditioner_autocast(flow) if precision == "bf16" else contextlib.nullcontext()
    # Signals only set a flag, read at the next step boundary: an exception raised at an
    # arbitrary point could land inside a lock held by the progress bar or a collective.
    interrupts = _interrupt_flag()
    bar = tqdm(
        total=steps,
        initial=first_step - 1,
        disable=not progress or rank != 0,
        desc="training",
        unit="step",
        leave=False,
    )
    try:
        with autocast, interrupts as interrupted:
            for step in range(first_step, steps + 1):
                if world_size == 1 and interrupted[0]:
                    raise KeyboardInterrupt
                if stop_after is not None and step > stop_after:
                    result.stop_reason = "paused"
                    break

                indices = torch.randint(len(train_data), (batch_size,), generator=generator)
                batch = train_data[indices.to(device)]
                if augment is not None:
                    batch = augment(batch, generator)
                if world_size > 1:
                    # Rows rank, rank + N, ...: the ranks' shards make up the global batch.
                    batch = batch[rank::world_size]

                loss = -model(batch).mean() if world_size > 1 else -flow.log_prob(batch).mean()
                if world_size > 1:
                    # One collective carries the mean loss and any rank's interrupt, so
                    # every rank stops at the same step.
                    loss_value, stop = _reduce_step(loss, interrupted[0], world_size)
                    if stop:
                        raise KeyboardInterrupt
                else:
                    loss_value = loss
                if not torch.isfinite(loss_value):
                    result.stop_reason = "non-finite loss"
                    logger.warning("stopping at step %d: the loss is %s", step, loss_value.item())
                    break

                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(flow.parameters(), gradient_clip)
                if guard:
                    result.undone_steps += _guarded_step(flow, optimizer, batch)
                else:
                    optimizer.step()
                scheduler.step()
                result.steps_completed = step
                interval_losses.append(loss_value.item())
                bar.update(1)

                if step % validation_interval == 0 or step == steps:
                    row = _validate_on_rank_zero(
                        flow, train_data, validation_data, guard, interval_losses, step
                    )
                    row["learning_rate"] = scheduler.get_last_lr()[0]
                    row["seconds"] = time.perf_counter() - started
                    interval_losses = []
                    result.history.append(row)
                    bar.set_postfix(
                        train=f"{row['train_nll']:.3f}", val=f"{row['validation_nll']:.3f}"
                    )
                    if on_validation is not None and rank == 0:
                        on_validation(flow, row)

                    if row["validation_nll"] < result.best_validation_nll:
                        result.best_validation_nll = row["validation_nll"]
                        result.best_step = step
                        best_state = copy.deepcopy(flow.state_dict())
                        validations_without_improvement = 0
                    elif step >= warmup_steps and learning_rate_factor(step) <= 0.5:
                        # While the rate is high, a flat validation NLL is the noise of large
                        # steps, and the decay that follows still lowers it: not a reason to
                        # stop.
                        validations_without_improvement += 1
                    if row.get("training_outside", 0.0) > 0:
                        logger.warning(
                            "a step pushed training points out of the support; reverting"
                        )
                        flow.load_state_dict(best_state)
                        for group in optimizer.param_groups:
                            group["lr"] *= 0.5
                    if agree_any(validations_without_improvement >= patience, device):
                        result.stop_reason = "early stopping"
                        break
    except KeyboardInterrupt:
        result.stop_reason = "interrupted"
        logger.warning(
            "training interrupted at step %d; keeping the best weights", result.steps_completed
        )
    finally:
        bar.close()

    # Taken before the best weights come back: a resumed run continues from the last ones.
    result.resume_state = {
        "step": result.steps_completed,
        "flow": copy.deepcopy(flow.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scheduler": copy.deepcopy(scheduler.state_dict()),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": [dict(row) for row in result.history],
        "best_step": result.best_step,
        "best_validation_nll": result.best_validation_nll,
        "validations_without_improvement": validations_without_improvement,
        "interval_losses": list(interval_losses),
        "undone_steps": result.undone_steps,
        "seconds": time.perf_counter() - started,
        "train_points": len(train_data),
        "train_checksum": _checksum(train_data),
        "arguments": dict(arguments),
    }
    flow.load_state_dict(best_state)
    flow.eval()
    logger.info(
        "training stopped (%s) after %d steps; best validation NLL %.4f at step %d",
        result.stop_reason,
        result.steps_completed,
        result.best_validation_nll,
        result.best_step,
    )

    return result


def _fit_on_rank_zero(flow: Flow, data: Tensor, rank: int, device: torch.device) -> None:
    """Fits the data-dependent layers on rank 0; the caller broadcasts the result."""
    error: ValueError | None = None
    if rank == 0:
        try:
            fit_data_dependent_layers(flow, data)
        except ValueError as caught:
            error = caught

    # Every rank learns of a failure on rank 0, instead of waiting for its broadcast.
    if agree_any(error is not None, device):
        raise error or ValueError("fitting the data-dependent layers failed on rank 0")


def _reduce_step(loss: Tensor, interrupted: bool, world_size: int) -> tuple[Tensor, bool]:
    """Returns the mean of the ranks' losses and whether any rank was interrupted."""
    carrier = torch.stack(
        [loss.detach().double().cpu(), torch.tensor(1.0 if interrupted else 0.0).double()]
    ).to(loss.device)
    torch.distributed.all_reduce(carrier)

    return carrier[0] / world_size, bool(carrier[1].item() > 0)


@contextlib.contextmanager
def _interrupt_flag() -> Iterator[list[bool]]:
    """Turns SIGINT and SIGTERM into a flag read at each step boundary.

    Raising at once could land anywhere: inside a lock the progress bar holds (a run then
    hangs instead of stopping), between a step's update and its bookkeeping, or, with N
    ranks, while the others wait in a collective for a rank that has left. The ranks of a
    multi-process run read the flag together, in the step's reduction.
    """
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def remember(signal_number: int, frame: Any) -> None:
        flag[0] = True

    previous = {
        number: signal.signal(number, remember) for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield flag
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _validate_on_rank_zero(
    flow: Flow,
    train_data: Tensor,
    validation_data: Tensor,
    guard: bool,
    interval_losses: list[float],
    step: int,
) -> dict[str, float]:
    """Validates on rank 0 and gives every rank its figures, so all decide alike."""
    rank, world_size = world()
    if world_size == 1:
        return _validate(flow, train_data, validation_data, guard, interval_losses, step)

    keys = ["validation_nll", "validation_outside"] + (["training_outside"] if guard else [])
    if rank == 0:
        row = _validate(flow, train_data, validation_data, guard, interval_losses, step)
    else:
        row = {"step": float(step), "train_nll": sum(interval_losses) / len(interval_losses)}
    values = broadcast_values([row.get(key, 0.0) for key in keys], flow.log_normalizer.device)
    row.update(zip(keys, values, strict=True))

    return row


def _checksum(data: Tensor) -> float:
    # Cheap and order-sensitive enough to tell another split or another data set apart.
    weights = torch.arange(1, len(data) + 1, dtype=torch.float64, device=data.device)

    return float((data.double().sum(dim=1) * weights).sum())


def _check_resume(
    resume: Mapping[str, Any], arguments: dict[str, Any], train_data: Tensor
) -> None:
    """Refuses a resume state that is incomplete or belongs to another run."""
    if not isinstance(resume, Mapping):
        raise TypeError(f"resume must be a resume state dictionary, got {type(resume).__name__}")
    missing = [key for key in RESUME_STATE_KEYS if key not in resume]
    if missing:
        raise ValueError(f"the resume state lacks {missing}; it was not written by train()")

    if resume["step"] >= arguments["steps"]:
        raise ValueError(
            f"the run to resume has already taken {resume['step']} steps; steps counts the "
            f"total, so give more than {resume['step']} (got {arguments['steps']})"
        )
    previous = resume.get("arguments") or {}
    changed = [
        f"{name} {previous[name]!r} -> {arguments[name]!r}"
        for name in _RESUME_FIXED_ARGUMENTS
        if name in previous and previous[name] != arguments[name]
    ]
    if changed:
        raise ValueError(
            "a resumed run must keep the arguments that decide its batches and its "
            "learning-rate schedule: " + ", ".join(changed)
        )
    if resume["train_points"] != len(train_data) or resume["train_checksum"] != _checksum(
        train_data
    ):
        raise ValueError(
            f"the training data differ from those of the run to resume ({len(train_data)} "
            f"points now, {resume['train_points']} then, or other values); give the same "
            "data, data seed and validation split"
        )


@torch.no_grad()
def _check_training_support(flow: Flow, train_data: Tensor) -> None:
    """Refuses to start when a training point has density zero: its loss would be infinite."""
    log_probs = flow.log_prob_in_chunks(train_data)

    outside = (log_probs == -math.inf).nonzero().flatten()
    if len(outside) > 0:
        raise ValueError(
            f"{len(outside)} training points lie outside the flow's support, first row "
            f"{int(outside[0])}: {train_data[int(outside[0])].tolist()}; choose bounds or ELU "
            "parameters that contain the data"
        )


def _guarded_step(flow: Flow, optimizer: torch.optim.Optimizer, batch: Tensor) -> int:
    """Takes a step; if it pushes a batch point out of the support, undoes it and shrinks."""
    saved_parameters = copy.deepcopy(flow.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    undone = 0
    for attempt in range(6):
        optimizer.step()
        with torch.no_grad():
            left = not torch.all(torch.isfinite(flow.log_prob(batch)))
        # Each rank checks its own shard; all keep or undo the step together.
        if not agree_any(left, batch.device):
            return undone

        undone += 1
        flow.load_state_dict(saved_parameters)
        optimizer.load_state_dict(saved_optimizer)
        for parameter in flow.parameters():
            if parameter.grad is not None:
                parameter.grad.mul_(0.5 ** (attempt + 1))

    logger.warning("the support guard skipped a step: every shrunken step left the support")
    return undone


def _validate(
    flow: Flow,
    train_data: Tensor,
    validation_data: Tensor,
    guard: bool,
    interval_losses: list[float],
    step: int,
) -> dict[str, float]:
    validation_nll, outside = mean_negative_log_likelihood(flow, validation_data)
    row = {
        "step": float(step),
        "train_nll": sum(interval_losses) / max(1, len(interval_losses)),
        "validation_nll": validation_nll,
        "validation_outside": outside,
    }
    if guard:
        _, row["training_outside"] = mean_negative_log_likelihood(flow, train_data)
    flow.train()

    return row
