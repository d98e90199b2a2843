"""Preset flows for unbounded, bounded-below and unit-interval data, from one builder."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from nflows.transforms import ActNorm, LULinear, Transform
from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
from nflows.transforms.nonlinearities import PiecewiseRationalQuadraticCDF
from torch import Tensor

from flowkit.flow import Flow
from flowkit.nets import ResidualConditioner
from flowkit.nets.residual import ACTIVATIONS, BLOCK_ORDERS
from flowkit.transforms import ELU, AffineCoupling, Logit, LowerBound, Standardize
from flowkit.transforms.domain import RestrictedDomain

__all__ = [
    "FlowConfig",
    "PRESETS",
    "PRESET_DEFAULTS",
    "PRESET_TRAINING",
    "build_flow",
    "fit_data_dependent_layers",
    "training_defaults",
]

PRESETS: dict[str, str] = {
    "unbounded": "data on the whole real line: standardize, spline couplings",
    "bounded": "data bounded below by known bounds: lower-bounded ELU output layer, couplings",
    "unit-interval": "data in [0, 1] such as dequantized pixels: logit, couplings",
}
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    # Chosen with PRESET_TRAINING by benchmarks/preset_search.py on validation NLL alone (the
    # known-density 2-D sets, 1000 steps of batch 256); each width keeps the parameter count
    # of the 4-layer, 8-bin, 64-wide flow the search started from (about 73k for 2 features).
    "unbounded": {"num_layers": 6, "num_bins": 12, "hidden_features": 50},
    "bounded": {"num_bins": 16, "hidden_features": 61},
    # Chosen on digits' validation split: 1257 images overfit a wider flow within a few
    # hundred steps, and dropout with a narrower, LU-mixed spline flow did best.
    "unit-interval": {"mixing": "lu", "num_blocks": 1, "dropout": 0.2, "num_bins": 6},
}
"""Options :func:`build_flow` takes for each preset unless the caller gives them."""
GENERIC_TRAINING: dict[str, Any] = {"learning_rate": 2e-3, "warmup_steps": 50}
PRESET_TRAINING: dict[str, dict[str, Any]] = {
    # Round two of the search raised both rates from 6e-3 (preset_search_round2.md).
    "unbounded": {"learning_rate": 1.2e-2, "warmup_steps": 150},
    "bounded": {"learning_rate": 1.2e-2, "warmup_steps": 50},
    "unit-interval": dict(GENERIC_TRAINING),
}
"""The learning rate and warm-up :func:`flowkit.train` uses for a preset's flow unless told.

