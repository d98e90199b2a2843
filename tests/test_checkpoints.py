"""Tests of checkpoint saving and loading: exact round trips, atomic writes, safe loading."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from nflows.transforms import ActNorm

from flowkit import Flow, build_flow, fit_data_dependent_layers, train
from flowkit.checkpoints import (
    CHECKPOINT_FORMAT,
    SCHEMA_VERSION,
    CheckpointError,
    json_ready,
    load,
    read_metadata,
    save,
)
from flowkit.transforms import Standardize

CASES = {
    "unbounded": ("unbounded", 2, {}),
    "bounded": ("bounded", 2, {"lower": [0.0, None]}),
    "unit-interval": ("unit-interval", 3, {}),
    "one-feature": ("unbounded", 1, {}),
}


def _data(preset: str, features: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if preset == "unit-interval":
        return 0.01 + 0.98 * torch.rand(400, features, generator=generator)
    if preset == "bounded":
        return 0.01 + torch.rand(400, features, generator=generator).pow(2) * 3

    return torch.randn(400, features, generator=generator)


def _trained(name: str, steps: int = 0):
    """A small flow fitted to its data, trained for ``steps`` or else perturbed at random.

    Perturbing every parameter keeps the round trip from passing on identity-initialised
    layers, and is much cheaper than training.
    """
    preset, features, options = CASES[name]
    torch.manual_seed(0)
    flow = build_flow(preset, features=features, num_layers=1, hidden_features=8, **options)
    data = _data(preset, features)
    fit_data_dependent_layers(flow, data)
    result = None
    if steps:
        result = train(
            flow, data, steps=steps, batch_size=64, validation_interval=2, progress=False
        )
    else:
        with torch.no_grad():
            for parameter in flow.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
    flow.eval()

    return flow, data, result


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_is_bit_exact(tmp_path: Path, name: str) -> None:
    flow, data, result = _trained(name)

    path = save(flow, tmp_path / "model.pt", training=result, dataset="toy")
    loaded = load(path)

    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(flow.log_prob(data), loaded.log_prob(data))
    assert loaded.config == flow.config


def test_float64_round_trip_keeps_the_dtype(tmp_path: Path) -> None:
    flow, data, _ = _trained("unbounded")
    flow = flow.double()

    loaded = load(save(flow, tmp_path / "model.pt"))

    with torch.no_grad():
        assert torch.equal(flow.log_prob(data.double()), loaded.log_prob(data.double()))


def test_metadata_holds_provenance_and_training(tmp_path: Path) -> None:
    flow, _, result = _trained("unbounded", steps=4)

    path = save(
        flow,
        tmp_path / "model.pt",
        training=result,
        dataset="moons",
        metadata={"note": "hello", "worst": float("inf"), "missing": float("nan")},
    )
    metadata = read_metadata(path)

    for key in ("flowkit_version", "torch_version", "nflows_version", "python_version"):
        assert isinstance(metadata[key], str)
    assert metadata["created_utc"].endswith("+00:00")
    assert metadata["dataset"] == "moons"
    assert metadata["training"]["steps_completed"] == 4
    assert metadata["training"]["best_step"] == result.best_step
    assert metadata["training"]["stop_reason"] == "completed"
    assert len(metadata["training"]["history"]) == 2
    assert metadata["training"]["arguments"]["batch_size"] == 64
    assert metadata["user"] == {"note": "hello", "worst": "inf", "missing": "nan"}
    assert metadata["config"]["preset"] == "unbounded"


def test_json_ready_keeps_json_standard() -> None:
    value = json_ready({"a": [float("-inf"), 1.5, torch.tensor(2.0)], 3: (True, None)})

    assert value == {"a": ["-inf", 1.5, 2.0], "3": [True, None]}
    json.dumps(value, allow_nan=False)
    with pytest.raises(TypeError, match="object"):
        json_ready({"bad": object()})


def test_failed_write_leaves_the_old_checkpoint(tmp_path: Path, monkeypatch) -> None:
    flow, data, _ = _trained("unbounded")
    path = save(flow, tmp_path / "model.pt")
    before = path.read_bytes()

    def broken_save(payload, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save(flow, path)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    with torch.no_grad():
        assert torch.equal(load(path).log_prob(data), flow.log_prob(data))


class _Payload:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_code_in_the_file_is_never_run(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    payload = {"format": CHECKPOINT_FORMAT, "schema_version": 1, "x": _Payload(marker)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))

    with pytest.raises(CheckpointError, match="not loaded") as caught:
        load(path)

    assert str(path) in str(caught.value)
    assert not marker.exists()


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    flow, _, _ = _trained("unbounded")
    path = save(flow, tmp_path / "model.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(CheckpointError, match="truncated"):
        load(path)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"weights": torch.ones(2)}, "not a flowkit checkpoint"),
        (torch.ones(3), "not a flowkit checkpoint"),
        ({"format": CHECKPOINT_FORMAT, "schema_version": SCHEMA_VERSION + 1}, "newer"),
        ({"format": CHECKPOINT_FORMAT, "schema_version": 1}, "missing"),
    ],
    ids=["other-dict", "tensor", "newer-schema", "missing-keys"],
)
def test_other_files_are_refused(tmp_path: Path, payload, message: str) -> None:
    path = tmp_path / "other.pt"
    torch.save(payload, path)

    with pytest.raises(CheckpointError, match=message):
        load(path)


def test_missing_and_garbage_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load(tmp_path / "absent.pt")

    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load(tmp_path / "text.pt")

    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as archive:
        archive.writestr("data.txt", "not torch")
    with pytest.raises(CheckpointError):
        load(tmp_path / "zip.pt")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    flow, _, _ = _trained("unbounded")
    path = save(flow, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    config = json.loads(payload["config_json"])
    config["hidden_features"] = 16
    payload["config_json"] = json.dumps(config)
    torch.save(payload, path)

    with pytest.raises(CheckpointError, match="do not fit"):
        load(path)


def test_hand_built_flow_cannot_be_saved(tmp_path: Path) -> None:
    flow = Flow([Standardize(2), ActNorm(2)], features=2)

    with pytest.raises(ValueError, match="assembled by hand"):
        save(flow, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()
