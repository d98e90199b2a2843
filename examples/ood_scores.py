"""Out-of-distribution votes: log-likelihood, ELU saturation and their combination.

Two settings, each scored with :func:`flowkit.score` and measured by :func:`flowkit.auroc`
(high score = outlier; 0.5 = no separation):

(a) moons: a flow trained on the two-moons set; inliers are its test points, outliers the
    same test points moved by ``d`` training standard deviations along the second feature,
    for several ``d``.
(b) digits: the ``unit-interval`` preset trained on the images of classes 0-4; inliers are
    the test images of classes 0-4, outliers the test images of classes 5-9.

The combination (:class:`flowkit.ScoreReference`) is the sum of both scores standardized
on the in-distribution validation data, fixed before any outlier is scored; the saturation's
direction (more saturated = more unusual) was fixed before any measurement too.

Run: python examples/ood_scores.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import flowkit
from flowkit.data import load_digits_split
from flowkit.scoring import DEFAULT_MARGIN

SHIFTS = (0.5, 1.0, 2.0, 4.0)
"""Shifts of the toy outliers along the second feature, in training standard deviations."""

MARGINS = (0.01, DEFAULT_MARGIN, 0.2)
"""Margins of the saturation score shown as a sensitivity check; only the default is used
in the combination."""

FIXED_TRAINING = {"learning_rate": 2e-3, "warmup_steps": 50}
"""The training settings the figures in docs/elu_demonstrations.md were measured with, fixed
here (with 8 spline bins) so that they do not move when the presets' defaults do."""
SETTINGS: dict[bool, dict[str, dict[str, Any]]] = {
    False: {
        "moons": {
            "points": (5000, 1000, 2000),
            "steps": 300,
            "flow": {"num_layers": 4, "hidden_features": 64, "num_bins": 8},
        },
        "digits": {"steps": 400, "flow": {}},
    },
    True: {
        "moons": {
            "points": (1000, 300, 300),
            "steps": 100,
            "flow": {"num_layers": 2, "hidden_features": 16, "num_bins": 8},
        },
        "digits": {"steps": 25, "flow": {"num_layers": 2, "hidden_features": 16}},
    },
}
"""Budgets of the full run and of the fast path (``--quick``, used by the tests)."""


def _aurocs(
    reference: flowkit.ScoreReference, inliers: flowkit.Scores, outliers: flowkit.Scores
) -> dict[str, float]:
    return {
        "log_likelihood": flowkit.auroc(-inliers.log_likelihood, -outliers.log_likelihood),
        "elu_saturation": flowkit.auroc(inliers.elu_saturation, outliers.elu_saturation),
        "combined": flowkit.auroc(reference.combine(inliers), reference.combine(outliers)),
    }


def _saturation_by_margin(
    flow: flowkit.Flow, inliers: torch.Tensor, outliers: torch.Tensor
) -> dict[str, float]:
    figures = {}
    for margin in MARGINS:
        inlier_scores = flowkit.score(flow, inliers, margin=margin)
        outlier_scores = flowkit.score(flow, outliers, margin=margin)
        figures[f"{margin:g}"] = flowkit.auroc(
            inlier_scores.elu_saturation, outlier_scores.elu_saturation
        )

    return figures


def run_moons(quick: bool) -> dict[str, Any]:
    """Trains on moons and scores its test points against shifted copies of them."""
    settings = SETTINGS[quick]["moons"]
    num_train, num_validation, num_test = settings["points"]
    split = flowkit.load_dataset(
        "moons", num_train=num_train, num_validation=num_validation, num_test=num_test
    )

    torch.manual_seed(0)
    flow = flowkit.build_flow("unbounded", features=2, **settings["flow"])
    result = flowkit.train(
        flow,
        split.train,
        validation_data=split.validation,
        steps=settings["steps"],
        batch_size=256,
        progress=False,
        **FIXED_TRAINING,
    )

    reference = flowkit.ScoreReference.fit(flowkit.score(flow, split.validation))
    inliers = flowkit.score(flow, split.test)
    direction = torch.tensor([0.0, 1.0]) * split.train.std(dim=0)
    by_shift, margins = {}, {}
    for shift in SHIFTS:
        shifted = split.test + shift * direction
        by_shift[f"{shift:g}"] = _aurocs(reference, inliers, flowkit.score(flow, shifted))
        margins[f"{shift:g}"] = _saturation_by_margin(flow, split.test, shifted)

    return {
        "validation_nll": result.best_validation_nll,
        "elu_units": inliers.elu_units,
        "inlier_mean_saturation": inliers.elu_saturation.mean().item(),
        "auroc_by_shift": by_shift,
        "saturation_auroc_by_margin": margins,
    }


