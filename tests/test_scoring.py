"""Tests of flowkit.scoring and of the ``flowkit score`` command."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import perturb
from sklearn.metrics import roc_auc_score

import flowkit
from flowkit.cli import main
from flowkit.presets import fit_data_dependent_layers
from flowkit.scoring import ScoreReference, Scores, auroc, score
from flowkit.transforms import ELU, LowerBound


@pytest.fixture(autouse=True)
def one_thread() -> None:
    """Keeps every test on one torch thread; the machine's cores are shared."""
    torch.set_num_threads(1)


def _tiny_flow(**options) -> flowkit.Flow:
    torch.manual_seed(0)
    options = {"num_layers": 1, "hidden_features": 4, **options}
    flow = flowkit.build_flow(options.pop("preset", "unbounded"), features=2, **options)
    # Clamped so that every point stays above a bound at 0, whatever draws came before.
    fit_data_dependent_layers(flow, torch.randn(64, 2).clamp(-2.5, 2.5) + 3.0)
    perturb(flow, 0.5)

    return flow


# --- which units count, and when they count as saturated ---------------------------------------


def test_counts_every_conditioner_unit_of_a_preset() -> None:
    # One coupling: a conditioner of 2 blocks x 2 ELUs plus the output ELU, 4 units each.
    assert score(_tiny_flow(), torch.zeros(3, 2)).elu_units == 5 * 4
    # An ELU tail adds one unit per feature; a lower bound one per bounded feature.
    bounded = _tiny_flow(preset="bounded", lower=[0.0, None], elu_tail=True)
    assert score(bounded, torch.ones(3, 2)).elu_units == 5 * 4 + 2 + 1


def test_saturation_of_a_data_to_noise_elu_is_exact() -> None:
    flow = flowkit.Flow([ELU(2)], features=2)
    threshold = math.log(0.05)  # alpha expm1(u) < -alpha (1 - 0.05)  <=>  u < log 0.05
    inputs = torch.tensor(
        [[threshold - 1e-3, 1.0], [threshold + 1e-3, -1.0], [-30.0, -4.0], [2.0, 3.0]]
    )

    scores = score(flow, inputs)

    assert scores.elu_units == 2
    assert scores.elu_saturation.tolist() == [0.5, 0.0, 1.0, 0.0]


def test_saturation_of_a_noise_to_data_elu_reads_its_input() -> None:
    flow = flowkit.Flow([ELU(2, alpha=2.0, orientation="noise_to_data")], features=2)
    # The ELU value is the input here; near the floor -2 means below -2 * 0.95 = -1.9.
    inputs = torch.tensor([[-1.95, 0.0], [-1.85, -1.99], [-1.0, 5.0]])

    assert score(flow, inputs).elu_saturation.tolist() == [0.5, 0.5, 0.0]


def test_saturation_of_a_lower_bound_counts_bounded_features_only() -> None:
    layer = LowerBound(torch.tensor([1.0, -math.inf]))
    flow = flowkit.Flow([layer], features=2)
    # Scale 1 and alpha 1 before fitting: near the floor means x - 1 < 0.05.
    inputs = torch.tensor([[1.04, -100.0], [1.06, -100.0], [1.0001, 7.0]])

    scores = score(flow, inputs, margin=0.05)

    assert scores.elu_units == 1
    assert scores.elu_saturation.tolist() == [1.0, 0.0, 1.0]


def test_a_wider_margin_never_lowers_the_saturation() -> None:
    flow = _tiny_flow()
    inputs = 4 * torch.randn(200, 2, generator=torch.Generator().manual_seed(1))

    narrow = score(flow, inputs, margin=0.01).elu_saturation
    wide = score(flow, inputs, margin=0.5).elu_saturation

    assert torch.all(wide >= narrow)
    assert torch.any(wide > narrow)


# --- the pass itself ---------------------------------------------------------------------------


def test_log_likelihood_is_the_flows_and_chunking_changes_nothing() -> None:
    flow = _tiny_flow()
    flow.train()
    inputs = 3 * torch.randn(50, 2, generator=torch.Generator().manual_seed(2))

    whole = score(flow, inputs)
    chunked = score(flow, inputs.numpy(), chunk_size=7)

    flow.eval()
    torch.testing.assert_close(whole.log_likelihood, flow.log_prob(inputs).detach())
    torch.testing.assert_close(chunked.log_likelihood, whole.log_likelihood)
    assert torch.equal(chunked.elu_saturation, whole.elu_saturation)


