"""Multi-process training on the CPU: torchrun with 2 gloo processes on the loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="this torch build has no gloo backend",
)

WORKER = Path(__file__).resolve().parent / "distributed_worker.py"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment() -> dict[str, str]:
    environment = dict(os.environ)
    # One thread per rank: the two ranks share the test machine's cores.
    environment.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    return environment


def _torchrun(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        *arguments,
    ]

    return subprocess.run(
        command, cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = tmp_path_factory.mktemp("ranks")
    finished = _torchrun([str(WORKER), str(folder)], cwd=folder)
    assert finished.returncode == 0, finished.stderr[-3000:]

    return [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


def test_broadcast_gives_every_rank_rank_zeros_actnorm(worker_results: list[dict]) -> None:
    first, second = worker_results
    before = [first["actnorm_before_broadcast"], second["actnorm_before_broadcast"]]
    after = [first["actnorm_after_broadcast"], second["actnorm_after_broadcast"]]

    # The ranks fitted different data, so the check below can fail.
    assert any(not torch.equal(before[0][key], before[1][key]) for key in before[0])
    for key in after[0]:
        assert torch.equal(after[0][key], after[1][key]), key
        assert torch.equal(after[1][key], before[0][key]), key


def test_training_fits_on_rank_zero_and_keeps_ranks_identical(
    worker_results: list[dict],
) -> None:
    first, second = worker_results

    # The standardization is rank 0's, although rank 1 trained on other data.
    assert not torch.allclose(first["data_mean"], second["data_mean"])
    for result in worker_results:
        torch.testing.assert_close(result["standardize_mean"], first["data_mean"])
    for key, value in first["trained_state"].items():
        assert torch.equal(value, second["trained_state"][key]), key
    # Every figure of the history agrees, apart from each rank's clock.
    for rows in zip(first["trained_history"], second["trained_history"], strict=True):
        assert {key: value for key, value in rows[0].items() if key != "seconds"} == {
            key: value for key, value in rows[1].items() if key != "seconds"
        }
    assert first["trained_stop"] == second["trained_stop"] == ("completed", 6)


def test_ranks_agree_on_every_stop(worker_results: list[dict]) -> None:
    first, second = worker_results

    assert first["agree_one"] and second["agree_one"]
    assert not first["agree_none"] and not second["agree_none"]
    for result in worker_results:
        assert "divisible by the 2 processes" in result["odd_batch_error"]
    # SIGTERM reached rank 1 alone during step 5; both stopped after step 4.
    assert first["interrupted"] == second["interrupted"] == ("interrupted", 4)
    # Rank 1's batch alone overflowed at step 3; both stopped there.
    assert first["overflow"] == second["overflow"] == ("non-finite loss", 2)


def test_torchrun_matches_one_process_run(tmp_path: Path) -> None:
    generator = np.random.default_rng(0)
    points = generator.normal(size=(3000, 2)) @ np.array([[1.0, 0.6], [0.0, 0.8]])
    points[:, 1] += 0.5 * points[:, 0] ** 2
    data = tmp_path / "points.npy"
    np.save(data, points)
    flags = ["--steps", "60", "--batch-size", "64", "--layers", "1", "--hidden", "8"]
    flags += ["--no-progress", "--seed", "3", "--device", "cpu"]

    # The one-process run goes alongside the two-process one, to halve the wall time.
    solo = subprocess.Popen(
        [sys.executable, "-m", "flowkit", "train", str(data), *flags, "--out", "one"],
        cwd=tmp_path,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    two = _torchrun(["-m", "flowkit", "train", str(data), *flags, "--out", "two"], tmp_path)
    _, solo_errors = solo.communicate(timeout=120)

    assert two.returncode == 0, two.stderr[-3000:]
    assert solo.returncode == 0, solo_errors[-3000:]
    # Only rank 0 wrote: one checkpoint, one summary, no default run folder.
    assert sorted(path.parent.name for path in (tmp_path / "two").rglob("model.pt")) == ["two"]
    assert not (tmp_path / "runs").exists()
    assert two.stdout.count("wrote ") == 1
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("one", "two")]
    assert metrics[0]["steps_completed"] == metrics[1]["steps_completed"] == 60
    assert metrics[1]["best_validation_nll_nats"] == pytest.approx(
        metrics[0]["best_validation_nll_nats"], abs=0.02
    )
