"""An exact normalizing flow: a stack of transforms over a base that matches its image."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from nflows.transforms import CompositeTransform, InputOutsideDomain, Transform
from nflows.transforms.nonlinearities import Sigmoid, Tanh
from torch import Tensor, nn

from flowkit.distributions import (
    box_normal_log_normalizer,
    sample_box_normal,
    standard_normal_log_prob,
)
from flowkit.transforms.bounds import forward_bounds, is_elementwise_monotone
from flowkit.transforms.domain import RestrictedDomain
from flowkit.transforms.elu import ELU

__all__ = ["Flow", "SupportReport", "InexactFlowError", "flatten_transforms"]

logger = logging.getLogger(__name__)


class InexactFlowError(ValueError):
    """Raised when a stack of transforms would not give a normalized density."""


def flatten_transforms(transform: Transform | list[Transform]) -> list[Transform]:
    """Unpacks nested ``CompositeTransform`` objects into one list, data side first."""
    if isinstance(transform, list | tuple):
        return [layer for part in transform for layer in flatten_transforms(part)]
    if isinstance(transform, CompositeTransform):
        return flatten_transforms(list(transform._transforms))

    return [transform]


def restricts_image(layer: Transform, features: int) -> bool:
    """Tells whether ``layer`` maps the whole space onto part of it (an ELU toward noise)."""
    if isinstance(layer, Sigmoid | Tanh):
        return True
    if not is_elementwise_monotone(layer):
        return False

    whole = torch.full((features,), math.inf)
    with torch.no_grad():
        lower, upper = forward_bounds(layer, -whole, whole)

    return bool(torch.any(torch.isfinite(lower) | torch.isfinite(upper)))


@dataclass
class SupportReport:
    """What a flow's layers do to supports, found when the flow is built.

    Attributes:
        tail_start: index of the first layer of the element-wise increasing run that ends
            at the base; those layers map the whole space onto a box.
        truncated_base: whether that box is smaller than the whole space, so that the base
            is the standard normal truncated to it.
        defects: one line per layer that restricts the image away from the base, which
            leaves base mass that no data point reaches.
        restricted_data_support: whether some layer has a restricted forward domain, so
            that ``log_prob`` is ``-inf`` on part of the data space.
    """

    tail_start: int
    truncated_base: bool
    defects: list[str] = field(default_factory=list)
    restricted_data_support: bool = False

    @property
    def exact(self) -> bool:
        """True when ``exp(log_prob)`` integrates to one by construction."""
        return not self.defects


def analyse_support(layers: list[Transform], features: int) -> SupportReport:
    """Finds the image box next to the base and any layer that breaks exactness."""
    tail_start = len(layers)
    while tail_start > 0 and is_elementwise_monotone(layers[tail_start - 1]):
        tail_start -= 1

    truncated_base = any(restricts_image(layer, features) for layer in layers[tail_start:])
    defects = [
        f"layer {index} ({type(layer).__name__}) maps the whole space onto part of it, but "
        "layers that are not element-wise increasing stand between it and the base"
        for index, layer in enumerate(layers[:tail_start])
        if restricts_image(layer, features)
    ]
    restricted = any(
        isinstance(layer, RestrictedDomain) and layer.restricts_forward_domain()
        for layer in layers
    )

    return SupportReport(tail_start, truncated_base, defects, restricted)


class Flow(nn.Module):
    r"""A normalizing flow whose density integrates to one, with its support made explicit.

    The transform maps data x to noise z (nflows' convention) and

    .. math:: \log p(x) = \log p_{\text{base}}(f(x)) + \log|\det J_f(x)|.

    The base is chosen from the layers: the standard normal when the last layers reach the
    whole space, or the standard normal truncated to the box
    :math:`\prod_j [a_j, b_j]` that element-wise increasing layers next to the base (such as
    an ELU toward the noise, then ``ActNorm``) map the space onto, with the closed-form
    normalizer :math:`\sum_j \log(\Phi(b_j) - \Phi(a_j))`. Layers with a restricted domain
    (an ELU toward the data, a lower bound, a logit) give ``log_prob = -inf`` exactly on
    the rows outside their domain, within the same batch.

    For flows meant for data without a lower bound, ``log_prob`` is finite everywhere, with
    one exception: in float32 the base's :math:`z^2` overflows once a noise value passes
    about 1.8e19, and such a point gets ``-inf``; convert the flow and its inputs to float64
    for points that far out.

    A stack with an image-restricting layer elsewhere loses base mass and is refused with
    :class:`InexactFlowError` unless ``allow_inexact=True``. Such a flow then samples by
    rejection (draws whose inverse leaves a domain are drawn again) and corrects
    ``log_prob`` by a Monte Carlo estimate of the mass it keeps, from
    :meth:`estimate_normalizer`; its density is normalized only up to that estimate's error.

    Args:
        transform: an nflows transform or a list of them, data side first.
        features: number of data features.
        allow_inexact: accept a stack that is not exact, as described above.
        config: the builder's configuration, kept for checkpoints.

    Example:
        >>> from flowkit.transforms import ELU
        >>> from nflows.transforms import ActNorm
        >>> flow = Flow([ActNorm(2), ELU(2)], features=2)
        >>> flow.sample(4).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        transform: Transform | list[Transform],
        features: int,
        allow_inexact: bool = False,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()

        if not isinstance(features, int) or features < 1:
            raise ValueError(f"features must be a positive integer; got {features!r}")
        layers = flatten_transforms(transform)
        if not layers:
            raise ValueError("a flow needs at least one transform")

        self.features = features
        self.layers = nn.ModuleList(layers)
        self.config = config
        self.support = analyse_support(layers, features)
        if self.support.defects and not allow_inexact:
            raise InexactFlowError(
                "this stack would not integrate to one: "
                + "; ".join(self.support.defects)
                + ". Put ELU layers toward the noise only next to the base (with only "
                "element-wise layers between), use orientation='noise_to_data', or pass "
                "allow_inexact=True for a Monte Carlo normalizer and rejection sampling."
            )
        self.allow_inexact = allow_inexact
        self.register_buffer("log_normalizer", torch.zeros(()))
        self.register_buffer("log_normalizer_error", torch.zeros(()))

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the flow's parameters and buffers."""
        return self.log_normalizer.dtype

    # --- the base ---------------------------------------------------------------------------

    def base_box(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """Returns the ends ``(a, b)`` of the box the base is truncated to (infinite if none)."""
        reference = self.log_normalizer
        dtype = dtype or self.dtype
        lower = torch.full((self.features,), -math.inf, dtype=dtype, device=reference.device)
        upper = torch.full_like(lower, math.inf)
        for layer in self.layers[self.support.tail_start :]:
            lower, upper = forward_bounds(layer, lower, upper)

        return lower, upper

    def _base_log_prob(self, noise: Tensor, box: tuple[Tensor, Tensor] | None = None) -> Tensor:
        if not self.support.truncated_base:
            return standard_normal_log_prob(noise)

        lower, upper = self.base_box(noise.dtype) if box is None else box
        # By construction every data point maps into the closed box; clamping only removes
        # the last-bit disagreements between a point's path and the ends' path.
        noise = torch.minimum(torch.maximum(noise, lower), upper)

        return standard_normal_log_prob(noise) - box_normal_log_normalizer(lower, upper)

    def _sample_base(
        self,
        num_samples: int,
        dtype: torch.dtype,
        generator: torch.Generator | None,
        box: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        device = self.log_normalizer.device
        if not self.support.truncated_base:
            return torch.randn(
                num_samples, self.features, dtype=dtype, device=device, generator=generator
            )

        lower, upper = self.base_box(dtype) if box is None else box
        return sample_box_normal(num_samples, lower, upper, generator=generator)

    # --- density ----------------------------------------------------------------------------

    def _check_inputs(self, inputs: Tensor) -> None:
        if not isinstance(inputs, Tensor):
            raise TypeError(f"inputs must be a torch.Tensor; got {type(inputs).__name__}")
        if inputs.dim() != 2 or inputs.shape[1] != self.features:
            raise ValueError(
                f"inputs must have shape (batch, {self.features}); got {tuple(inputs.shape)}"
            )
        if not inputs.is_floating_point():
            raise TypeError(f"inputs must be floating point; got {inputs.dtype}")
        if inputs.dtype != self.dtype:
            raise TypeError(
                f"inputs are {inputs.dtype} but the flow is {self.dtype}; convert the inputs "
                f"with .to({self.dtype}) or the flow with .to({inputs.dtype})"
            )
        if inputs.device != self.log_normalizer.device:
            raise ValueError(
                f"inputs are on {inputs.device} but the flow is on "
                f"{self.log_normalizer.device}; move one of them with .to(...)"
            )
        if torch.any(torch.isnan(inputs)):
            rows = torch.isnan(inputs).any(dim=1).nonzero().flatten()[:5].tolist()
            raise ValueError(f"inputs contain NaN in rows {rows}; log_prob is undefined there")

    def transform_to_noise(self, inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Runs the data-to-noise pass.

        Returns ``(noise, logabsdet, inside)``, where ``inside`` marks the rows within every
        layer's domain; the other rows were replaced by interior points on the way, so their
        noise and log-determinant mean nothing.
        """
        noise = inputs
        logabsdet = inputs.new_zeros(inputs.shape[0])
        inside = torch.ones(inputs.shape[0], dtype=torch.bool, device=inputs.device)
        for layer in self.layers:
            if isinstance(layer, RestrictedDomain):
                noise, inside_here = layer.split_forward_domain(noise)
                inside = inside & inside_here
            noise, layer_logabsdet = layer(noise)
            logabsdet = logabsdet + layer_logabsdet

        return noise, logabsdet, inside

    def log_prob(self, inputs: Tensor) -> Tensor:
        """Returns ``log p(x)`` per row, ``-inf`` exactly on rows outside the support.

        Rows holding ``+-inf`` get ``-inf``, the density's limit there. A finite row so
        large that the layers overflow the flow's dtype (about ``1e38`` in float32) comes
        out NaN; convert the flow and the data to float64 for such values.

        Args:
            inputs: data of shape ``(batch, features)`` in the data's own units.
        """
        self._check_inputs(inputs)
        if inputs.shape[0] == 0:
            return inputs.new_zeros(0)

        # Every flow here has a density that vanishes at infinity; a row holding +-inf gets
        # that limit, -inf, instead of the NaN that inf - inf inside the layers would give.
        at_infinity = torch.isinf(inputs).any(dim=1)
        if torch.any(at_infinity):
            inputs = torch.where(at_infinity[:, None], torch.zeros_like(inputs), inputs)

        noise, logabsdet, inside = self.transform_to_noise(inputs)
        log_prob = self._base_log_prob(noise) + logabsdet - self.log_normalizer.to(noise.dtype)

        return torch.where(inside & ~at_infinity, log_prob, torch.full_like(log_prob, -math.inf))

    def forward(self, inputs: Tensor) -> Tensor:
        """Returns :meth:`log_prob` of ``inputs``; what ``DistributedDataParallel`` calls."""
        return self.log_prob(inputs)

    @torch.no_grad()
    def log_prob_in_chunks(self, inputs: Tensor, chunk_size: int = 8192) -> Tensor:
        """Returns ``log_prob`` of many rows, ``chunk_size`` at a time, in evaluation mode.

        No gradients are kept, and each chunk is moved to the flow's device and dtype, so
        memory stays bounded by one chunk's intermediates. The result is on the flow's
        device.
        """
        was_training = self.training
        self.eval()
        try:
            parts = [
                self.log_prob(inputs[start : start + chunk_size].to(self.log_normalizer))
                for start in range(0, len(inputs), chunk_size)
            ]
        finally:
            self.train(was_training)

        return torch.cat(parts) if parts else self.log_normalizer.new_zeros(0)

    # --- sampling ---------------------------------------------------------------------------

    def _noise_to_data(self, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        samples = noise
        logabsdet = noise.new_zeros(noise.shape[0])
        inside = torch.ones(noise.shape[0], dtype=torch.bool, device=noise.device)
        tail_start = self.support.tail_start
        for index in reversed(range(len(self.layers))):
            layer = self.layers[index]
            if index >= tail_start and isinstance(layer, ELU):
                samples = layer.clamp_into_codomain(samples)
            elif isinstance(layer, RestrictedDomain):
                samples, inside_here = layer.split_inverse_domain(samples)
                inside = inside & inside_here
            samples, layer_logabsdet = layer.inverse(samples)
            logabsdet = logabsdet + layer_logabsdet

        return samples, logabsdet, inside

    def _check_sample_request(self, num_samples: int, dtype: torch.dtype | None) -> torch.dtype:
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 0:
            raise ValueError(f"num_samples must be a non-negative integer; got {num_samples!r}")
        dtype = dtype or self.dtype
        if dtype != self.dtype:
            raise TypeError(
                f"cannot sample {dtype} from a {self.dtype} flow; convert the flow with "
                f".to({dtype}) first"
            )

        return dtype

    def _draw(
        self,
        num_samples: int,
        dtype: torch.dtype,
        generator: torch.Generator | None,
        with_log_prob: bool,
    ) -> tuple[Tensor, Tensor | None]:
        device = self.log_normalizer.device
        if num_samples == 0:
            empty_log_prob = torch.zeros(0, dtype=dtype, device=device)
            return (
                torch.zeros(0, self.features, dtype=dtype, device=device),
                empty_log_prob if with_log_prob else None,
            )

        # The truncation box depends only on the parameters: one pass through the tail
        # layers serves every rejection round, and sampling alone skips the base density.
        box = self.base_box(dtype) if self.support.truncated_base else None

        samples, log_probs = [], []
        remaining, attempts = num_samples, 0
        while remaining > 0:
            attempts += 1
            if attempts > 100:
                raise InputOutsideDomain(
                    f"rejection sampling still lacked {remaining} of {num_samples} draws after "
                    "100 rounds; the flow's image covers almost none of its base"
                )
            noise = self._sample_base(remaining, dtype, generator, box)
            drawn, inverse_logabsdet, inside = self._noise_to_data(noise)
            samples.append(drawn[inside])
            if with_log_prob:
                base_log_prob = self._base_log_prob(noise, box)
                log_prob = base_log_prob - inverse_logabsdet - self.log_normalizer.to(dtype)
                log_probs.append(log_prob[inside])
            remaining -= int(inside.sum())

        drawn_all = torch.cat(samples)[:num_samples]
        if not with_log_prob:
            return drawn_all, None

        return drawn_all, torch.cat(log_probs)[:num_samples]

    def sample_and_log_prob(
        self,
        num_samples: int,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draws ``num_samples`` points and returns them with their log-densities.

        Args:
            num_samples: how many points, 0 or more.
            dtype: floating dtype of the draws; must be the flow's (the default).
            generator: a ``torch.Generator`` for repeatable draws.
        """
        dtype = self._check_sample_request(num_samples, dtype)
        samples, log_prob = self._draw(num_samples, dtype, generator, with_log_prob=True)

        return samples, log_prob

    def sample(
        self,
        num_samples: int,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draws ``num_samples`` points in the data's own units; never NaN or inf.

        The same draws as :meth:`sample_and_log_prob` with the same generator, without the
        cost of the base log-density.
        """
        dtype = self._check_sample_request(num_samples, dtype)
        samples, _ = self._draw(num_samples, dtype, generator, with_log_prob=False)

        return samples

    @torch.no_grad()
    def sample_in_chunks(
        self,
        num_samples: int,
        chunk_size: int = 65_536,
        generator: torch.Generator | None = None,
    ) -> Iterator[Tensor]:
        """Yields ``num_samples`` draws in chunks of at most ``chunk_size`` rows.

        Memory stays bounded by the chunk size whatever ``num_samples`` is, so ten million
        samples can stream to a file. No gradients are kept.

        Example:
            >>> from flowkit.transforms import ELU
            >>> flow = Flow([ELU(2)], features=2)
            >>> [chunk.shape[0] for chunk in flow.sample_in_chunks(5, chunk_size=2)]
            [2, 2, 1]
        """
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 0:
            raise ValueError(f"num_samples must be a non-negative integer; got {num_samples!r}")

        for start in range(0, num_samples, chunk_size):
            yield self.sample(min(chunk_size, num_samples - start), generator=generator)

    @torch.no_grad()
    def estimate_normalizer(
        self, num_samples: int = 100_000, generator: torch.Generator | None = None
    ) -> tuple[float, float]:
        """Estimates, for an inexact flow, the base mass its image keeps, and stores it.

        Returns ``(mass, standard_error)`` from the share of base draws whose inverse stays
        in every domain; ``log_prob`` then subtracts ``log(mass)``. An exact flow returns
        ``(1.0, 0.0)`` without drawing.
        """
        if self.support.exact:
            return 1.0, 0.0

        noise = self._sample_base(num_samples, torch.float64, generator)
        _, _, inside = self._noise_to_data(noise)
        mass = inside.double().mean().item()
        error = math.sqrt(max(mass * (1 - mass), 0.0) / num_samples)
        if mass == 0:
            raise InputOutsideDomain("no base draw reached the flow's image")
        self.log_normalizer.fill_(math.log(mass))
        self.log_normalizer_error.fill_(error / mass)
        logger.info("inexact flow keeps %.4f +- %.4f of its base mass", mass, error)

        return mass, error
