"""Use flowkit's ELU bijector inside a stack of nflows layers you assemble yourself.

Run: python examples/elu_in_your_own_stack.py
"""

from __future__ import annotations

import torch
from nflows.nn.nets import ResidualNet
from nflows.transforms import ActNorm, AffineCouplingTransform, RandomPermutation

import flowkit
from flowkit import ELU, Flow, InexactFlowError


def conditioner(in_features: int, out_features: int) -> ResidualNet:
    return ResidualNet(in_features, out_features, hidden_features=32, num_blocks=2)


def main() -> None:
    torch.manual_seed(0)
    data = torch.randn(5000, 2) @ torch.tensor([[1.0, 0.6], [0.0, 0.5]])

    # ELU toward the noise, right next to the base: the base becomes a truncated normal.
    layers = [
        flowkit.Standardize(2),
        AffineCouplingTransform(torch.tensor([1, 0]), conditioner),
        RandomPermutation(2),
        AffineCouplingTransform(torch.tensor([1, 0]), conditioner),
        ELU(2, alpha=1.0),
        ActNorm(2),
    ]
    flow = Flow(layers, features=2)
    print("support:", flow.support)

    result = flowkit.train(flow, data, steps=400, batch_size=256, progress=False)
    print(f"validation NLL {result.best_validation_nll:.3f} nats after {result.best_step} steps")
    lower, upper = flow.base_box()
    print("base truncated to the box", lower.tolist(), upper.tolist())
    print("samples:", flow.sample(3).tolist())

    # The same ELU placed before a coupling would leave base mass no data point reaches.
    try:
        Flow([ELU(2), AffineCouplingTransform(torch.tensor([1, 0]), conditioner)], features=2)
    except InexactFlowError as error:
        print("refused as expected:", str(error)[:120], "...")


if __name__ == "__main__":
    main()
