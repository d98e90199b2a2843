"""Compare pre-activation and post-activation residual conditioners at growing depth.

The same flow (flowkit's ``unbounded`` preset, two spline couplings) is trained with
conditioners of 2, 8 and 32 residual blocks, in the pre-activation form
``h + W2 elu(W1 elu(h))`` (flowkit's default) and in the post-activation form
``elu(h + W2 elu(W1 h))``, on the same data with the same seed and steps. Both forms keep
flowkit's initialization: each block's last linear map starts at zero, so a new
pre-activation block is the identity and a new post-activation block is ``elu``; only the
order differs.

Measured: the norm of the gradient of the mean training NLL with respect to the parameters
of the *first* residual block of every conditioner (all couplings together), and its ratio
to the same norm for the *last* block, on a fixed set of training points, early in
training (at the first validation) and at the end. Not at initialization: the
conditioners' output layers start at zero, so every block's gradient is exactly zero there
in both forms. Also the test NLL after the short training, and, to isolate the architecture from
training, the ratio of the backward signal reaching the first block to the one reaching
the last block in a new conditioner whose output layer is drawn at random
(:func:`stream_gradient_ratio_at_init`).

Run: python examples/residual_depth.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor

import flowkit
from flowkit.nets import ResidualConditioner

DATASET = "pinwheel"
FIXED_TRAINING = {"learning_rate": 2e-3, "warmup_steps": 50}
"""The training settings the figures in docs/elu_demonstrations.md were measured with, fixed
here (with 8 spline bins) so that they do not move when the presets' defaults do."""


def block_gradient_norms(flow: flowkit.Flow, data: Tensor) -> dict[str, float]:
    r"""Gradient norms of the mean NLL on ``data`` for the first and the last blocks.

    ``first`` is :math:`\lVert \partial L / \partial \theta_{\mathrm{first}} \rVert_2` over
    the first block of every conditioner together, ``last`` the same for the last blocks,
    and ``ratio`` is ``first / last``. Uses ``autograd.grad``, so no ``.grad`` is touched.
    """
    conditioners = [module for module in flow.modules() if isinstance(module, ResidualConditioner)]
    first = [p for net in conditioners for p in net.blocks[0].parameters()]
    last = [p for net in conditioners for p in net.blocks[-1].parameters()]

    loss = -flow.log_prob(data).mean()
    gradients = torch.autograd.grad(loss, first + last, allow_unused=True)

    def norm(values: tuple) -> float:
        squares = [float((g.double() ** 2).sum()) for g in values if g is not None]
        return sum(squares) ** 0.5

    first_norm = norm(gradients[: len(first)])
    last_norm = norm(gradients[len(first) :])

    return {
        "first": first_norm,
        "last": last_norm,
        "ratio": first_norm / last_norm if last_norm > 0 else float("nan"),
    }


def stream_gradient_ratio_at_init(
    order: str, depth: int, hidden_features: int, inputs: Tensor, seed: int = 0
) -> float:
    r"""Attenuation of the backward signal through a new conditioner's stack of blocks.

    A new conditioner (flowkit's initialization) gets an output layer drawn from
    :math:`N(0, 1/\text{hidden})`, since the zero one would pass no gradient at all, and the
    sum of its outputs on ``inputs`` is differentiated with respect to the residual stream
    entering the first block and the stream entering the last one. Returns
    :math:`\lVert \partial S / \partial h_{\mathrm{first}} \rVert / \lVert \partial S /
    \partial h_{\mathrm{last}} \rVert`: exactly 1 for new pre-activation blocks
    (identities), below 1 where post-activation blocks damp negative units.
    """
    torch.manual_seed(seed)
    net = ResidualConditioner(
        inputs.shape[1], 2, hidden_features=hidden_features, num_blocks=depth, block_order=order
    )
    with torch.no_grad():
        net.output_layer[-1].weight.normal_(0.0, hidden_features**-0.5)

    streams = [net.input_layer(inputs)]
    for block in net.blocks:
        streams.append(block(streams[-1]))
    output = net.output_layer(streams[-1]).sum()
    first, last = torch.autograd.grad(output, [streams[0], streams[-2]])

    return float(first.norm() / last.norm())


