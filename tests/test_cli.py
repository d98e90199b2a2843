"""End-to-end tests of the flowkit command line on tiny budgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import error_line as _error_line

from flowkit import cli
from flowkit.checkpoints import read_metadata
from flowkit.cli import main

TINY = ["--layers", "1", "--hidden", "8", "--steps", "4", "--batch-size", "64", "--no-progress"]
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def positive_csv(tmp_path: Path) -> Path:
    """A two-column CSV of positive values with a header."""
    generator = np.random.default_rng(0)
    values = generator.gamma(2.0, 1.0, size=(300, 2)) + 0.5
    path = tmp_path / "positive.csv"
    np.savetxt(path, values, delimiter=",", header="a,b", comments="")

    return path


def test_datasets_lists_every_name(capsys) -> None:
    assert main(["datasets"]) == 0

    out = capsys.readouterr().out
    for name in ("moons", "checkerboard", "gamma-lognormal", "digits"):
        assert name in out


def test_train_sample_logprob_plot_on_a_toy(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"

    assert main(["train", "eight-gaussians", "--out", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    assert "true test NLL" in out and "KL estimate" in out
    for name in ("model.pt", "density.png", "training.png", "metrics.json"):
        assert (run / name).stat().st_size > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["preset"] == "unbounded"
    assert metrics["steps_completed"] == 4
    assert np.isfinite(metrics["test_nll_nats"]) and np.isfinite(metrics["kl_estimate_nats"])
    assert read_metadata(run / "model.pt")["dataset"] == "eight-gaussians"

    samples_csv, samples_npy = tmp_path / "s.csv", tmp_path / "out" / "s.npy"
    assert main(["sample", str(run / "model.pt"), "-n", "50", "-o", str(samples_csv)]) == 0
    assert main(["sample", str(run / "model.pt"), "-n", "50", "-o", str(samples_npy)]) == 0
    from_csv = np.loadtxt(samples_csv, delimiter=",")
    assert from_csv.shape == (50, 2) and np.all(np.isfinite(from_csv))
    assert np.allclose(np.load(samples_npy), from_csv, rtol=1e-6)

    scores = tmp_path / "scores.csv"
    capsys.readouterr()
    assert main(["logprob", str(run / "model.pt"), str(samples_csv), "-o", str(scores)]) == 0
    assert "0 of 50 rows outside" in capsys.readouterr().out
    assert np.loadtxt(scores).shape == (50,)

    assert main(["plot", str(run / "model.pt"), "-o", str(tmp_path / "p.png")]) == 0
    assert (
        main(
            [
                "plot",
                str(run / "model.pt"),
                "-o",
                str(tmp_path / "q.png"),
                "--kind",
                "samples",
                "--data",
                str(samples_csv),
            ]
        )
        == 0
    )
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"


def test_train_digits_reports_bits_per_dim(tmp_path: Path, capsys) -> None:
    run = tmp_path / "digits"
    options = [*TINY[:-5], "--steps", "2", "--batch-size", "32", "--no-progress"]

    assert main(["train", "digits", "--out", str(run), *options]) == 0

    assert "bits/dim" in capsys.readouterr().out
    assert (run / "samples.png").exists() and not (run / "density.png").exists()
    assert json.loads((run / "metrics.json").read_text())["preset"] == "unit-interval"


def test_train_file_with_automatic_lower_bounds(positive_csv: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"

    assert main(["train", str(positive_csv), "--lower", "auto", "--out", str(run), *TINY]) == 0

    out = capsys.readouterr().out
    assert "automatic lower bounds" in out and "lie below" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["preset"] == "bounded"
    assert len(metrics["auto_lower"]) == 2


def test_train_file_with_given_lower_bounds(positive_csv: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"

    assert main(["train", str(positive_csv), "--lower", "0,none", "--out", str(run), *TINY]) == 0

    config = read_metadata(run / "model.pt")["config"]
    assert config["preset"] == "bounded" and config["lower"] == [0.0, None]


def test_default_run_folders_are_always_new(positive_csv: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert main(["train", str(positive_csv), *TINY]) == 0
    assert main(["train", str(positive_csv), *TINY]) == 0

    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    assert all(run.name.startswith("positive-") and (run / "model.pt").exists() for run in runs)


def test_out_inside_shipped_checkpoints_is_refused(
    positive_csv: Path, tmp_path: Path, monkeypatch, capsys
):
    shipped = tmp_path / "checkpoints"
    shipped.mkdir()
    monkeypatch.setattr(cli, "SHIPPED_CHECKPOINTS", shipped)

    assert main(["train", str(positive_csv), "--out", str(shipped / "x"), *TINY]) == 1
    assert "shipped checkpoints" in _error_line(capsys)
    assert not (shipped / "x").exists()

    assert main(["train", str(positive_csv), "--out", str(shipped), "--force", *TINY]) == 0
    assert (shipped / "model.pt").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "no-such-set", "--no-progress"], "unknown data set"),
        (["train", "moons", "--preset", "bounded", "--no-progress"], "needs at least one finite"),
        (["sample", "absent.pt", "-n", "3", "-o", "s.csv"], "no such checkpoint"),
        (["plot", "absent.pt", "-o", "p.png"], "no such checkpoint"),
    ],
    ids=["unknown-data", "bounded-without-lower", "missing-checkpoint", "plot-missing"],
)
def test_errors_are_one_line(argv: list[str], message: str, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    assert main(argv) == 1

    assert message in _error_line(capsys)


def test_bad_inputs_to_a_checkpoint(positive_csv: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", str(positive_csv), "--out", str(run), *TINY]) == 0
    model = str(run / "model.pt")
    three = tmp_path / "three.npy"
    np.save(three, np.random.default_rng(1).normal(size=(10, 3)))
    capsys.readouterr()

    assert main(["logprob", model, str(three), "-o", str(tmp_path / "x.csv")]) == 1
    assert "3 feature(s)" in _error_line(capsys)
    assert main(["sample", model, "-n", "5", "-o", str(tmp_path / "x.txt")]) == 1
    assert ".csv or .npy" in _error_line(capsys)
    assert main(["train", str(positive_csv), "--lower", "1,2,3", *TINY]) == 1
    assert "--lower needs 2" in _error_line(capsys)
    assert main(["plot", model, "-o", str(tmp_path / "x.jpg")]) == 1
    assert ".png" in _error_line(capsys)


def test_usage_errors_are_one_line(capsys) -> None:
    assert main(["train", "moons", "--steps", "0"]) == 2
    assert "positive integer" in _error_line(capsys)
    assert main([]) == 2
    _error_line(capsys)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such checkpoint"):
        main(["--debug", "sample", str(tmp_path / "absent.pt"), "-n", "1", "-o", "s.csv"])


def test_module_entry_point_help() -> None:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [environment.get("PYTHONPATH")])]
    )

    completed = subprocess.run(
        [sys.executable, "-m", "flowkit", "--help"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    for verb in ("datasets", "train", "sample", "logprob", "plot"):
        assert verb in completed.stdout


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_signal_during_training_keeps_the_best_model(tmp_path: Path, signal_name: str) -> None:
    import os
    import signal
    import subprocess
    import threading
    import time

    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "flowkit",
        "train",
        "moons",
        "--steps",
        "1000000",
        "--layers",
        "1",
        "--hidden",
        "8",
        "--out",
        str(run),
    ]
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, env=environment)
    seen = bytearray()

    def read_stderr() -> None:
        while chunk := process.stderr.read(1):
            seen.extend(chunk)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while b"training" not in seen and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(getattr(signal, signal_name))
    code = process.wait(timeout=120)
    reader.join(timeout=5)
    process.stderr.close()

    assert code == 130, bytes(seen).decode(errors="replace")[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stop_reason"] == "interrupted"
    assert (run / "model.pt").exists()


def test_train_refuses_to_overwrite_an_earlier_run(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "moons", "--out", str(run), *TINY]) == 0
    before = (run / "model.pt").read_bytes()

    assert main(["train", "moons", "--out", str(run), *TINY]) == 1

    assert "already holds a model.pt" in capsys.readouterr().err
    assert (run / "model.pt").read_bytes() == before
    assert main(["train", "moons", "--out", str(run), "--force", *TINY]) == 0


def test_checkpoint_with_damaged_weights_gives_one_line(tmp_path: Path, capsys) -> None:
    import torch

    import flowkit

    run = tmp_path / "run"
    assert main(["train", "moons", "--out", str(run), *TINY]) == 0
    flow = flowkit.load(run / "model.pt")
    payload = torch.load(run / "model.pt", weights_only=True)
    damaged = next(key for key, value in payload["state_dict"].items() if value.numel() > 4)
    payload["state_dict"][damaged] = payload["state_dict"][damaged].clone().fill_(1e30)
    torch.save(payload, tmp_path / "damaged.pt")
    capsys.readouterr()

    code = main(["sample", str(tmp_path / "damaged.pt"), "-n", "5", "-o", str(tmp_path / "s.csv")])

    error = capsys.readouterr().err
    assert code == 1 and error.count("\n") == 1
    assert "do not match their stored SHA-256 checksum" in error
    assert flow.features == 2


def test_unexpected_errors_still_give_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import flowkit.cli as cli

    def broken(*arguments, **options):
        raise AssertionError("deep inside a layer")

    monkeypatch.setattr(cli, "load_dataset", broken)

    assert main(["train", "moons", "--out", str(tmp_path / "run"), *TINY]) == 1

    error = capsys.readouterr().err
    assert error.startswith("flowkit: internal error: AssertionError: deep inside a layer")
    assert error.count("\n") == 1


def test_a_run_refused_once_training_starts_leaves_no_empty_folder(tmp_path: Path, capsys) -> None:
    below = tmp_path / "below.csv"
    values = np.abs(np.random.default_rng(1).normal(size=(200, 2))) + 0.5
    values[:20, 0] = -0.5
    np.savetxt(below, values, delimiter=",")
    kept = tmp_path / "kept"
    kept.mkdir()

    for folder in (tmp_path / "new", kept):
        arguments = ["train", str(below), "--preset", "bounded", "--lower", "0,none"]
        assert main([*arguments, "--out", str(folder), *TINY]) == 1
        assert "at or below its lower bound" in _error_line(capsys)

    assert not (tmp_path / "new").exists()
    assert kept.is_dir()
