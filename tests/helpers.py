"""Helpers shared by the transform and flow tests."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn


@torch.no_grad()
def perturb(module: nn.Module, scale: float = 0.3) -> None:
    """Moves every parameter away from its (often identity) initial value."""
    generator = torch.Generator().manual_seed(1234)
    for parameter in module.parameters():
        noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
        parameter.add_(scale * noise)


def jacobian_log_abs_det(function, inputs: Tensor) -> Tensor:
    """``log|det J|`` of a row-wise map, one row at a time, by autograd."""
    values = []
    for row in inputs:
        jacobian = torch.autograd.functional.jacobian(lambda x: function(x[None])[0], row)
        values.append(torch.linalg.slogdet(jacobian)[1])

    return torch.stack(values)


def grid_2d(lower: Tensor, upper: Tensor, cells: int) -> tuple[Tensor, float]:
    """Cell centres of a ``cells x cells`` grid on a box, and the area of one cell."""
    axes = [
        torch.linspace(float(lo), float(hi), cells + 1)
        for lo, hi in zip(lower.tolist(), upper.tolist(), strict=True)
    ]
    centres = [(axis[1:] + axis[:-1]) / 2 for axis in axes]
    first, second = torch.meshgrid(*centres, indexing="ij")
    area = math.prod(float(axis[1] - axis[0]) for axis in axes)

    return torch.stack([first.flatten(), second.flatten()], dim=1), area


def load_example(name: str) -> ModuleType:
    """Imports ``examples/<name>.py`` as a module, so a test can call its fast path."""
    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"examples_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    return module


def error_line(capsys) -> str:
    """The stderr of a failed command, checked to be a single flowkit error line."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("flowkit: error: ")

    return lines[0]