def run(quick: bool = False, depths: tuple[int, ...] = (2, 8, 32), seed: int = 0) -> dict:
    """Trains every (order, depth); returns ``{order: {depth: figures}}``.

    Figures: ``init_stream_ratio`` (from :func:`stream_gradient_ratio_at_init`), ``early``
    and ``end`` (from :func:`block_gradient_norms`), ``test_nll`` (nats per point) and
    ``cpu_seconds`` of the training. ``quick`` uses a smaller data set,
    narrower conditioners and fewer steps.
    """
    sizes = {"num_train": 1000, "num_validation": 500, "num_test": 1000}
    steps, hidden_features = 40, 16
    if not quick:
        sizes = {"num_train": 10000, "num_validation": 2000, "num_test": 10000}
        steps, hidden_features = 400, 32
    interval = max(1, steps // 8)

    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        split = flowkit.load_dataset(DATASET, seed=0, **sizes)
        train_data, validation, test = (
            part.float() for part in (split.train, split.validation, split.test)
        )
        probe = train_data[:2000]
        standardized = (probe - probe.mean(dim=0)) / probe.std(dim=0)
        results: dict[str, dict[int, dict]] = {}
        for order in ("pre", "post"):
            results[order] = {}
            for depth in depths:
                torch.manual_seed(seed)
                flow = flowkit.build_flow(
                    "unbounded",
                    features=2,
                    num_layers=2,
                    hidden_features=hidden_features,
                    num_blocks=depth,
                    block_order=order,
                    num_bins=8,
                )
                early: list[dict[str, float]] = []

                def record(trained: flowkit.Flow, _: dict, early: list = early) -> None:
                    if not early:
                        early.append(block_gradient_norms(trained, probe))

                started = time.process_time()
                flowkit.train(
                    flow,
                    train_data,
                    validation_data=validation,
                    steps=steps,
                    seed=seed,
                    validation_interval=interval,
                    patience=10**6,
                    progress=False,
                    on_validation=record,
                    **FIXED_TRAINING,
                )
                cpu_seconds = time.process_time() - started
                test_nll, _ = flowkit.mean_negative_log_likelihood(flow, test)
                results[order][depth] = {
                    "init_stream_ratio": stream_gradient_ratio_at_init(
                        order, depth, hidden_features, standardized[:, :1], seed
                    ),
                    "early": early[0],
                    "early_step": interval,
                    "end": block_gradient_norms(flow, probe),
                    "test_nll": test_nll,
                    "cpu_seconds": cpu_seconds,
                }
    finally:
        torch.set_default_dtype(previous_dtype)

    return results


def main() -> None:
    """Prints one row per block order and depth."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller, shorter run")
    arguments = parser.parse_args()
    torch.set_num_threads(1)

    results = run(arguments.quick)
    step = next(iter(next(iter(results.values())).values()))["early_step"]
    print(f"data: {DATASET}; gradient norms of the mean training NLL w.r.t. block parameters")
    print(
        f"{'order':5} {'depth':>5} {'stream init':>11} {f'|g first| @{step}':>15} "
        f"{f'first/last @{step}':>16} {'|g first| end':>14} {'first/last end':>15} "
        f"{'test NLL':>9} {'cpu s':>6}"
    )
    for order, by_depth in results.items():
        for depth, figures in by_depth.items():
            early, end = figures["early"], figures["end"]
            print(
                f"{order:5} {depth:>5} {figures['init_stream_ratio']:>11.3f} "
                f"{early['first']:>15.3e} {early['ratio']:>16.3f} "
                f"{end['first']:>14.3e} {end['ratio']:>15.3f} {figures['test_nll']:>9.4f} "
                f"{figures['cpu_seconds']:>6.1f}"
            )


if __name__ == "__main__":
    main()
