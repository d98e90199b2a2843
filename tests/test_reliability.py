"""Faults and bad input end to end: a checkpoint writer killed mid-save, CLI data flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from flowkit.checkpoints import load, read_metadata
from flowkit.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = ["--layers", "1", "--hidden", "8", "--steps", "2", "--batch-size", "16", "--no-progress"]

WRITER = textwrap.dedent(
    """
    import sys
    import torch

    torch.set_num_threads(1)
    import flowkit

    path = sys.argv[1]
    # A wide flow makes each save take long enough to be caught half-way.
    flow = flowkit.build_flow("unbounded", features=2, num_layers=4, hidden_features=512)
    for version in range(1, 100000):
        flowkit.save(flow, path, metadata={"version": version})
        print(version, flush=True)
    """
)


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.001)

    return False


def test_writer_killed_mid_save_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "model.pt"
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    process = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
    )
    try:
        # After the first complete save, kill the writer while a temporary file exists,
        # that is, between the start of a write and its rename.
        first = process.stdout.readline()
        assert first.strip() == b"1", process.stderr.read().decode(errors="replace")[-2000:]
        mid_save = _wait_for(lambda: any(folder.glob(".model.pt.*.tmp")), 60)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
        process.stdout.close()
        process.stderr.close()

    assert mid_save, "the writer never showed a temporary file"
    assert process.returncode == -signal.SIGKILL
    leftovers = sorted(entry.name for entry in folder.iterdir() if entry.name != "model.pt")
    assert len(leftovers) <= 1 and all(name.endswith(".tmp") for name in leftovers), leftovers

    # The previous (or the just-renamed) version loads in full.
    flow = load(path)
    assert flow.features == 2
    assert read_metadata(path)["user"]["version"] >= 1


@pytest.fixture
def awkward_csv(tmp_path: Path) -> Path:
    """A three-column CSV with a non-finite value in rows 4 and 8 and a constant column 2."""
    values = np.random.default_rng(0).normal(size=(60, 3))
    values[:, 1] = 2.0
    values[3, 0] = np.nan
    values[7, 2] = np.inf
    path = tmp_path / "awkward.csv"
    np.savetxt(path, values, delimiter=",")

    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flowkit: error: "), err

    return err[0]


def test_train_drop_flags(awkward_csv: Path, tmp_path: Path, capsys) -> None:
    run = str(tmp_path / "run")

    assert main(["train", str(awkward_csv), "--out", run, *TINY]) == 1
    line = _error(capsys)
    assert "rows 4, 8" in line and "--drop-nonfinite" in line

    assert main(["train", str(awkward_csv), "--drop-nonfinite", "--out", run, *TINY]) == 1
    line = _error(capsys)
    assert "column 2" in line and "--drop-constant" in line

    argv = ["train", str(awkward_csv), "--drop-nonfinite", "--drop-constant", "--out", run]
    assert main([*argv, *TINY]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["features"] == 2 and metrics["steps_completed"] == 2


def test_train_batch_larger_than_the_data_is_refused(awkward_csv: Path, tmp_path, capsys):
    argv = ["train", str(awkward_csv), "--drop-nonfinite", "--drop-constant"]
    argv += ["--out", str(tmp_path / "run"), *TINY, "--batch-size", "500"]

    assert main(argv) == 1
    line = _error(capsys)
    assert "--batch-size 500" in line and "46 training points" in line
    assert not (tmp_path / "run").exists()


BAD_FILES = {
    "missing": (None, "no such file"),
    "empty": ("", "empty"),
    "header-only": ("a,b\n", "no data rows"),
    "ragged": ("a,b\n1,2\n3\n4,5\n", "row 3 has 1 columns"),
    "non-numeric": ("a,b\n1,2\n3,x\n4,5\n", "row 3, column 2"),
    "not-a-number": ("a,b\n1,2\nnan,3\n4,5\n", "row 3"),
    "infinite": ("a,b\n1,2\n3,inf\n4,5\n", "row 3"),
    "one-row": ("a,b\n1,2\n", "at least 2 row(s)"),
    "constant-column": ("a,b\n1,7\n2,7\n3,7\n", "constant"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_data_files_give_one_line_naming_the_file(case, tmp_path: Path, capsys) -> None:
    contents, message = BAD_FILES[case]
    path = tmp_path / f"{case}.csv"
    if contents is not None:
        path.write_text(contents)

    code = main(["train", str(path), "--out", str(tmp_path / "run"), "--no-progress"])

    error = capsys.readouterr().err
    assert code == 1
    assert error.count("\n") == 1 and error.startswith("flowkit: error:"), error
    assert f"{case}.csv" in error and message in error, error
    assert not (tmp_path / "run").exists()


def test_three_dimensional_npy_is_refused_with_its_shape(tmp_path: Path, capsys) -> None:
    path = tmp_path / "cube.npy"
    np.save(path, np.zeros((4, 2, 2)))

    assert main(["train", str(path), "--no-progress"]) == 1

    error = capsys.readouterr().err
    assert "cube.npy" in error and "(4, 2, 2)" in error


def test_logprob_scores_points_outside_the_support_as_minus_inf(tmp_path: Path, capsys):
    run = tmp_path / "run"
    train_options = ["--steps", "4", "--layers", "1", "--hidden", "8", "--no-progress"]
    assert main(["train", "gamma-lognormal", "--out", str(run), *train_options]) == 0
    points = tmp_path / "points.csv"
    points.write_text("x1,x2\n-1,2\n1,2\n3,-0.5\n0,0\n")
    capsys.readouterr()

    scores = tmp_path / "scores.npy"
    assert main(["logprob", str(run / "model.pt"), str(points), "-o", str(scores)]) == 0

    values = np.load(scores)
    assert np.isneginf(values[[0, 2, 3]]).all() and np.isfinite(values[1])
    assert "3 of 4 rows outside the support" in capsys.readouterr().out
