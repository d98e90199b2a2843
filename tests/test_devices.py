"""Devices, dtypes, device-independent checkpoints, bf16 conditioners and chunked CSV reading."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flowkit import checkpoints
from flowkit.cli import main
from flowkit.data import DataError, load_array
from flowkit.data import files as data_files
from flowkit.devices import check_mixed_precision, conditioner_autocast, resolve_device
from flowkit.nets import ResidualConditioner
from flowkit.presets import build_flow, fit_data_dependent_layers
from flowkit.training import train

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
without_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")


def _flows() -> list[torch.nn.Module]:
    """One flow per kind of base: plain normal, truncated (ELU tail), lower bounds."""
    return [
        build_flow("unbounded", features=2, num_layers=2, hidden_features=8),
        build_flow("unbounded", features=2, num_layers=2, hidden_features=8, elu_tail=True),
        build_flow("bounded", features=2, num_layers=2, hidden_features=8, lower=[0.0, None]),
    ]


# --- choosing a device ------------------------------------------------------------------------


def test_cpu_and_auto_without_gpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", ""])
def test_unknown_device_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
        resolve_device(name)


@without_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_clear_error(name: str) -> None:
    with pytest.raises(ValueError, match="sees no CUDA device"):
        resolve_device(name)
    flow = build_flow("unbounded", features=2, num_layers=1, hidden_features=4)
    with pytest.raises(ValueError, match="sees no CUDA device"):
        train(flow, torch.randn(64, 2), steps=1, batch_size=8, progress=False, device=name)


@without_cuda
def test_cli_device_flag_reports_missing_cuda(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["train", "moons", "--steps", "1", "--device", "cuda", "--out", str(tmp_path)])

    assert status == 1
    assert "sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "model.pt").exists()


def test_train_moves_the_flow_to_the_device() -> None:
    flow = build_flow("unbounded", features=2, num_layers=1, hidden_features=4)
    result = train(flow, torch.randn(128, 2), steps=2, batch_size=16, progress=False, device="cpu")

    assert result.steps_completed == 2
    assert all(tensor.device.type == "cpu" for tensor in flow.state_dict().values())


# --- dtypes and devices of what a flow creates ------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_everything_a_flow_makes_follows_its_dtype(dtype: torch.dtype) -> None:
    data = torch.randn(256, 2).abs() + 0.1
    for flow in _flows():
        fit_data_dependent_layers(flow, data)
        flow.to(dtype)
        flow.eval()

        lower, upper = flow.base_box()
        noise = flow._sample_base(16, dtype, None)
        samples, log_probs = flow.sample_and_log_prob(64)
        scored = flow.log_prob(data.to(dtype))
        chunks = list(flow.sample_in_chunks(5, chunk_size=2))

        assert lower.dtype == upper.dtype == noise.dtype == dtype
        assert samples.dtype == log_probs.dtype == scored.dtype == dtype
        assert all(chunk.dtype == dtype for chunk in chunks)
        assert torch.isfinite(samples).all() and torch.isfinite(scored).all()
        floating = [value for value in flow.state_dict().values() if value.is_floating_point()]
        assert all(value.dtype == dtype for value in floating)


def test_float32_and_float64_flows_agree() -> None:
    data = torch.randn(256, 2)
    flow = _flows()[1]
    fit_data_dependent_layers(flow, data)
    flow.eval()

    wide = flow.log_prob(data)
    narrow = flow.to(torch.float32).log_prob(data.float())

    torch.testing.assert_close(narrow.double(), wide, rtol=1e-4, atol=1e-4)


def test_base_noise_boxes_and_masks_follow_the_meta_device() -> None:
    # The meta device stands in for a GPU: anything made on the CPU by mistake shows.
    for flow in _flows():
        flow.to("meta")
        lower, upper = flow.base_box()
        noise = flow._sample_base(8, torch.float32, None)

        assert lower.device.type == upper.device.type == noise.device.type == "meta"
        assert all(value.device.type == "meta" for value in flow.state_dict().values())
        assert all(buffer.device.type == "meta" for buffer in flow.buffers())


def test_mismatched_devices_are_named() -> None:
    flow = _flows()[0].to("meta")

    with pytest.raises(ValueError, match="inputs are on cpu but the flow is on meta"):
        flow.log_prob(torch.zeros(3, 2))


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoints_store_cpu_tensors_and_load_on_cpu(tmp_path: Path) -> None:
    flow = _flows()[1]
    fit_data_dependent_layers(flow, torch.randn(128, 2))
    result = train(flow, torch.randn(128, 2), steps=2, batch_size=16, progress=False)
    path = checkpoints.save(flow, tmp_path / "model.pt", training=result)

    payload = torch.load(path, weights_only=True, map_location="meta")
    loaded = checkpoints.load(path)

    # Loading onto meta keeps no device of the saving run; reading the file onto the CPU
    # (the default) gives the same numbers as the flow that was saved.
    assert all(value.device.type == "meta" for value in payload["state_dict"].values())
    assert all(value.device.type == "cpu" for value in loaded.state_dict().values())
    points = torch.randn(32, 2)
    torch.testing.assert_close(loaded.log_prob(points), flow.eval().log_prob(points))


class _DeviceTensor(torch.Tensor):
    """A tensor that counts its moves to the CPU, standing in for one on a GPU."""

    moves = 0

    def cpu(self, *args, **kwargs) -> torch.Tensor:
        type(self).moves += 1
        return torch.Tensor.cpu(self, *args, **kwargs).as_subclass(torch.Tensor)


def test_saving_moves_every_tensor_to_the_cpu() -> None:
    def tensor() -> torch.Tensor:
        return torch.zeros(2).as_subclass(_DeviceTensor)

    _DeviceTensor.moves = 0
    nested = {"a": tensor(), "b": [tensor(), 3], "c": (tensor(),), "d": "text"}

    moved = checkpoints._on_cpu({"outer": nested, "e": tensor()})

    assert _DeviceTensor.moves == 4
    assert type(moved["outer"]["a"]) is torch.Tensor and type(moved["e"]) is torch.Tensor
    assert moved["outer"]["b"][1] == 3 and moved["outer"]["d"] == "text"
    assert isinstance(moved["outer"]["c"], tuple)


# --- mixed precision --------------------------------------------------------------------------


def test_bf16_is_refused_off_cuda() -> None:
    with pytest.raises(ValueError, match="CUDA devices only"):
        check_mixed_precision("bf16", torch.device("cpu"))
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        check_mixed_precision("fp8", torch.device("cpu"))
    assert check_mixed_precision(None, torch.device("cpu")) == "none"
    flow = build_flow("unbounded", features=2, num_layers=1, hidden_features=4)
    with pytest.raises(ValueError, match="CUDA devices only"):
        train(flow, torch.randn(64, 2), steps=1, progress=False, mixed_precision="bf16")


def test_autocast_reaches_the_conditioners_only() -> None:
    # CPU autocast checks the wrapping; training refuses it, but the mechanism is the same.
    torch.set_default_dtype(torch.float32)
    flow = build_flow("unbounded", features=2, num_layers=2, hidden_features=8)
    fit_data_dependent_layers(flow, torch.randn(256, 2))
    seen: dict[str, set[torch.dtype]] = {"linear": set(), "conditioner": set()}
    for module in flow.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(lambda m, i, o: seen["linear"].add(o.dtype))
        if isinstance(module, ResidualConditioner):
            module.register_forward_hook(lambda m, i, o: seen["conditioner"].add(o.dtype))
    points = torch.randn(64, 2)

    with conditioner_autocast(flow, device_type="cpu") as wrapped:
        log_probs = flow.log_prob(points)
        noise, logabsdet, _ = flow.transform_to_noise(points)
    inside = seen["linear"].copy()
    seen["linear"].clear()
    plain = flow.log_prob(points)

    assert wrapped == 2
    assert inside == {torch.bfloat16}
    assert seen["linear"] == {torch.float32}
    assert seen["conditioner"] == {torch.float32}
    assert log_probs.dtype == logabsdet.dtype == noise.dtype == torch.float32
    # bf16 keeps about 3 significant digits in the conditioners' outputs.
    torch.testing.assert_close(log_probs, plain, rtol=0.05, atol=0.05)


@requires_cuda
def test_training_on_cuda_with_bf16_conditioners(tmp_path: Path) -> None:
    torch.set_default_dtype(torch.float32)
    flow = build_flow("unbounded", features=2, num_layers=2, hidden_features=16)
    data = torch.randn(2048, 2) * torch.tensor([1.0, 0.3])
    result = train(
        flow, data, steps=50, batch_size=128, progress=False, device="cuda", mixed_precision="bf16"
    )

    assert result.stop_reason == "completed" and math.isfinite(result.best_validation_nll)
    assert flow.log_normalizer.device.type == "cuda"
    assert flow.log_prob(data[:8].cuda()).dtype == torch.float32
    assert flow.sample(8).device.type == "cuda"
    loaded = checkpoints.load(checkpoints.save(flow, tmp_path / "model.pt", training=result))
    assert loaded.log_normalizer.device.type == "cpu"


# --- CSV read in chunks -----------------------------------------------------------------------


def test_csv_read_in_chunks_matches_one_block(tmp_path: Path) -> None:
    values = np.random.default_rng(1).normal(size=(23, 3))
    path = tmp_path / "table.csv"
    lines = ["a,b,c"] + [",".join(f"{v:.17g}" for v in row) for row in values]
    lines.insert(5, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    whole = load_array(path)
    chunked = data_files._read_csv(str(path), chunk_rows=4)

    np.testing.assert_array_equal(whole.values, values)
    np.testing.assert_array_equal(chunked[0], values)
    assert chunked[1].tolist() == [2, 3, 4, 5] + list(range(7, 26))
    assert chunked[2] == ["a", "b", "c"]


def test_csv_errors_in_later_chunks_name_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    rows = [f"{index},{index * 2}" for index in range(30)]
    rows[17] = "1.5,oops"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    with pytest.raises(DataError, match=r"row 18, column 2: expected a number, found 'oops'"):
        data_files._read_csv(str(path), chunk_rows=4)
    rows[17] = "1.5,2,3"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="row 18 has 3 columns, expected 2 as in row 1"):
        data_files._read_csv(str(path), chunk_rows=4)
