"""One rank of the multi-process checks in test_distributed.py; run it under torchrun.

Usage: ``torchrun --nproc_per_node 2 tests/distributed_worker.py OUTPUT_FOLDER``. Each rank
writes ``rank<N>.pt``, a dictionary of plain values and tensors that the test compares.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from nflows.transforms import ActNorm

from flowkit.distributed import agree_any, broadcast_module, init_from_environment, shutdown
from flowkit.presets import build_flow, fit_data_dependent_layers
from flowkit.training import train
from flowkit.transforms import Standardize


def rank_data(rank: int, rows: int = 512) -> torch.Tensor:
    """Data that differ from rank to rank, so that a local fit would differ too."""
    generator = torch.Generator().manual_seed(100 + rank)

    return torch.randn(rows, 2, generator=generator) * (1.0 + rank) + 3.0 * rank


def small_flow() -> torch.nn.Module:
    """The same tiny flow on every rank: the seed fixes its initial weights."""
    torch.manual_seed(0)

    return build_flow("unbounded", features=2, num_layers=2, hidden_features=8)


def actnorm_state(flow: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The ActNorm parameters of ``flow``, by name."""
    return {
        f"{name}.{key}": value.detach().clone()
        for name, module in flow.named_modules()
        if isinstance(module, ActNorm)
        for key, value in module.state_dict().items()
    }


class SignalAt:
    """An ``augment`` hook that sends this process a signal at one step, on one rank."""

    def __init__(self, rank: int, step: int, number: int) -> None:
        self.calls, self.rank, self.step, self.number = 0, rank, step, number

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.calls += 1
        if dist.get_rank() == self.rank and self.calls == self.step:
            os.kill(os.getpid(), self.number)

        return batch


class OverflowAt:
    """An ``augment`` hook that makes one rank's batch overflow the base at one step."""

    def __init__(self, rank: int, step: int) -> None:
        self.calls, self.rank, self.step = 0, rank, step

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.calls += 1
        if dist.get_rank() == self.rank and self.calls == self.step:
            return torch.full_like(batch, 3e38)

        return batch


def main(folder: Path) -> None:
    """Runs every check on this rank and saves what the test compares."""
    torch.set_num_threads(1)
    group = init_from_environment("cpu")
    rank = group.rank
    results: dict[str, object] = {"rank": rank, "world_size": group.world_size}
    data = rank_data(rank)
    validation = rank_data(0, rows=128)

    # Broadcast after a local fit: the ranks differ before it and agree after.
    flow = small_flow()
    fit_data_dependent_layers(flow, data)
    results["actnorm_before_broadcast"] = actnorm_state(flow)
    broadcast_module(flow)
    results["actnorm_after_broadcast"] = actnorm_state(flow)

    # The trainer fits on rank 0 only and broadcasts before its first step.
    flow = small_flow()
    result = train(
        flow,
        data,
        validation_data=validation,
        steps=6,
        batch_size=64,
        validation_interval=2,
        progress=False,
    )
    standardize = next(layer for layer in flow.layers if isinstance(layer, Standardize))
    results["trained_state"] = {key: value.clone() for key, value in flow.state_dict().items()}
    results["standardize_mean"] = standardize.mean.clone()
    results["data_mean"] = data.mean(dim=0)
    results["trained_history"] = result.history
    results["trained_stop"] = (result.stop_reason, result.steps_completed)

    results["agree_one"] = agree_any(rank == 1, group.device)
    results["agree_none"] = agree_any(False, group.device)

    try:
        train(
            small_flow(), data, validation_data=validation, steps=2, batch_size=63, progress=False
        )
        results["odd_batch_error"] = ""
    except ValueError as error:
        results["odd_batch_error"] = str(error)

    # SIGTERM on rank 1 only: both ranks must stop at the same step, and neither hang.
    result = train(
        small_flow(),
        data,
        validation_data=validation,
        steps=200,
        batch_size=64,
        progress=False,
        augment=SignalAt(rank=1, step=5, number=signal.SIGTERM),
    )
    results["interrupted"] = (result.stop_reason, result.steps_completed)

    result = train(
        small_flow(),
        data,
        validation_data=validation,
        steps=200,
        batch_size=64,
        progress=False,
        augment=OverflowAt(rank=1, step=3),
    )
    results["overflow"] = (result.stop_reason, result.steps_completed)

    torch.save(results, folder / f"rank{rank}.pt")
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
