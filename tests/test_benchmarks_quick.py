"""Smoke test of the nflows comparison benchmark with its tiny ``--quick`` budgets."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.compare_nflows import main


def test_quick_benchmark_writes_expected_report(tmp_path: Path) -> None:
    report = main(["--quick", "--out", tmp_path])

    written = json.loads((tmp_path / "compare_nflows.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert (tmp_path / "compare_nflows.md").read_text().startswith("# flowkit vs nflows")
    for key in ("command", "machine", "versions", "budget", "moons", "digits", "sweep"):
        assert key in written
    assert {"platform", "cpu_count"} <= set(written["machine"])
    assert {"torch", "nflows", "flowkit"} <= set(written["versions"])
    assert "--quick" in written["command"]

    moons = written["moons"]
    assert set(moons["models"]) == {"flowkit", "nflows-realnvp", "nflows-nsf"}
    assert math.isfinite(moons["true_test_nll"])
    for run in moons["models"].values():
        assert math.isfinite(run["test_nll"])
        assert abs(run["parameter_ratio"] - 1) <= 0.10

    digits = written["digits"]
    assert set(digits["models"]) == {"flowkit", "nflows-realnvp", "nflows-nsf"}
    for run in digits["models"].values():
        assert math.isfinite(run["test_bits_per_dim"])

    sweep = written["sweep"]
    assert len(sweep["rows"]) == 7
    for row in sweep["rows"]:
        assert set(row["runs"]) == {"spline+elu", "spline", "affine+elu", "affine"}
        for run in row["runs"].values():
            assert "test_nll" not in run
            assert math.isfinite(run["validation_nll"])


def test_quick_elu_speed_writes_its_table(tmp_path: Path) -> None:
    from benchmarks.elu_speed import main as elu_main

    report = elu_main(["--quick", "--out", tmp_path])

    assert set(report["rows"]) == {"forward_with_log_det", "inverse_with_log_det"}
    assert all(row["eager_ratio"] > 0 for row in report["rows"].values())
    assert (tmp_path / "elu_speed.md").read_text().startswith("# ELU layer")


def test_quick_quality_benchmark_reports_kl_for_every_model(tmp_path: Path) -> None:
    from benchmarks.quality import PEERS
    from benchmarks.quality import main as quality_main

    report = quality_main(["--quick", "--sets", "moons,gamma-lognormal", "--out", tmp_path])

    for row in report["rows"].values():
        assert set(row["runs"]) == {"flowkit", *PEERS}
        flowkit_parameters = row["runs"]["flowkit"]["parameters"]
        for run in row["runs"].values():
            assert abs(run["parameters"] / flowkit_parameters - 1) <= 0.10
            assert math.isfinite(run["test_nll"])
    assert report["rows"]["gamma-lognormal"]["runs"]["flowkit"]["preset"] == "bounded"
    assert (tmp_path / "quality.md").exists()
