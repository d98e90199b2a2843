"""Train a flow on a built-in toy set, then plot its density, its samples and its curve.

Run: python examples/train_and_plot_toy.py [--data moons] [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import flowkit
from flowkit.data import toy_names
from flowkit.plots import plot_density, plot_samples, plot_training_curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="moons", choices=toy_names())
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=Path("runs/example-toy"))
    arguments = parser.parse_args()

    torch.manual_seed(0)
    split = flowkit.load_dataset(arguments.data, num_train=20_000)
    preset = "bounded" if split.lower_bound is not None else "unbounded"
    options = {}
    if preset == "bounded":
        options["lower"] = [b if math.isfinite(b) else None for b in split.lower_bound.tolist()]
    flow = flowkit.build_flow(preset, features=2, **options)

    result = flowkit.train(
        flow, split.train, validation_data=split.validation, steps=arguments.steps
    )
    test_nll, outside = flowkit.mean_negative_log_likelihood(flow, split.test)
    print(f"{arguments.data}: test NLL {test_nll:.4f} nats ({outside:.2%} outside the support)")
    if split.true_log_prob is not None:
        true_nll = -split.true_log_prob(split.test).double().mean().item()
        print(f"true test NLL {true_nll:.4f}; KL estimate {test_nll - true_nll:.4f}")

    flowkit.save(flow, arguments.out / "model.pt", training=result, dataset=arguments.data)
    plot_density(
        flow, split.test, arguments.out / "density.png", true_log_prob=split.true_log_prob
    )
    plot_samples(flow, split.test, arguments.out / "samples.png")
    plot_training_curve(result, arguments.out / "training.png")
    print(f"wrote model.pt, density.png, samples.png and training.png to {arguments.out}")


if __name__ == "__main__":
    main()
