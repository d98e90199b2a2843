"""Resuming training: a paused run continued from its checkpoint repeats an unbroken run."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from flowkit import build_flow, load, save, train
from flowkit import cli as cli_module
from flowkit.checkpoints import CheckpointError, read_training_state
from flowkit.cli import main

ARGUMENTS = {
    "steps": 12,
    "batch_size": 32,
    "validation_interval": 5,
    "patience": 100,
    "seed": 1,
    "progress": False,
}


def _fresh_flow():
    torch.manual_seed(0)
    return build_flow("unbounded", features=2, num_layers=1, hidden_features=8)


def _data() -> torch.Tensor:
    return torch.randn(300, 2, generator=torch.Generator().manual_seed(3))


def _same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    first_state, second_state = first.state_dict(), second.state_dict()
    return first_state.keys() == second_state.keys() and all(
        torch.equal(first_state[key], second_state[key]) for key in first_state
    )


@pytest.mark.parametrize("pause", [5, 6])
def test_paused_and_resumed_run_is_bit_identical(tmp_path: Path, pause: int) -> None:
    # Pausing on a validation step (5) and between validations (6) both need every counter.
    data = _data()
    whole = _fresh_flow()
    whole_result = train(whole, data, **ARGUMENTS)

    first = _fresh_flow()
    paused = train(first, data, stop_after=pause, **ARGUMENTS)
    assert paused.stop_reason == "paused" and paused.steps_completed == pause
    path = save(first, tmp_path / "model.pt", training=paused)
    resumed_flow = load(path)
    resumed = train(resumed_flow, data, resume=read_training_state(path), **ARGUMENTS)

    assert resumed.steps_completed == 12 and resumed.stop_reason == "completed"
    assert _same_weights(whole, resumed_flow)
    assert resumed.best_step == whole_result.best_step
    without_time = [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history]
    assert without_time == [
        {k: v for k, v in row.items() if k != "seconds"} for row in whole_result.history
    ]


def test_resume_refuses_another_run(tmp_path: Path) -> None:
    data = _data()
    flow = _fresh_flow()
    result = train(flow, data, stop_after=4, **ARGUMENTS)
    state = result.resume_state

    with pytest.raises(ValueError, match="training data differ"):
        train(load(save(flow, tmp_path / "m.pt")), data + 1, resume=state, **ARGUMENTS)
    with pytest.raises(ValueError, match=r"batch_size 32 -> 16"):
        train(flow, data, resume=state, **{**ARGUMENTS, "batch_size": 16})
    with pytest.raises(ValueError, match="already taken 4 steps"):
        train(flow, data, resume=state, **{**ARGUMENTS, "steps": 4})
    with pytest.raises(ValueError, match="lacks"):
        train(flow, data, resume={"step": 1}, **ARGUMENTS)
    with pytest.raises(ValueError, match="stop_after"):
        train(flow, data, stop_after=0, **ARGUMENTS)

    save(flow, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="no training state"):
        read_training_state(tmp_path / "plain.pt")


def test_cli_resume_matches_an_unbroken_run(tmp_path: Path, monkeypatch, capsys) -> None:
    common = ["--batch-size", "32", "--steps", "10", "--no-progress"]
    tiny = ["--layers", "1", "--hidden", "8", *common]
    assert main(["train", "circles", "--out", str(tmp_path / "whole"), *tiny]) == 0

    # The CLI's own run, stopped half-way as a signal between two steps would stop it.
    monkeypatch.setattr(cli_module, "train", functools.partial(train, stop_after=5))
    assert main(["train", "circles", "--out", str(tmp_path / "first"), *tiny]) == 0
    monkeypatch.undo()
    first = json.loads((tmp_path / "first" / "metrics.json").read_text())
    assert first["stop_reason"] == "paused" and first["steps_completed"] == 5

    checkpoint = str(tmp_path / "first" / "model.pt")
    resumed_out = str(tmp_path / "resumed")
    argv = ["train", "circles", "--resume", checkpoint, "--out", resumed_out, *common]
    assert main(argv) == 0

    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["steps_completed"] == 10 and metrics["resumed_at_step"] == 5
    assert _same_weights(load(tmp_path / "whole" / "model.pt"), load(resumed_out + "/model.pt"))
    capsys.readouterr()

    # The architecture is the checkpoint's: a flag asking for another one is refused.
    assert main(["train", "circles", "--resume", checkpoint, "--layers", "1", *common]) == 1
    assert "drop --layers" in capsys.readouterr().err
