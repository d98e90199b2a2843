"""Smoke test of the nflows comparison benchmark with its tiny ``--quick`` budgets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.compare_nflows import main

ZUKO = ("zuko-nsf", "zuko-maf")


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
    assert set(moons["models"]) == {"flowkit", "nflows-realnvp", "nflows-nsf", *ZUKO}
    assert math.isfinite(moons["true_test_nll"])
    for run in moons["models"].values():
        assert math.isfinite(run["test_nll"])
        assert abs(run["parameter_ratio"] - 1) <= 0.10

    digits = written["digits"]
    assert set(digits["models"]) == {"flowkit", "nflows-realnvp", "nflows-nsf", *ZUKO}
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
        versus = row["flowkit_minus_best_peer"]
        best = min(row["runs"][kind]["kl"] for kind in PEERS)
        assert row["runs"][versus["peer"]]["kl"] == best
        # The paired difference is the difference of the two KLs, up to rounding.
        expected = row["runs"]["flowkit"]["kl"] - best
        assert versus["kl_difference"] == pytest.approx(expected, abs=1e-4)
        assert versus["standard_error"] > 0
    assert report["rows"]["gamma-lognormal"]["runs"]["flowkit"]["preset"] == "bounded"
    assert (tmp_path / "quality.md").exists()
    for name in ("moons", "gamma-lognormal"):
        assert (tmp_path / "quality_densities" / f"{name}.png").stat().st_size > 0


def test_quick_ablation_compares_each_variant_with_no_elu(tmp_path: Path) -> None:
    from benchmarks.ablation import BASELINE, VARIANTS
    from benchmarks.ablation import main as ablation_main

    report = ablation_main(["--quick", "--sets", "moons,gamma-lognormal", "--out", tmp_path])

    assert set(report["rows"]["moons"]["runs"]) == {BASELINE, "ELU tail"}
    assert set(report["rows"]["gamma-lognormal"]["runs"]) == set(VARIANTS)
    for row in report["rows"].values():
        assert row["runs"][BASELINE]["kl_change"] == 0
        for run in row["runs"].values():
            assert 0 <= run["test_outside"] <= 1
            assert math.isfinite(run["test_nll"])
    assert "ΔKL" in (tmp_path / "ablation.md").read_text()


def test_quick_speed_reports_every_part(tmp_path: Path) -> None:
    from benchmarks.speed import main as speed_main

    models = ["flowkit-unbounded", "zuko-maf"]
    report = speed_main(["--quick", "--models", ",".join(models), "--out", tmp_path])

    assert list(report["models"]["rows"]) == models
    for row in report["models"]["rows"].values():
        assert row["train_steps_per_second"] > 0
        assert row["sample_points_per_second"] > 0
    assert set(report["models"]["rows"]["flowkit-unbounded"]["peak_memory_mib"]) == {
        "train",
        "log_prob",
        "sample",
    }
    assert all(row["median_ratio"] > 0 for row in report["overhead"]["rows"].values())
    assert any("speed_ratio" in row for row in report["elu"]["rows"].values())
    assert (tmp_path / "speed.md").read_text().startswith("# Speed")


def test_quick_scaling_fits_a_slope_per_model_and_draws_the_plot(tmp_path: Path) -> None:
    from benchmarks.scaling import fit_slope
    from benchmarks.scaling import main as scaling_main

    report = scaling_main(
        ["--quick", "--models", "flowkit-unbounded,nflows-nsf", "--out", tmp_path]
    )

    for sweep in ("batch", "dimension"):
        assert all(math.isfinite(slope) for slope in report[sweep]["slopes"].values())
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert fit_slope([1, 10, 100], [2, 20, 200]) == pytest.approx(1.0)


def test_quick_throughput_compares_one_and_two_processes(tmp_path: Path) -> None:
    from benchmarks.throughput import main as throughput_main

    report = throughput_main(["--quick", "--out", tmp_path])

    written = json.loads((tmp_path / "throughput-quick.json").read_text())
    assert written["training"].keys() == {"1", "2"}
    one, two = written["training"]["1"], written["training"]["2"]
    assert one["global_batch"] == two["global_batch"]
    assert two["processes"] == 2
    # The same seeded global batches: both runs end at the same validation NLL.
    assert abs(one["validation_nll"] - two["validation_nll"]) < 0.02
    assert report["streaming"]["rows"] == written["streaming"]["rows"] > 0
    assert written["streaming"]["logprob_rows_per_second"] > 0
    assert (tmp_path / "throughput-quick.md").exists()


def test_quick_preset_candidates_report_test_kl(tmp_path: Path) -> None:
    from benchmarks.preset_candidates import main as candidates_main

    report = candidates_main(["--quick", "--sets", "moons,gamma-lognormal", "--out", tmp_path])

    assert {row["kind"] for row in report["rows"].values()} == {"unbounded", "bounded"}
    for row in report["rows"].values():
        assert abs(row["parameters"] / 73_068 - 1) <= 0.10
        assert math.isfinite(row["kl"]) and row["kl_standard_error"] > 0
    assert (tmp_path / "preset_candidates-quick.md").exists()


@pytest.mark.parametrize("kind", ["unbounded", "bounded"])
def test_presets_are_the_settings_the_search_chose(kind: str) -> None:
    from benchmarks.preset_search import ADOPTED, TRAIN_OPTIONS
    from flowkit.presets import PRESET_DEFAULTS, PRESET_TRAINING, FlowConfig

    chosen = ADOPTED[kind]
    lower = [0.0, None] if kind == "bounded" else None
    config = FlowConfig(preset=kind, features=2, lower=lower, **PRESET_DEFAULTS[kind])

    for option, value in chosen.items():
        if option in TRAIN_OPTIONS:
            assert PRESET_TRAINING[kind][option] == value, option
        else:
            assert getattr(config, option) == value, option
