"""Count the conditioner units whose gradient dies, with ReLU and with ELU activations.

The same flow (flowkit's ``unbounded`` preset: four spline couplings with residual
conditioners) is trained twice on the same data, with the same seed and steps, once with
ReLU and once with ELU in every conditioner. A *hidden unit* is one feature of the input
of one activation module in a conditioner (the block's entry and inner activations and the
activation before the output layer). A unit is *dead* on a data set when the derivative of
its activation, as autograd computes it, is exactly zero at every point of the set: no
point then sends any gradient back through it. A unit is *nearly dead* when that derivative
stays below 1e-3 at every point. Both shares are measured on the whole training set at
initialization and after training, next to the test NLL.

Run: python examples/dead_gradients.py [--quick]
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

import flowkit
from flowkit.nets.residual import ACTIVATIONS

DATASET = "pinwheel"
NEARLY_DEAD = 1e-3
"""A unit whose activation-derivative stays below this at every point is nearly dead."""
FIXED_TRAINING = {"learning_rate": 2e-3, "warmup_steps": 50}
"""The training settings the figures in docs/elu_demonstrations.md were measured with, fixed
here (with 8 spline bins) so that they do not move when the presets' defaults do."""


def _activation_inputs(flow: flowkit.Flow, data: Tensor) -> dict[nn.Module, Tensor]:
    """The input of every activation module of the conditioners, for all rows of ``data``."""
    kinds = tuple(ACTIVATIONS.values())
    captured: dict[nn.Module, Tensor] = {}

    def keep(module: nn.Module, inputs: tuple[Tensor, ...], _: Tensor) -> None:
        captured[module] = inputs[0].detach()

    modules = [module for module in flow.modules() if isinstance(module, kinds)]
    handles = [module.register_forward_hook(keep) for module in modules]
    try:
        with torch.no_grad():
            flow.log_prob(data)
    finally:
        for handle in handles:
            handle.remove()

    return captured


def dead_unit_shares(flow: flowkit.Flow, data: Tensor) -> dict[str, float]:
    """Shares of dead and nearly dead units, and of (unit, point) pairs with zero derivative.

    The derivative is the one backpropagation uses: autograd's derivative of the activation
    module at each captured input (ReLU's derivative at exactly 0 is 0).
    """
    was_training = flow.training
    flow.eval()
    inputs = _activation_inputs(flow, data)
    flow.train(was_training)

    dead = nearly_dead = units = zero_pairs = pairs = 0
    for module, values in inputs.items():
        values = values.clone().requires_grad_(True)
        (derivative,) = torch.autograd.grad(module(values).sum(), values)

        dead += int((derivative == 0).all(dim=0).sum())
        nearly_dead += int((derivative.abs() < NEARLY_DEAD).all(dim=0).sum())
        units += derivative.shape[1]
        zero_pairs += int((derivative == 0).sum())
        pairs += derivative.numel()

    return {
        "dead": dead / units,
        "nearly_dead": nearly_dead / units,
        "zero_derivative_pairs": zero_pairs / pairs,
        "units": units,
    }


def run(quick: bool = False, seeds: tuple[int, ...] | None = None) -> dict:
    """Trains both variants for each seed; returns ``{activation: {seed: figures}}``.

    Each figure set holds ``init`` and ``trained`` (from :func:`dead_unit_shares`) and
    ``test_nll`` (nats per point). ``quick`` uses a smaller data set, flow and run.
    """
    if seeds is None:
        seeds = (0,) if quick else (0, 1)
    sizes = {"num_train": 1000, "num_validation": 500, "num_test": 1000}
    steps, shape = 100, {"num_layers": 2, "hidden_features": 16, "num_bins": 8}
    if not quick:
        sizes = {"num_train": 10000, "num_validation": 2000, "num_test": 10000}
        steps, shape = 600, {"num_layers": 4, "hidden_features": 32, "num_bins": 8}

    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        split = flowkit.load_dataset(DATASET, seed=0, **sizes)
        train_data, validation, test = (
            part.float() for part in (split.train, split.validation, split.test)
        )
        results: dict[str, dict[int, dict]] = {}
        for activation in ("relu", "elu"):
            results[activation] = {}
            for seed in seeds:
                torch.manual_seed(seed)
                flow = flowkit.build_flow(
                    "unbounded",
                    features=2,
                    activation=activation,
                    **shape,
                )
                flowkit.fit_data_dependent_layers(flow, train_data)
                at_init = dead_unit_shares(flow, train_data)

                flowkit.train(
                    flow,
                    train_data,
                    validation_data=validation,
                    steps=steps,
                    seed=seed,
                    patience=10**6,
                    progress=False,
                    **FIXED_TRAINING,
                )
                test_nll, _ = flowkit.mean_negative_log_likelihood(flow, test)
                results[activation][seed] = {
                    "init": at_init,
                    "trained": dead_unit_shares(flow, train_data),
                    "test_nll": test_nll,
                }
    finally:
        torch.set_default_dtype(previous_dtype)

    return results


def main() -> None:
    """Prints one row per activation and seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller, shorter run")
    arguments = parser.parse_args()
    torch.set_num_threads(1)

    results = run(arguments.quick)
    print(f"data: {DATASET}; dead = activation-derivative exactly 0 on every training point")
    print(
        f"{'activation':10} {'seed':>4} {'units':>5} {'dead@init':>10} {'dead':>8} "
        f"{'<1e-3':>8} {'zero pairs':>10} {'test NLL':>9}"
    )
    for activation, by_seed in results.items():
        for seed, figures in by_seed.items():
            trained = figures["trained"]
            print(
                f"{activation:10} {seed:>4} {trained['units']:>5} "
                f"{figures['init']['dead']:>10.1%} {trained['dead']:>8.1%} "
                f"{trained['nearly_dead']:>8.1%} {trained['zero_derivative_pairs']:>10.1%} "
                f"{figures['test_nll']:>9.4f}"
            )


if __name__ == "__main__":
    main()
