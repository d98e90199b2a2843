"""The residual-depth demonstration and the conditioner options it relies on."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import load_example

from flowkit import FlowConfig, build_flow
from flowkit.nets import ResidualBlock, ResidualConditioner

residual_depth = load_example("residual_depth")


@pytest.fixture(scope="module")
def figures():
    # One thread: on a loaded machine two threads spin and cost many times the CPU time.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield residual_depth.run(quick=True, depths=(2, 8))
    finally:
        torch.set_num_threads(threads)


def test_quick_run_gives_finite_figures_and_live_gradients_for_both_orders(figures):
    for order in ("pre", "post"):
        for depth in (2, 8):
            entry = figures[order][depth]
            assert math.isfinite(entry["test_nll"])
            # The zero-initialized output layers do not keep the blocks from learning.
            assert entry["early"]["first"] > 0
            assert entry["end"]["first"] > 0


@pytest.mark.parametrize("depth", [2, 8])
def test_at_initialization_only_post_activation_damps_the_backward_signal(figures, depth):
    assert figures["pre"][depth]["init_stream_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert figures["post"][depth]["init_stream_ratio"] < 1.0


def test_new_blocks_are_the_identity_before_and_the_activation_after():
    hidden = torch.randn(50, 6)

    pre = ResidualBlock(6, order="pre")(hidden)
    post = ResidualBlock(6, order="post")(hidden)
    post_relu = ResidualBlock(6, activation="relu", order="post")(hidden)

    assert torch.equal(pre, hidden)
    assert torch.allclose(post, torch.nn.functional.elu(hidden))
    assert torch.equal(post_relu, torch.relu(hidden))


def _stream_gradients(order: str, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the summed output w.r.t. the stream entering the first and last block."""
    torch.manual_seed(3)
    net = ResidualConditioner(2, 3, hidden_features=8, num_blocks=depth, block_order=order)
    with torch.no_grad():
        net.output_layer[-1].weight.normal_()

    entering = []
    hooks = [
        block.register_forward_pre_hook(lambda _, args: entering.append(args[0]))
        for block in (net.blocks[0], net.blocks[-1])
    ]
    stream = net.input_layer(torch.randn(40, 2))
    stream.retain_grad()
    hidden = stream
    for block in net.blocks:
        hidden = block(hidden)
        hidden.retain_grad()
    net.output_layer(hidden).sum().backward()
    for hook in hooks:
        hook.remove()

    return entering[0].grad, entering[-1].grad


def test_post_activation_shrinks_the_gradient_on_its_way_to_the_first_block():
    first_pre, last_pre = _stream_gradients("pre", 16)
    first_post, last_post = _stream_gradients("post", 16)

    # New pre-activation blocks are identities: the gradient arrives unchanged.
    assert torch.equal(first_pre, last_pre)
    # Post-activation puts one elu' <= 1 per block on the path; negative units lose signal.
    assert torch.all(first_post.abs() <= last_post.abs())
    assert first_post.norm() < last_post.norm()


def test_options_are_checked_and_old_configurations_still_load():
    with pytest.raises(ValueError, match="activation"):
        ResidualConditioner(1, 2, activation="tanh")
    with pytest.raises(ValueError, match="block_order"):
        FlowConfig(block_order="middle")
    with pytest.raises(ValueError, match="activation"):
        build_flow("unbounded", features=2, activation="gelu")

    # Checkpoints written before these options existed have no such keys.
    saved = FlowConfig().to_dict()
    del saved["activation"], saved["block_order"]
    assert FlowConfig.from_dict(saved) == FlowConfig()
