"""Tests that every plot writes a PNG for the flows it is meant for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flowkit import build_flow, fit_data_dependent_layers, train
from flowkit.plots import plot_density, plot_samples, plot_training_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_SIGNATURE


def _flow(preset: str, features: int):
    """A small flow fitted to its data's scale; plots need no trained weights."""
    torch.manual_seed(0)
    flow = build_flow(preset, features=features, num_layers=1, hidden_features=8, num_bins=4)
    generator = torch.Generator().manual_seed(0)
    if preset == "unit-interval":
        data = 0.01 + 0.98 * torch.rand(300, features, generator=generator)
    else:
        data = torch.randn(300, features, generator=generator)
    fit_data_dependent_layers(flow, data)
    flow.eval()

    return flow, data


@pytest.mark.parametrize("features", [1, 2])
def test_density_plot(tmp_path: Path, features: int) -> None:
    flow, data = _flow("unbounded", features)

    def true_log_prob(x: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(dim=1)

    path = plot_density(
        flow, data.numpy(), tmp_path / "deep" / "d.png", grid_size=40, true_log_prob=true_log_prob
    )

    assert _is_png(path)


def test_density_plot_refuses_many_features(tmp_path: Path) -> None:
    flow, data = _flow("unbounded", 3)

    with pytest.raises(ValueError, match="plot_samples"):
        plot_density(flow, data, tmp_path / "d.png")
    with pytest.raises(ValueError, match="shape"):
        plot_samples(flow, data[:, :2], tmp_path / "s.png")


@pytest.mark.parametrize(
    ("preset", "features"),
    [("unbounded", 1), ("unbounded", 2), ("unbounded", 3), ("unit-interval", 64)],
)
def test_samples_plot(tmp_path: Path, preset: str, features: int) -> None:
    flow, data = _flow(preset, features)

    path = plot_samples(flow, data, tmp_path / "s.png", num_samples=200, seed=1)

    assert _is_png(path)


def test_samples_plot_with_image_shape(tmp_path: Path) -> None:
    flow, data = _flow("unit-interval", 6)

    assert _is_png(plot_samples(flow, data, tmp_path / "s.png", image_shape=(2, 3)))
    with pytest.raises(ValueError, match="image_shape"):
        plot_samples(flow, data, tmp_path / "t.png", image_shape=(4, 4))


def test_training_curve(tmp_path: Path) -> None:
    flow, data = _flow("unbounded", 2)
    result = train(flow, data, steps=4, batch_size=64, validation_interval=2, progress=False)

    assert _is_png(plot_training_curve(result, tmp_path / "t.png"))
    rows = [{"step": 1.0, "train_nll": 2.0, "validation_nll": "inf"}, *result.history]
    assert _is_png(plot_training_curve(rows, tmp_path / "rows.png"))
    with pytest.raises(ValueError, match="empty"):
        plot_training_curve([], tmp_path / "empty.png")
