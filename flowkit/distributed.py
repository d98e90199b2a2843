"""Multi-process training helpers on ``torch.distributed``: setup, broadcast, agreement.

A run started by ``torchrun --nproc_per_node N -m flowkit train ...`` finds ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment;
:func:`init_from_environment` joins the process group with ``gloo`` on the CPU and ``nccl``
on CUDA. :func:`flowkit.train` notices an initialised group by itself: every rank draws the
same seeded global batch and keeps the rows ``rank, rank + N, ...`` of it, and
``DistributedDataParallel`` averages the gradients, so a step equals the one-process step on
the same global batch up to rounding.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from flowkit.devices import resolve_device

__all__ = [
    "ProcessGroupInfo",
    "agree_any",
    "broadcast_module",
    "broadcast_values",
    "init_from_environment",
    "is_main_process",
    "shutdown",
    "world",
]

logger = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=5)
"""How long a rank waits for the others in one collective before it fails instead of
hanging; every stop is agreed on at step boundaries, so this is only a last resort."""


@dataclass(frozen=True)
class ProcessGroupInfo:
    """Where this process stands in a multi-process run.

    Attributes:
        rank: this process's rank, 0 to ``world_size - 1``.
        world_size: number of processes.
        device: the device this rank trains on.
        backend: ``"gloo"`` or ``"nccl"``.
    """

    rank: int
    world_size: int
    device: torch.device
    backend: str


def world() -> tuple[int, int]:
    """Returns ``(rank, world_size)``: ``(0, 1)`` outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()

    return 0, 1


def is_main_process() -> bool:
    """True on rank 0, and in a run of one process; only it writes files and shows bars."""
    return world()[0] == 0


def _environment_world_size() -> int:
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {text!r}") from None


def init_from_environment(device: str | torch.device | None = "auto") -> ProcessGroupInfo:
    """Joins the process group that ``torchrun`` describes in the environment, if any.

    With ``WORLD_SIZE`` unset or 1 nothing is initialised and the result says rank 0 of 1.
    Otherwise the backend follows the device: ``nccl`` for CUDA, where ``"auto"`` and
    ``"cuda"`` mean ``cuda:LOCAL_RANK`` so that each rank has its own GPU; ``gloo`` for
    the CPU.

    Raises:
        ValueError: a bad device, or CUDA asked for with fewer GPUs than local ranks.
    """
    world_size = _environment_world_size()
    chosen = resolve_device(device)
    if world_size <= 1:
        return ProcessGroupInfo(0, 1, chosen, "none")

    if chosen.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        explicit = isinstance(device, str) and ":" in device
        if not explicit:
            chosen = resolve_device(f"cuda:{local_rank}")
        torch.cuda.set_device(chosen)
        backend = "nccl"
    else:
        backend = "gloo"

    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    rank, world_size = world()
    logger.info(
        "rank %d of %d joined the %s process group on %s", rank, world_size, backend, chosen
    )

    return ProcessGroupInfo(rank, world_size, chosen, backend)


def shutdown() -> None:
    """Leaves the process group, if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@torch.no_grad()
def broadcast_module(module: nn.Module, source: int = 0) -> None:
    """Copies every parameter and buffer of ``module`` from rank ``source`` to all ranks.

    Used after data-dependent initialisation (standardization, ActNorm), which runs on rank
    0 alone: every rank then holds the same values bit for bit. A no-op in one process.
    """
    if world()[1] == 1:
        return

    for tensor in module.state_dict().values():
        if tensor.is_floating_point():
            dist.broadcast(tensor, source)
            continue

        # Not every backend broadcasts booleans; an integer copy travels everywhere.
        carrier = tensor.to(torch.int64)
        dist.broadcast(carrier, source)
        tensor.copy_(carrier.to(tensor.dtype))


def broadcast_values(values: list[float], device: torch.device, source: int = 0) -> list[float]:
    """Returns rank ``source``'s ``values`` on every rank (all ranks pass a list this long)."""
    if world()[1] == 1:
        return list(values)

    carrier = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(carrier, source)

    return carrier.tolist()


def agree_any(flag: bool | Tensor, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one: a stop all ranks take."""
    if world()[1] == 1:
        return bool(flag)

    carrier = torch.tensor([1.0 if bool(flag) else 0.0], device=device)
    dist.all_reduce(carrier, op=dist.ReduceOp.MAX)

    return bool(carrier.item() > 0)