def test_scoring_leaves_no_hook_and_restores_the_mode() -> None:
    flow = _tiny_flow()
    flow.train()

    score(flow, torch.zeros(4, 2))

    assert flow.training
    assert all(not module._forward_hooks for module in flow.modules())


def test_rows_outside_the_support_get_minus_infinity_and_a_finite_saturation() -> None:
    flow = _tiny_flow(preset="bounded", lower=[0.0, None])
    scores = score(flow, torch.tensor([[-1.0, 0.0], [2.0, 0.0]]))

    assert scores.log_likelihood[0] == -math.inf
    assert torch.isfinite(scores.log_likelihood[1])
    assert torch.all((scores.elu_saturation >= 0) & (scores.elu_saturation <= 1))


def test_bad_inputs_are_refused_with_the_reason() -> None:
    flow = _tiny_flow()

    with pytest.raises(ValueError, match="2 column.*got 3 column"):
        score(flow, torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"NaN or inf in rows \[12\]"):
        score(flow, torch.zeros(20, 2).index_fill_(0, torch.tensor([12]), math.nan), chunk_size=5)
    with pytest.raises(ValueError, match="margin"):
        score(flow, torch.zeros(4, 2), margin=1.0)


# --- the combination ---------------------------------------------------------------------------


def test_combination_standardizes_on_the_reference() -> None:
    reference_scores = Scores(
        torch.tensor([-1.0, -2.0, -3.0, -4.0]), torch.tensor([0.0, 0.1, 0.2, 0.3]), 10, 0.05
    )
    reference = ScoreReference.fit(reference_scores)

    combined = reference.combine(reference_scores).double()

    assert abs(combined.mean().item()) < 1e-6
    # Two standardized terms, perfectly correlated here: the sum has standard deviation 2.
    assert combined.std().item() == pytest.approx(2.0, rel=1e-5)


def test_combination_rises_with_each_score_and_is_infinite_outside_the_support() -> None:
    reference = ScoreReference(
        nll_mean=1.0, nll_scale=2.0, saturation_mean=0.1, saturation_scale=0.05
    )
    scores = Scores(
        torch.tensor([-1.0, -3.0, -1.0, -math.inf]), torch.tensor([0.1, 0.1, 0.2, 0.0]), 20, 0.05
    )

    combined = reference.combine(scores)

    assert combined[1] > combined[0] and combined[2] > combined[0]
    assert combined[3] == math.inf


def test_saturation_scale_is_floored_at_one_unit() -> None:
    reference = ScoreReference.fit(
        Scores(torch.tensor([-1.0, -2.0, -4.0]), torch.zeros(3), elu_units=40, margin=0.05)
    )

    assert reference.saturation_scale == 1 / 40


def test_reference_needs_two_rows_inside_the_support() -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        ScoreReference.fit(Scores(torch.tensor([-1.0, -math.inf]), torch.zeros(2), 4, 0.05))


# --- AUROC -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_scikit_learn_with_ties(seed: int) -> None:
    generator = np.random.default_rng(seed)
    inliers = generator.integers(0, 6, size=int(generator.integers(1, 60))).astype(float)
    outliers = generator.integers(2, 8, size=int(generator.integers(1, 60))).astype(float)
    labels = np.r_[np.zeros(len(inliers)), np.ones(len(outliers))]

    expected = roc_auc_score(labels, np.r_[inliers, outliers])

    assert auroc(torch.from_numpy(inliers), outliers) == pytest.approx(expected, abs=1e-12)


def test_auroc_exact_cases() -> None:
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5
    assert auroc([-math.inf, 0.0], [math.inf, math.inf]) == 1.0


def test_auroc_refuses_nan_and_empty() -> None:
    with pytest.raises(ValueError, match="NaN"):
        auroc([0.0, math.nan], [1.0])
    with pytest.raises(ValueError, match="empty"):
        auroc([], [1.0])


# --- the command -------------------------------------------------------------------------------


