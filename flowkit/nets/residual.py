"""A residual MLP in the pre-activation form, with ELU activations, for coupling layers."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ResidualBlock", "ResidualConditioner"]


class ResidualBlock(nn.Module):
    r"""One pre-activation residual block: :math:`h + W_2\,\mathrm{elu}(W_1\,\mathrm{elu}(h))`.

    The activations sit inside the residual branch, so the identity path carries the signal
    and its gradient unchanged through any depth. ELU keeps a non-zero gradient for negative
    pre-activations, so no unit dies as a ReLU unit can. The second linear map starts at zero,
    which makes a new block the identity.
    """

    def __init__(self, features: int, dropout: float = 0.0) -> None:
        super().__init__()

        self.branch = nn.Sequential(
            nn.ELU(),
            nn.Linear(features, features),
            nn.ELU(),
            nn.Dropout(dropout),
            nn.Linear(features, features),
        )
        nn.init.zeros_(self.branch[-1].weight)
        nn.init.zeros_(self.branch[-1].bias)

    def forward(self, inputs: Tensor) -> Tensor:
        """Applies the block to ``inputs`` of shape ``(batch, features)``."""
        return inputs + self.branch(inputs)


class ResidualConditioner(nn.Module):
    """Maps the conditioning half of a coupling layer to the parameters of the other half.

    ``Linear -> ResidualBlock x num_blocks -> ELU -> Linear``. The output layer starts at
    zero, so an affine coupling starts as the identity and a spline coupling as its flattest
    spline.

    Args:
        in_features: conditioning features.
        out_features: parameters to produce.
        hidden_features: width of the residual stream (nflows' spline couplings read it to
            scale their bin logits).
        num_blocks: residual blocks.
        dropout: dropout rate inside the blocks.

    Example:
        >>> net = ResidualConditioner(1, 4, hidden_features=8)
        >>> net(torch.zeros(3, 1)).shape
        torch.Size([3, 4])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 64,
        num_blocks: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()

        if in_features < 1 or out_features < 1 or hidden_features < 1 or num_blocks < 0:
            raise ValueError(
                "ResidualConditioner needs positive feature counts and num_blocks >= 0; got "
                f"in={in_features}, out={out_features}, hidden={hidden_features}, "
                f"blocks={num_blocks}"
            )

        self.hidden_features = hidden_features
        self.input_layer = nn.Linear(in_features, hidden_features)
        self.blocks = nn.Sequential(
            *[ResidualBlock(hidden_features, dropout) for _ in range(num_blocks)]
        )
        self.output_layer = nn.Sequential(nn.ELU(), nn.Linear(hidden_features, out_features))
        nn.init.zeros_(self.output_layer[-1].weight)
        nn.init.zeros_(self.output_layer[-1].bias)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        """Maps the conditioning features to the coupling parameters; ``context`` is unused."""
        hidden = self.blocks(self.input_layer(inputs))

        return self.output_layer(hidden)
