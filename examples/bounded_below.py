"""Fit data bounded below with the lower-bounded ELU output layer, against the same flow
without it, on the gamma-lognormal toy set whose true density is known.

Run: python examples/bounded_below.py [--steps N]
"""

from __future__ import annotations

import argparse

import torch

import flowkit
from flowkit.data import load_dataset


def fit_and_score(preset: str, split, steps: int, **options) -> dict[str, float]:
    torch.manual_seed(0)
    flow = flowkit.build_flow(preset, features=2, **options)
    flowkit.train(flow, split.train, validation_data=split.validation, steps=steps, progress=False)

    with torch.no_grad():
        model = flow.log_prob(split.test)
        truth = split.true_log_prob(split.test)
    inside = torch.isfinite(model)
    difference = (truth - model)[inside].double()

    return {
        "test_nll": -model[inside].double().mean().item(),
        "kl": difference.mean().item(),
        "kl_standard_error": (difference.std() / difference.numel() ** 0.5).item(),
        "outside_share": 1 - inside.double().mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1500)
    arguments = parser.parse_args()

    split = load_dataset("gamma-lognormal", num_train=10_000, num_test=10_000)
    true_nll = -split.true_log_prob(split.test).double().mean().item()
    print(f"gamma-lognormal, {arguments.steps} steps; true test NLL {true_nll:.4f}")

    lower = [float(bound) for bound in split.lower_bound]
    for name, preset, options in [
        ("lower-bounded ELU output layer", "bounded", {"lower": lower}),
        ("same flow, no bound", "unbounded", {}),
    ]:
        scores = fit_and_score(preset, split, arguments.steps, **options)
        print(
            f"{name:32s} test NLL {scores['test_nll']:.4f}  KL {scores['kl']:.4f} "
            f"+- {scores['kl_standard_error']:.4f}  outside support {scores['outside_share']:.2%}"
        )


if __name__ == "__main__":
    main()
