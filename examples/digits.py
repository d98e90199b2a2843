"""Train a flow on scikit-learn's 8x8 digits and print the test bits per dimension.

The digits (pixel values 0..16) are dequantized as x = (v + u) / 17 with fresh noise u at
every step, mapped to the real line by the logit pre-processing (its Jacobian counted), and
scored in bits per dimension of the [0, 1] scaling on a fixed test split.

Run: python examples/digits.py [--steps N]
"""

from __future__ import annotations

import argparse

import torch

import flowkit
from flowkit.data import bits_per_dimension


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    arguments = parser.parse_args()

    torch.manual_seed(0)
    split = flowkit.load_dataset("digits")
    flow = flowkit.build_flow("unit-interval", features=split.features)
    parameters = sum(parameter.numel() for parameter in flow.parameters())
    print(f"digits: {len(split.train)} training images, flow with {parameters:,} parameters")

    result = flowkit.train(
        flow,
        split.train,
        validation_data=split.validation,
        steps=arguments.steps,
        batch_size=arguments.batch_size,
        augment=split.augment,
    )

    with torch.no_grad():
        test_log_prob = flow.log_prob(split.test)
    test_bits = bits_per_dimension(test_log_prob, split.features).mean().item()
    validation_nll = result.best_validation_nll
    validation_bits = validation_nll / (split.features * torch.log(torch.tensor(2.0))).item()
    print(f"best step {result.best_step} of {result.steps_completed} ({result.stop_reason})")
    print(f"validation {validation_bits:.4f} bits/dim; test {test_bits:.4f} bits/dim")

    samples = flow.sample(16).clamp(0, 1)
    print("16 samples drawn; pixel range", samples.min().item(), samples.max().item())


if __name__ == "__main__":
    main()
