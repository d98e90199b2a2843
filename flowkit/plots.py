"""Pictures of what a flow learned: density, samples and the training curve, as PNG files."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from flowkit.flow import Flow
from flowkit.training import TrainingResult

__all__ = ["plot_density", "plot_samples", "plot_training_curve"]

# Figures are matplotlib.figure.Figure objects that pyplot never sees: saving one renders it
# with the Agg canvas, so neither the user's backend nor pyplot's figure list is touched.
_DIGITS_IMAGE_SHAPE = (8, 8)
_IMAGES_PER_SIDE = 6
_CHUNK = 16384


def _as_tensor(data: Tensor | np.ndarray | Sequence[Any], flow: Flow) -> Tensor:
    values = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data)
    if values.dim() == 1 and flow.features == 1:
        values = values[:, None]
    if values.dim() != 2 or values.shape[1] != flow.features:
        raise ValueError(
            f"data must have shape (rows, {flow.features}) to match the flow; "
            f"got {tuple(values.shape)}"
        )

    return values.detach().to(device="cpu", dtype=torch.float64)


def _flow_dtype_device(flow: Flow) -> tuple[torch.dtype, torch.device]:
    reference = flow.log_normalizer
    return reference.dtype, reference.device


@torch.no_grad()
def _density(flow: Flow, points: Tensor) -> np.ndarray:
    """Evaluates exp(log_prob) in chunks; points outside the support get density 0."""
    return torch.exp(flow.log_prob_in_chunks(points, _CHUNK).cpu().double()).numpy()


def _default_bounds(data: Tensor) -> list[tuple[float, float]]:
    # Quantiles rather than extremes, so a few outliers do not shrink the picture.
    low = torch.quantile(data, 0.001, dim=0)
    high = torch.quantile(data, 0.999, dim=0)
    margin = 0.1 * (high - low).clamp_min(1e-6)

    return [(float(a), float(b)) for a, b in zip(low - margin, high + margin, strict=True)]


def _check_bounds(bounds: Any, features: int) -> list[tuple[float, float]]:
    try:
        checked = [(float(low), float(high)) for low, high in bounds]
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be {features} (low, high) pairs; got {bounds!r}") from None
    if len(checked) != features or any(
        not (math.isfinite(low) and math.isfinite(high) and low < high) for low, high in checked
    ):
        raise ValueError(f"bounds must be {features} finite (low, high) pairs; got {bounds!r}")

    return checked


def _prepare_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, format="png", dpi=100)
    return path


def plot_density(
    flow: Flow,
    data: Tensor | np.ndarray,
    path: str | os.PathLike[str],
    *,
    bounds: Sequence[tuple[float, float]] | None = None,
    grid_size: int = 200,
    true_log_prob: Callable[[Tensor], Tensor] | None = None,
) -> Path:
    """Draws the flow's density beside the data and writes a PNG.

    Two features: a heat map of ``exp(log_prob)`` on a ``grid_size`` square grid next to a
    2-D histogram of the data, and the true density as a third panel when
    ``true_log_prob`` is given. One feature: the density curve over a histogram of the data
    (with the true density as a dashed curve when given). With ``alpha != 1`` an ELU layer
    makes the density jump along the boundary where its input is zero; a visible edge there
    is the model, not a plotting fault.

    Args:
        flow: a flow with one or two features.
        data: points of shape ``(rows, features)``.
        path: the PNG file; its folder is created.
        bounds: ``(low, high)`` per feature; by default the data's range with a margin.
        grid_size: grid points per axis.
        true_log_prob: the true log-density, taking ``(n, features)`` tensors.

    Returns:
        The path written.

    Raises:
        ValueError: more than two features (use :func:`plot_samples`), or bad arguments.
    """
    if flow.features > 2:
        raise ValueError(
            f"plot_density draws flows with 1 or 2 features, this one has {flow.features}; "
            "use plot_samples instead"
        )
    if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 2:
        raise ValueError(f"grid_size must be an integer >= 2; got {grid_size!r}")
    values = _as_tensor(data, flow)
    bounds = _default_bounds(values) if bounds is None else _check_bounds(bounds, flow.features)
    path = _prepare_path(path)

    if flow.features == 1:
        figure = _density_1d(flow, values, bounds[0], grid_size, true_log_prob)
    else:
        figure = _density_2d(flow, values, bounds, grid_size, true_log_prob)

    return _save(figure, path)


def _density_1d(
    flow: Flow,
    values: Tensor,
    bounds: tuple[float, float],
    grid_size: int,
    true_log_prob: Callable[[Tensor], Tensor] | None,
) -> Figure:
    grid = torch.linspace(bounds[0], bounds[1], grid_size, dtype=torch.float64)[:, None]
    density = _density(flow, grid)

    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    axes.hist(values[:, 0].numpy(), bins=60, range=bounds, density=True, alpha=0.4, label="data")
    axes.plot(grid[:, 0].numpy(), density, label="flow")
    if true_log_prob is not None:
        true_density = torch.exp(true_log_prob(grid).double()).numpy()
        axes.plot(grid[:, 0].numpy(), true_density, linestyle="--", label="true")
    axes.set_xlabel("x")
    axes.set_ylabel("density")
    axes.legend()
    figure.tight_layout()

    return figure


def _density_2d(
    flow: Flow,
    values: Tensor,
    bounds: list[tuple[float, float]],
    grid_size: int,
    true_log_prob: Callable[[Tensor], Tensor] | None,
) -> Figure:
    (x_low, x_high), (y_low, y_high) = bounds
    xs = torch.linspace(x_low, x_high, grid_size, dtype=torch.float64)
    ys = torch.linspace(y_low, y_high, grid_size, dtype=torch.float64)
    grid_x, grid_y = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)
    extent = (x_low, x_high, y_low, y_high)

    panels = [("flow density", _density(flow, points).reshape(grid_size, grid_size))]
    if true_log_prob is not None:
        true_density = torch.exp(true_log_prob(points).double()).numpy()
        panels.append(("true density", true_density.reshape(grid_size, grid_size)))

    figure = Figure(figsize=(4.2 * (len(panels) + 1), 4))
    axes = figure.subplots(1, len(panels) + 1, squeeze=False)[0]
    for ax, (title, image) in zip(axes, panels, strict=False):
        ax.imshow(image, origin="lower", extent=extent, aspect="auto", cmap="viridis")
        ax.set_title(title)
    data_axes = axes[-1]
    data_axes.hist2d(
        values[:, 0].numpy(),
        values[:, 1].numpy(),
        bins=min(grid_size, 100),
        range=[[x_low, x_high], [y_low, y_high]],
        cmap="viridis",
    )
    data_axes.set_title(f"data ({len(values)} points)")
    for ax in axes:
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    figure.tight_layout()

    return figure


@torch.no_grad()
def plot_samples(
    flow: Flow,
    data: Tensor | np.ndarray,
    path: str | os.PathLike[str],
    *,
    num_samples: int = 2000,
    seed: int = 0,
    image_shape: tuple[int, int] | None = None,
) -> Path:
    """Draws samples from the flow beside the data and writes a PNG.

    Images (``image_shape`` given, or 64 features read as 8 x 8 digits): a grid of sampled
    images beside a grid of data images. One feature: overlaid histograms. Two or more
    features otherwise: scatter plots of the first two features.

    Args:
        flow: the flow to sample.
        data: points of shape ``(rows, features)``.
        path: the PNG file; its folder is created.
        num_samples: points to draw (for images, only the first few dozen are shown).
        seed: seeds the draws, so the picture is repeatable.
        image_shape: ``(height, width)`` with ``height * width == features``.

    Returns:
        The path written.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}")
    values = _as_tensor(data, flow)
    if image_shape is None and flow.features == math.prod(_DIGITS_IMAGE_SHAPE):
        image_shape = _DIGITS_IMAGE_SHAPE
    if image_shape is not None and math.prod(image_shape) != flow.features:
        raise ValueError(
            f"image_shape {tuple(image_shape)} does not hold {flow.features} features"
        )
    path = _prepare_path(path)

    dtype, device = _flow_dtype_device(flow)
    generator = torch.Generator(device=device).manual_seed(seed)
    if image_shape is not None:
        num_samples = min(num_samples, _IMAGES_PER_SIDE**2)
    samples = flow.sample(num_samples, dtype=dtype, generator=generator).cpu().double()

    if image_shape is not None:
        figure = _image_grids(samples, values, tuple(image_shape))
    elif flow.features == 1:
        figure = Figure(figsize=(6, 4))
        axes = figure.add_subplot()
        low, high = _default_bounds(values)[0]
        axes.hist(values[:, 0].numpy(), bins=60, range=(low, high), alpha=0.5, label="data")
        axes.hist(samples[:, 0].numpy(), bins=60, range=(low, high), alpha=0.5, label="flow")
        axes.set_xlabel("x")
        axes.set_ylabel("count")
        axes.legend()
        figure.tight_layout()
    else:
        figure = _scatter_pair(samples, values)

    return _save(figure, path)