def run_digits(quick: bool) -> dict[str, Any]:
    """Trains on digits 0-4 and scores their test images against those of digits 5-9."""
    settings = SETTINGS[quick]["digits"]
    known = load_digits_split(classes=range(5))
    unknown = load_digits_split(classes=range(5, 10))

    torch.manual_seed(0)
    flow = flowkit.build_flow("unit-interval", features=known.features, **settings["flow"])
    result = flowkit.train(
        flow,
        known.train,
        validation_data=known.validation,
        steps=settings["steps"],
        batch_size=128,
        augment=known.augment,
        progress=False,
    )

    reference = flowkit.ScoreReference.fit(flowkit.score(flow, known.validation))
    inliers = flowkit.score(flow, known.test)
    outliers = flowkit.score(flow, unknown.test)

    return {
        "train_images": len(known.train),
        "inlier_test_images": len(known.test),
        "outlier_test_images": len(unknown.test),
        "validation_nll": result.best_validation_nll,
        "elu_units": inliers.elu_units,
        "inlier_mean_saturation": inliers.elu_saturation.mean().item(),
        "outlier_mean_saturation": outliers.elu_saturation.mean().item(),
        "auroc": _aurocs(reference, inliers, outliers),
        "saturation_auroc_by_margin": _saturation_by_margin(flow, known.test, unknown.test),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Runs both settings on one torch thread and returns every figure."""
    torch.set_num_threads(1)
    started = time.perf_counter()

    figures = {"moons": run_moons(quick), "digits": run_digits(quick)}
    figures["seconds"] = time.perf_counter() - started

    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for the tests")
    arguments = parser.parse_args()

    figures = run(quick=arguments.quick)

    moons = figures["moons"]
    print(
        f"moons: validation NLL {moons['validation_nll']:.4f} nats, {moons['elu_units']} ELU "
        f"units, inlier mean saturation {moons['inlier_mean_saturation']:.4f}"
    )
    print("AUROC against test points shifted by d sd along feature 2")
    print(f"{'d':>5}  {'log-lik':>8}  {'ELU sat':>8}  {'combined':>8}  sat at margins")
    for shift, row in moons["auroc_by_shift"].items():
        margins = ", ".join(
            f"{margin}: {value:.3f}"
            for margin, value in moons["saturation_auroc_by_margin"][shift].items()
        )
        print(
            f"{shift:>5}  {row['log_likelihood']:8.4f}  {row['elu_saturation']:8.4f}  "
            f"{row['combined']:8.4f}  {margins}"
        )

    digits = figures["digits"]
    row = digits["auroc"]
    margins = ", ".join(
        f"{margin}: {value:.3f}" for margin, value in digits["saturation_auroc_by_margin"].items()
    )
    print(
        f"digits: trained on {digits['train_images']} images of 0-4, validation NLL "
        f"{digits['validation_nll']:.2f} nats, {digits['elu_units']} ELU units; "
        f"{digits['inlier_test_images']} test images of 0-4 against "
        f"{digits['outlier_test_images']} of 5-9"
    )
    print(
        f"mean saturation {digits['inlier_mean_saturation']:.4f} (0-4) against "
        f"{digits['outlier_mean_saturation']:.4f} (5-9)"
    )
    print(
        f"AUROC log-lik {row['log_likelihood']:.4f}, ELU sat {row['elu_saturation']:.4f}, "
        f"combined {row['combined']:.4f}; sat at margins {margins}"
    )
    print(f"{figures['seconds']:.1f} s")


if __name__ == "__main__":
    main()
