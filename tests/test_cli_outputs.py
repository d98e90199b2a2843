"""The command line never loses or half-writes an output, and refuses bad devices cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import error_line as _error_line

from flowkit.cli import main

MOONS = Path(__file__).resolve().parent.parent / "checkpoints" / "moons" / "model.pt"


@pytest.fixture
def points(tmp_path: Path) -> Path:
    path = tmp_path / "points.npy"
    np.save(path, np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32))

    return path


@pytest.fixture
def late_nan(tmp_path: Path) -> Path:
    # The NaN sits past the first streamed chunk, so earlier chunks are scored first.
    values = np.zeros((20_000, 2), dtype=np.float32)
    values[15_000, 0] = np.nan
    path = tmp_path / "late_nan.npy"
    np.save(path, values)

    return path


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_failed_logprob_keeps_the_earlier_output(
    points: Path, late_nan: Path, tmp_path: Path, suffix: str, capsys
) -> None:
    output = tmp_path / f"scores{suffix}"
    assert main(["logprob", str(MOONS), str(points), "-o", str(output)]) == 0
    before = output.read_bytes()
    capsys.readouterr()

    assert main(["logprob", str(MOONS), str(late_nan), "-o", str(output)]) == 1

    assert "NaN or infinite" in _error_line(capsys)
    assert output.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        ["points.npy", "late_nan.npy", output.name]
    )


def test_failed_logprob_leaves_no_half_written_file(late_nan: Path, tmp_path: Path, capsys):
    output = tmp_path / "new.npy"

    assert main(["logprob", str(MOONS), str(late_nan), "-o", str(output)]) == 1

    _error_line(capsys)
    assert not output.exists()
    assert not any(path.name.startswith(".new") for path in tmp_path.iterdir())


@pytest.mark.parametrize("command", ["logprob", "score"])
def test_empty_npy_names_the_file(command: str, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    output = tmp_path / "out.csv"

    assert (
        main(
            [
                command,
                str(MOONS),
                str(empty),
                *(["-o"] if command == "logprob" else ["--out"]),
                str(output),
            ]
        )
        == 1
    )

    line = _error_line(capsys)
    assert "empty.npy" in line and "internal error" not in line
    assert not output.exists()


def test_sample_accepts_an_indexed_cpu_device(tmp_path: Path) -> None:
    output = tmp_path / "s.npy"

    assert main(["sample", str(MOONS), "-n", "7", "-o", str(output), "--device", "cpu:0"]) == 0

    assert np.load(output).shape == (7, 2)


@pytest.mark.parametrize("command", ["sample", "logprob", "train"])
def test_meta_device_is_refused(command: str, points: Path, tmp_path: Path, capsys) -> None:
    arguments = {
        "sample": ["sample", str(MOONS), "-n", "5", "-o", str(tmp_path / "s.npy")],
        "logprob": ["logprob", str(MOONS), str(points), "-o", str(tmp_path / "l.npy")],
        "train": ["train", "moons", "--steps", "2", "--out", str(tmp_path / "run")],
    }[command]

    assert main([*arguments, "--device", "meta"]) == 1

    assert "--device must be" in _error_line(capsys)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["points.npy"]


def test_refused_mixed_precision_leaves_no_run_folder(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"

    assert main(["train", "moons", "--steps", "2", "--out", str(run), "--mixed-precision", "bf16"])

    assert "bf16" in _error_line(capsys)
    assert not run.exists()


def test_a_data_file_given_as_checkpoint_is_called_what_it_is(points: Path, capsys) -> None:
    assert main(["sample", str(points), "-n", "3", "-o", str(points.with_name("s.npy"))]) == 1

    line = _error_line(capsys)
    assert "not a torch.save archive" in line and "data file" in line
    assert not points.with_name("s.npy").exists()


def test_a_reader_that_stops_early_is_not_an_error(tmp_path: Path) -> None:
    many = tmp_path / "many.npy"
    np.save(many, np.zeros((50_000, 2), dtype=np.float32))
    command = [sys.executable, "-m", "flowkit", "score", str(MOONS), str(many)]

    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        header = process.stdout.readline()
        process.stdout.close()
        error = process.stderr.read().decode()
        status = process.wait(timeout=120)

    assert header.startswith(b"log_likelihood")
    assert status in (0, 141)
    assert "error" not in error and "Traceback" not in error
