"""A residual MLP in the pre-activation form, with ELU activations, for coupling layers."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "BLOCK_ORDERS", "ResidualBlock", "ResidualConditioner"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"elu": nn.ELU, "relu": nn.ReLU}
"""Activations a conditioner accepts, by name; ``"elu"`` is the default."""
BLOCK_ORDERS = ("pre", "post")
"""Where a residual block applies its activation: inside the branch or after the sum."""


def _check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


class ResidualBlock(nn.Module):
    r"""One residual block, by default in the pre-activation form.

    .. math::
        \text{pre:}\quad h \mapsto h + W_2\,\sigma(W_1\,\sigma(h)), \qquad
        \text{post:}\quad h \mapsto \sigma(h + W_2\,\sigma(W_1 h)),

    with :math:`\sigma` the activation (ELU by default). In the pre-activation form the
    activations sit inside the residual branch, so the identity path carries the signal and
    its gradient unchanged through any depth; the post-activation form (the original ResNet
    order) puts :math:`\sigma` on that path, once per block. ELU keeps a non-zero gradient
    for negative pre-activations, so no unit dies as a ReLU unit can. The second linear map
    starts at zero in both forms, which makes a new pre-activation block the identity and a
    new post-activation block :math:`\sigma`.

    Args:
        features: width of the block.
        dropout: dropout rate before the second linear map.
        activation: a name from :data:`ACTIVATIONS`.
        order: ``"pre"`` or ``"post"``, from :data:`BLOCK_ORDERS`.
    """

    def __init__(
        self,
        features: int,
        dropout: float = 0.0,
        activation: str = "elu",
        order: str = "pre",
    ) -> None:
        super().__init__()

        _check_choice("activation", activation, ACTIVATIONS)
        _check_choice("order", order, BLOCK_ORDERS)
        self.order = order
        make_activation = ACTIVATIONS[activation]

        # The pre form activates the stream on entry to the branch; the post form activates
        # the sum on exit instead, so each form has two activations per block.
        entry = make_activation() if order == "pre" else nn.Identity()
        self.branch = nn.Sequential(
            entry,
            nn.Linear(features, features),
            make_activation(),
            nn.Dropout(dropout),
            nn.Linear(features, features),
        )
        self.exit_activation = make_activation() if order == "post" else nn.Identity()
        nn.init.zeros_(self.branch[-1].weight)
        nn.init.zeros_(self.branch[-1].bias)

    def forward(self, inputs: Tensor) -> Tensor:
        """Applies the block to ``inputs`` of shape ``(batch, features)``."""
        return self.exit_activation(inputs + self.branch(inputs))


class ResidualConditioner(nn.Module):
    """Maps the conditioning half of a coupling layer to the parameters of the other half.

    ``Linear -> ResidualBlock x num_blocks -> activation -> Linear``. The output layer starts
    at zero, so an affine coupling starts as the identity and a spline coupling as its
    flattest spline.

    Args:
        in_features: conditioning features.
        out_features: parameters to produce.
        hidden_features: width of the residual stream (nflows' spline couplings read it to
            scale their bin logits).
        num_blocks: residual blocks.
        dropout: dropout rate inside the blocks.
        activation: ``"elu"`` (default) or ``"relu"``, used everywhere in the network.
        block_order: ``"pre"`` (default, activation inside the residual branch) or ``"post"``
            (activation after the addition); see :class:`ResidualBlock`.

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
        activation: str = "elu",
        block_order: str = "pre",
    ) -> None:
        super().__init__()

        if in_features < 1 or out_features < 1 or hidden_features < 1 or num_blocks < 0:
            raise ValueError(
                "ResidualConditioner needs positive feature counts and num_blocks >= 0; got "
                f"in={in_features}, out={out_features}, hidden={hidden_features}, "
                f"blocks={num_blocks}"
            )
        _check_choice("activation", activation, ACTIVATIONS)
        _check_choice("block_order", block_order, BLOCK_ORDERS)

        self.hidden_features = hidden_features
        self.input_layer = nn.Linear(in_features, hidden_features)
        self.blocks = nn.Sequential(
            *[
                ResidualBlock(hidden_features, dropout, activation=activation, order=block_order)
                for _ in range(num_blocks)
            ]
        )
        self.output_layer = nn.Sequential(
            ACTIVATIONS[activation](), nn.Linear(hidden_features, out_features)
        )
        nn.init.zeros_(self.output_layer[-1].weight)
        nn.init.zeros_(self.output_layer[-1].bias)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        """Maps the conditioning features to the coupling parameters; ``context`` is unused."""
        hidden = self.blocks(self.input_layer(inputs))

        return self.output_layer(hidden)