Chosen with :data:`PRESET_DEFAULTS` on validation data at 1000 steps; a flow assembled by
hand (no preset in its configuration) trains with ``learning_rate=2e-3, warmup_steps=50``.
"""
COUPLINGS = ("spline", "affine")
MIXINGS = ("none", "lu")


@dataclass
class FlowConfig:
    """Everything needed to rebuild a preset flow; stored as JSON in checkpoints.

    The defaults below are the generic ones a bare ``FlowConfig`` takes; :func:`build_flow`
    first fills in the preset's own (:data:`PRESET_DEFAULTS`: the ``unbounded`` preset has
    6 layers of width 50 with 12 bins, for instance).

    Attributes:
        preset: one of :data:`PRESETS`.
        features: number of data features.
        coupling: ``"spline"`` (rational-quadratic, nflows) or ``"affine"`` (flowkit's,
            without a capped scale).
        num_layers: coupling layers (element-wise spline layers for one feature).
        hidden_features: width of each conditioner.
        num_blocks: residual blocks per conditioner.
        num_bins: spline bins.
        tail_bound: splines are the identity outside ``[-tail_bound, tail_bound]``.
        elu_tail: put an ELU toward the noise (and an ActNorm) next to the base, which then
            becomes a truncated normal with a learnable exponential tail. Off by default: on
            the built-in sets it did not lower the validation NLL (see the benchmarks).
        alpha: initial ELU ``alpha``.
        mixing: ``"lu"`` puts an ``LULinear`` before each coupling; ``"none"`` alternates
            masks only.
        lower: per-feature lower bounds for ``"bounded"`` (``None`` entries are unbounded).
        dropout: dropout inside the conditioners.
        activation: the conditioners' activation, ``"elu"`` (default) or ``"relu"``.
        block_order: ``"pre"`` (default) puts the conditioners' activations inside the
            residual branch, ``"post"`` after the addition.
    """

    preset: str = "unbounded"
    features: int = 2
    coupling: str = "spline"
    num_layers: int = 4
    hidden_features: int = 64
    num_blocks: int = 2
    num_bins: int = 8
    tail_bound: float = 4.0
    elu_tail: bool = False
    alpha: float = 1.0
    mixing: str = "none"
    lower: list[float | None] | None = None
    dropout: float = 0.0
    activation: str = "elu"
    block_order: str = "pre"

    def __post_init__(self) -> None:
        problems = []
        if self.preset not in PRESETS:
            problems.append(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if not isinstance(self.features, int) or self.features < 1:
            problems.append(f"features must be a positive integer, got {self.features!r}")
        if self.coupling not in COUPLINGS:
            problems.append(f"coupling must be one of {COUPLINGS}, got {self.coupling!r}")
        if self.mixing not in MIXINGS:
            problems.append(f"mixing must be one of {MIXINGS}, got {self.mixing!r}")
        for name in ("num_layers", "hidden_features", "num_bins"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_blocks, int) or self.num_blocks < 0:
            problems.append(f"num_blocks must be a non-negative integer, got {self.num_blocks!r}")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            problems.append(f"alpha must be positive and finite, got {self.alpha!r}")
        if not (self.tail_bound > 0 and math.isfinite(self.tail_bound)):
            problems.append(f"tail_bound must be positive, got {self.tail_bound!r}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.activation not in ACTIVATIONS:
            problems.append(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.block_order not in BLOCK_ORDERS:
            problems.append(f"block_order must be one of {BLOCK_ORDERS}, got {self.block_order!r}")
        if self.preset == "bounded":
            if self.lower is None or len(self.lower) != self.features:
                problems.append(
                    f"preset 'bounded' needs lower with {self.features} entries "
                    f"(None for unbounded features), got {self.lower!r}"
                )
            elif all(bound is None for bound in self.lower):
                problems.append("preset 'bounded' needs at least one finite lower bound")
        if problems:
            raise ValueError("invalid flow configuration: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FlowConfig:
        """Builds a configuration from a dictionary, rejecting unknown keys by name."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown flow configuration keys {unknown}; known: {sorted(known)}")

        return cls(**values)


def _conditioner_factory(config: FlowConfig):
    def create(in_features: int, out_features: int) -> ResidualConditioner:
        return ResidualConditioner(
            in_features,
            out_features,
            hidden_features=config.hidden_features,
            num_blocks=config.num_blocks,
            dropout=config.dropout,
            activation=config.activation,
            block_order=config.block_order,
        )

    return create


def _coupling(config: FlowConfig, mask: Tensor) -> Transform:
    if config.coupling == "affine":
        return AffineCoupling(mask, _conditioner_factory(config))

    return PiecewiseRationalQuadraticCouplingTransform(
        mask,
        _conditioner_factory(config),
        num_bins=config.num_bins,
        tails="linear",
        tail_bound=config.tail_bound,
    )


def _body(config: FlowConfig) -> list[Transform]:
    features = config.features
    layers: list[Transform] = []
    if features == 1:
        # One feature has nothing to condition on: element-wise splines stand in.
        for _ in range(config.num_layers):
            layers.append(ActNorm(1))
            layers.append(
                PiecewiseRationalQuadraticCDF(
                    1, num_bins=config.num_bins, tails="linear", tail_bound=config.tail_bound
                )
            )
        return layers

    for index in range(config.num_layers):
        layers.append(ActNorm(features))
        if config.mixing == "lu":
            layers.append(LULinear(features, identity_init=True))
        mask = (torch.arange(features) + index) % 2
        layers.append(_coupling(config, mask))

    return layers


