"""Choosing a device, and bf16 autocast confined to the conditioner networks."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from flowkit.nets import ResidualConditioner

__all__ = [
    "DEVICE_CHOICES",
    "MIXED_PRECISION_CHOICES",
    "check_mixed_precision",
    "conditioner_autocast",
    "resolve_device",
]

logger = logging.getLogger(__name__)

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
"""What ``--device`` and ``device=`` accept, in words."""

MIXED_PRECISION_CHOICES = ("none", "bf16")
"""What ``--mixed-precision`` and ``mixed_precision=`` accept."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turns ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable device.

    ``"auto"`` (and ``None``) is the first CUDA device when one is present, else the CPU.

    Raises:
        ValueError: the name is not a device, CUDA is asked for but absent, or the index
            names a GPU that does not exist. The message says what is available.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

    try:
        chosen = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be {DEVICE_CHOICES}, got {device!r}") from None
    if chosen.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"device must be {DEVICE_CHOICES}, got {device!r}")

    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} asks for CUDA, but this torch ({torch.__version__}) sees no "
                "CUDA device; use --device cpu (or auto), or install a CUDA build of torch"
            )
        count = torch.cuda.device_count()
        index = 0 if chosen.index is None else chosen.index
        if index >= count:
            raise ValueError(
                f"device {device!r} does not exist: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        chosen = torch.device("cuda", index)

    return chosen


def check_mixed_precision(mixed_precision: str | None, device: torch.device) -> str:
    """Validates a mixed-precision choice for ``device`` and returns ``"none"`` or ``"bf16"``.

    Raises:
        ValueError: an unknown choice, or ``"bf16"`` on a device other than CUDA (on the
            CPU, bf16 autocast is slower than float32 for layers this small and rounds more,
            so flowkit refuses it rather than pretend to speed anything up).
    """
    choice = "none" if mixed_precision is None else str(mixed_precision).lower()
    if choice not in MIXED_PRECISION_CHOICES:
        raise ValueError(
            f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {mixed_precision!r}"
        )
    if choice == "bf16" and device.type != "cuda":
        raise ValueError(
            f"bf16 mixed precision runs on CUDA devices only, and training is on {device}; "
            "drop --mixed-precision (or mixed_precision=) or train on a GPU"
        )

    return choice


def _autocast_forward(
    forward: Callable[..., Tensor], device_type: str, dtype: torch.dtype, *args: Any, **kwargs: Any
) -> Tensor:
    with torch.autocast(device_type=device_type, dtype=dtype):
        outputs = forward(*args, **kwargs)

    # The coupling turns these outputs into scales, bin widths and log-determinants, which
    # must stay in float32.
    return outputs.float() if outputs.is_floating_point() else outputs


@contextlib.contextmanager
def conditioner_autocast(
    model: nn.Module, device_type: str = "cuda", dtype: torch.dtype = torch.bfloat16
) -> Iterator[int]:
    r"""Runs every conditioner network of ``model`` under autocast while the block lasts.

    Only the conditioners' matrix products run in ``dtype``; their outputs are cast back to
    float32 before the coupling reads them, so the spline or affine parameters, the
    log-determinants :math:`\log|\det J|` and the base log-density :math:`\log p_z(z)` are
    computed in float32. Yields the number of conditioners wrapped.

    Args:
        model: a flow, or any module holding :class:`~flowkit.nets.ResidualConditioner`
            networks.
        device_type: ``"cuda"`` in training; ``"cpu"`` lets tests check the wrapping.
        dtype: the autocast dtype.
    """
    wrapped = [module for module in model.modules() if isinstance(module, ResidualConditioner)]
    for module in wrapped:
        # An instance attribute shadows the class's forward; deleting it restores the class's.
        module.forward = functools.partial(_autocast_forward, module.forward, device_type, dtype)
    try:
        yield len(wrapped)
    finally:
        for module in wrapped:
            del module.forward