def _scatter_pair(samples: Tensor, values: Tensor) -> Figure:
    bounds = _default_bounds(values[:, :2])
    figure = Figure(figsize=(8.4, 4))
    axes = figure.subplots(1, 2)
    for ax, points, title in ((axes[0], samples, "flow samples"), (axes[1], values, "data")):
        ax.scatter(points[:, 0].numpy(), points[:, 1].numpy(), s=2, alpha=0.5)
        ax.set_xlim(*bounds[0])
        ax.set_ylim(*bounds[1])
        ax.set_title(f"{title} ({len(points)} points)")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    figure.tight_layout()

    return figure


def _mosaic(images: Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Tiles up to ``_IMAGES_PER_SIDE ** 2`` flat images into one array, one pixel apart."""
    height, width = shape
    side = _IMAGES_PER_SIDE
    canvas = np.full((side * (height + 1) - 1, side * (width + 1) - 1), np.nan)
    for index, image in enumerate(images[: side * side]):
        row, column = divmod(index, side)
        top, left = row * (height + 1), column * (width + 1)
        canvas[top : top + height, left : left + width] = image.reshape(height, width).numpy()

    return canvas


def _image_grids(samples: Tensor, values: Tensor, shape: tuple[int, int]) -> Figure:
    # One colour scale for both grids, from the data, so the two can be compared.
    low, high = float(values.min()), float(values.max())

    figure = Figure(figsize=(8.4, 4.4))
    axes = figure.subplots(1, 2)
    for ax, images, title in ((axes[0], samples, "flow samples"), (axes[1], values, "data")):
        ax.imshow(_mosaic(images, shape), cmap="gray_r", vmin=low, vmax=high)
        ax.set_title(title)
        ax.set_axis_off()
    figure.tight_layout()

    return figure


def plot_training_curve(
    history: TrainingResult | Sequence[dict[str, Any]], path: str | os.PathLike[str]
) -> Path:
    """Plots training and validation NLL against the step and writes a PNG.

    Args:
        history: a :class:`~flowkit.training.TrainingResult` or its ``history`` rows (dicts
            with ``step``, ``train_nll``, ``validation_nll``); values stored as strings such
            as ``"inf"`` (checkpoint metadata) are read with ``float``, and non-finite points
            are left out.
        path: the PNG file; its folder is created.

    Returns:
        The path written.
    """
    rows = history.history if isinstance(history, TrainingResult) else list(history)
    if not rows:
        raise ValueError("the training history is empty; nothing to plot")
    path = _prepare_path(path)

    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for key, label in (("train_nll", "training"), ("validation_nll", "validation")):
        pairs = [
            (float(row["step"]), float(row[key]))
            for row in rows
            if key in row and math.isfinite(float(row[key]))
        ]
        if pairs:
            steps, losses = zip(*pairs, strict=True)
            axes.plot(steps, losses, marker="o", markersize=3, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("negative log-likelihood (nats)")
    axes.legend()
    figure.tight_layout()

    return _save(figure, path)