@pytest.fixture
def moons_checkpoint(tmp_path: Path) -> Path:
    """A tiny, untrained-but-perturbed flow saved as if trained on moons."""
    split = flowkit.load_dataset("moons", num_train=200, num_validation=200, num_test=200)
    torch.manual_seed(0)
    flow = flowkit.build_flow("unbounded", features=2, num_layers=1, hidden_features=4)
    fit_data_dependent_layers(flow, split.train.to(torch.get_default_dtype()))
    perturb(flow, 0.5)

    return flowkit.save(flow, tmp_path / "model.pt", dataset="moons")


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("flowkit: error: ")

    return lines[0]


def test_score_command_writes_one_row_per_input(tmp_path: Path, moons_checkpoint, capsys) -> None:
    points = np.random.default_rng(0).normal(size=(30, 2)) * 2
    np.savetxt(tmp_path / "points.csv", points, delimiter=",")
    out = tmp_path / "scores.csv"

    assert (
        main(["score", str(moons_checkpoint), str(tmp_path / "points.csv"), "--out", str(out)])
        == 0
    )

    assert "scored 30 rows" in capsys.readouterr().out
    header = out.read_text().splitlines()[0]
    assert header == "log_likelihood,elu_saturation,combined"
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    flow = flowkit.load(moons_checkpoint)
    expected = score(flow, torch.from_numpy(points).float())
    reference = ScoreReference.fit(score(flow, flowkit.load_dataset("moons").validation))
    np.testing.assert_allclose(table[:, 0], expected.log_likelihood.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(table[:, 1], expected.elu_saturation.numpy())
    np.testing.assert_allclose(table[:, 2], reference.combine(expected).numpy(), rtol=1e-5)


def test_score_command_npy_and_reference_file(tmp_path: Path, moons_checkpoint, capsys) -> None:
    points = np.random.default_rng(1).normal(size=(12, 2))
    reference_points = np.random.default_rng(2).normal(size=(40, 2))
    np.save(tmp_path / "points.npy", points)
    np.save(tmp_path / "reference.npy", reference_points)
    out = tmp_path / "scores.npy"

    command = ["score", str(moons_checkpoint), str(tmp_path / "points.npy"), "-o", str(out)]
    assert main([*command, "--reference", str(tmp_path / "reference.npy")]) == 0

    assert f"standardized on {tmp_path / 'reference.npy'}" in capsys.readouterr().out
    table = np.load(out)
    assert table.shape == (12, 3)
    flow = flowkit.load(moons_checkpoint)
    reference = ScoreReference.fit(score(flow, torch.from_numpy(reference_points).float()))
    expected = reference.combine(score(flow, torch.from_numpy(points).float()))
    np.testing.assert_allclose(table[:, 2], expected.numpy(), rtol=1e-5)


def test_score_command_prints_csv_without_out(tmp_path: Path, moons_checkpoint, capsys) -> None:
    np.savetxt(tmp_path / "points.csv", np.zeros((3, 2)), delimiter=",")

    assert main(["score", str(moons_checkpoint), str(tmp_path / "points.csv")]) == 0

    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "log_likelihood,elu_saturation,combined" and len(lines) == 4
    assert "scored 3 rows" in captured.err


def test_score_command_names_a_wrong_column_count(
    tmp_path: Path, moons_checkpoint, capsys
) -> None:
    np.savetxt(tmp_path / "three.csv", np.zeros((5, 3)), delimiter=",")

    assert main(["score", str(moons_checkpoint), str(tmp_path / "three.csv")]) == 1

    line = _error_line(capsys)
    assert "three.csv has 3 column(s)" in line and "2 feature(s)" in line


def test_score_command_names_a_missing_file(tmp_path: Path, moons_checkpoint, capsys) -> None:
    missing = tmp_path / "nowhere.csv"

    assert main(["score", str(moons_checkpoint), str(missing)]) == 1

    assert "nowhere.csv" in _error_line(capsys)


def test_score_command_needs_a_reference_when_the_data_set_is_unknown(
    tmp_path: Path, capsys
) -> None:
    flow = _tiny_flow()
    checkpoint = flowkit.save(flow, tmp_path / "model.pt", dataset=str(tmp_path / "gone.csv"))
    np.savetxt(tmp_path / "points.csv", np.zeros((3, 2)), delimiter=",")

    assert main(["score", str(checkpoint), str(tmp_path / "points.csv")]) == 1

    assert "--reference" in _error_line(capsys)