def _data_side(config: FlowConfig) -> list[Transform]:
    if config.preset == "bounded":
        lower = [-math.inf if bound is None else float(bound) for bound in config.lower]
        return [LowerBound(torch.tensor(lower), alpha=config.alpha)]
    if config.preset == "unit-interval":
        return [Logit(config.features), Standardize(config.features)]

    return [Standardize(config.features)]


def build_flow(preset: str | FlowConfig = "unbounded", features: int = 2, **options: Any) -> Flow:
    """Builds a preset flow; the same stacks can be put together by hand from the layers.

    Args:
        preset: a name from :data:`PRESETS`, or a :class:`FlowConfig` (used as it is).
        features: number of data features.
        **options: any other :class:`FlowConfig` field; those not given take the preset's
            :data:`PRESET_DEFAULTS`, then the :class:`FlowConfig` defaults.

    Returns:
        An exact :class:`~flowkit.flow.Flow` whose data-dependent layers still need
        :func:`fit_data_dependent_layers` (the trainer calls it); until then they are the
        identity, so the untrained flow is already a valid density.

    Example:
        >>> flow = build_flow("unbounded", features=2, num_layers=2, hidden_features=8)
        >>> bool(torch.isfinite(flow.log_prob(torch.zeros(1, 2))).all())
        True
    """
    if isinstance(preset, FlowConfig):
        config = preset
    else:
        options = {**PRESET_DEFAULTS.get(preset, {}), **options}
        config = FlowConfig(preset=preset, features=features, **options)

    layers = _data_side(config) + _body(config)
    if config.elu_tail:
        layers.append(ELU(config.features, alpha=config.alpha, orientation="data_to_noise"))
        layers.append(ActNorm(config.features))
    for layer in layers:
        if isinstance(layer, ActNorm):
            # nflows' ActNorm would otherwise fit itself to the first batch it sees in
            # training mode, whatever that batch is (one row gives NaN scales for good).
            # Identity until fit_data_dependent_layers, which the trainer calls.
            layer.initialized.fill_(True)

    return Flow(layers, features=config.features, config=config.to_dict())


def training_defaults(flow: Flow) -> dict[str, Any]:
    """Returns the ``learning_rate`` and ``warmup_steps`` that suit ``flow``'s preset.

    Example:
        >>> training_defaults(build_flow("unbounded", features=2))
        {'learning_rate': 0.012, 'warmup_steps': 150}
    """
    preset = (flow.config or {}).get("preset")

    return dict(PRESET_TRAINING.get(preset, GENERIC_TRAINING))


@torch.no_grad()
def fit_data_dependent_layers(flow: Flow, data: Tensor) -> None:
    """Sets standardizations and bounds' scales from ``data`` and initialises every ActNorm.

    The layers are fitted in order, each on the data as the layers before it map them, so
    that every ActNorm sees zero-mean, unit-variance inputs at the start of training.
    """
    was_training = flow.training
    flow.train()

    hidden = data
    for index, layer in enumerate(flow.layers):
        if isinstance(layer, Standardize | LowerBound):
            layer.fit(hidden)
        if isinstance(layer, ActNorm):
            layer.initialized.fill_(False)
        if isinstance(layer, RestrictedDomain) and layer.restricts_forward_domain():
            _, inside = layer.split_forward_domain(hidden)
            if not torch.all(inside):
                rows = (~inside).nonzero().flatten()
                raise ValueError(
                    f"{len(rows)} data rows lie outside the support of layer {index} "
                    f"({type(layer).__name__}), first row {int(rows[0])}: "
                    f"{data[int(rows[0])].tolist()}"
                )
        hidden, _ = layer(hidden)

    flow.train(was_training)
