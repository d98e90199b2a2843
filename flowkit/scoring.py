r"""Per-row out-of-distribution scores: log-likelihood, ELU saturation, and their combination.

Two scores come from one data-to-noise pass of a flow:

- the log-likelihood :math:`\log p(x)` in nats (``-inf`` outside the support);
- the ELU saturation: the share of the flow's ELU units that sit near their floor
  :math:`-\alpha`, defined in :func:`score`.

:class:`ScoreReference` fixes, from in-distribution data alone, how the two are combined,
and :func:`auroc` measures how well a score separates inliers from outliers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flowkit.flow import Flow
from flowkit.transforms import ELU, LowerBound

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MARGIN",
    "ScoreReference",
    "Scores",
    "auroc",
    "score",
]

logger = logging.getLogger(__name__)

DEFAULT_MARGIN = 0.05
r"""A unit counts as near its floor when its value is within ``margin * alpha`` of
:math:`-\alpha`. For an ELU of pre-activation :math:`u` that is :math:`u < \log 0.05 \approx
-3.0`, where the unit's slope :math:`\alpha e^u` has fallen below 5 % of its linear side's."""

DEFAULT_CHUNK_SIZE = 8192
"""Rows scored at a time, which bounds the memory of the pass."""


@dataclass(frozen=True)
class Scores:
    """Per-row scores of a data set under a flow, from :func:`score`.

    Attributes:
        log_likelihood: :math:`\\log p(x)` in nats, shape ``(rows,)``; ``-inf`` on rows
            outside the flow's support. Low means unusual.
        elu_saturation: share of the flow's ELU units near their floor on each row's
            data-to-noise pass, in ``[0, 1]``, shape ``(rows,)``. High means unusual (the
            direction fixed before any out-of-distribution data was looked at).
        elu_units: ELU units examined per row (0 when the flow has none; the saturation is
            then 0 on every row).
        margin: the margin that defined "near the floor".
    """

    log_likelihood: Tensor
    elu_saturation: Tensor
    elu_units: int
    margin: float

    def __len__(self) -> int:
        """The number of rows scored."""
        return int(self.log_likelihood.shape[0])


class _SaturationCounter:
    """Forward hooks that count, per row, ELU units near their floor and units examined.

    Three kinds of unit are counted, each one value per row and feature:

    - every ``torch.nn.ELU`` module inside the flow (the conditioners' activations,
      ``alpha = module.alpha``, 1 in flowkit's conditioners): its output;
    - every flowkit :class:`~flowkit.transforms.ELU` layer: the ELU's value
      :math:`v \\in (-\\alpha, \\infty)`, which is the layer's output in the
      ``data_to_noise`` orientation and its input in ``noise_to_data``;
    - every bounded feature of a :class:`~flowkit.transforms.LowerBound` layer: the ELU's
      value :math:`v = (x - l)/\\sigma - \\alpha`.
    """

    def __init__(self, flow: Flow, margin: float) -> None:
        self.margin = margin
        self.saturated: Tensor | None = None
        self.examined: Tensor | None = None
        self.handles: list[Any] = []
        for name, module in flow.named_modules():
            hook = self._hook_for(name, module)
            if hook is not None:
                self.handles.append(module.register_forward_hook(hook))

    def _hook_for(self, name: str, module: nn.Module) -> Callable[..., None] | None:
        if isinstance(module, nn.ELU):
            return lambda _, __, output: self._count(name, output, float(module.alpha))
        if isinstance(module, ELU):
            return lambda _, inputs, output: self._count(
                name,
                output[0] if module.orientation == "data_to_noise" else inputs[0],
                module.alpha.to(inputs[0].dtype),
            )
        if isinstance(module, LowerBound):
            return lambda _, inputs, __: self._count_lower_bound(name, module, inputs[0])

        return None

    def start(self, rows: int, device: torch.device) -> None:
        """Zeroes the counts for a chunk of ``rows`` rows."""
        self.saturated = torch.zeros(rows, dtype=torch.long, device=device)
        self.examined = torch.zeros(rows, dtype=torch.long, device=device)

    def _add(self, name: str, near_floor: Tensor, examined: Tensor) -> None:
        if near_floor.shape[0] != self.saturated.shape[0]:
            raise ValueError(
                f"ELU module {name!r} saw {near_floor.shape[0]} rows in a chunk of "
                f"{self.saturated.shape[0]}; saturation needs one value per row and unit"
            )
        self.saturated += near_floor.reshape(near_floor.shape[0], -1).sum(dim=1)
        self.examined += examined

    def _count(self, name: str, values: Tensor, alpha: float | Tensor) -> None:
        floor = -alpha * (1 - self.margin)
        flat = values.reshape(values.shape[0], -1)

        self._add(name, values < floor, torch.full_like(self.examined, flat.shape[1]))

    def _count_lower_bound(self, name: str, layer: LowerBound, inputs: Tensor) -> None:
        dtype = inputs.dtype
        lower, scale = layer.lower.to(dtype), layer.scale.to(dtype)
        alpha = layer.alpha.to(dtype)

        # v < -alpha (1 - margin) with v = (x - l)/sigma - alpha, written without cancellation.
        near_floor = (inputs - lower < scale * alpha * self.margin) & layer.bounded
        examined = torch.full_like(self.examined, int(layer.bounded.sum()))
        self._add(name, near_floor, examined)

    def remove(self) -> None:
        """Removes every hook."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _rows_as_tensor(rows: Any, reference: Tensor) -> Tensor:
    # A copy: a chunk of a read-only memory map cannot back a tensor.
    values = rows if isinstance(rows, Tensor) else torch.from_numpy(np.array(rows))

    return values.to(device=reference.device, dtype=reference.dtype)


@torch.no_grad()
def score(
    flow: Flow,
    data: Tensor | np.ndarray,
    *,
    margin: float = DEFAULT_MARGIN,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Scores:
    r"""Scores each row of ``data`` by its log-likelihood and its ELU saturation.

    The ELU saturation of a row is the share of the flow's ELU units that sit near their
    floor on the row's data-to-noise pass (``flow.log_prob``):

    .. math::
        s(x) = \frac{1}{U} \sum_{k=1}^{U} \mathbf{1}\{v_k(x) < -\alpha_k (1 - m)\},

    where :math:`v_k(x) \in (-\alpha_k, \infty)` is the value of ELU unit :math:`k` on that
    pass, :math:`U` the number of units and :math:`m` the ``margin``. For a unit
    :math:`v = \alpha\,\mathrm{expm1}(u)` the condition is :math:`u < \log m`: the unit's
    slope :math:`\alpha e^u` has fallen below :math:`m` times its linear side's. A unit is
    one value per row of every ``torch.nn.ELU`` module in the flow (the conditioners, with
    :math:`\alpha = 1`), every feature of a flowkit :class:`~flowkit.transforms.ELU` layer
    in either orientation, and every bounded feature of a
    :class:`~flowkit.transforms.LowerBound` layer (where the condition reads
    :math:`x - l < m\,\alpha\sigma`). ELUs called as functions (``F.elu``) are not seen. The
    default ``unbounded`` and ``unit-interval`` presets hold conditioner ELUs only.

    On a row outside the support the flow replaces the offending values by interior points
    before the layer runs, so its saturation describes those points; its log-likelihood is
    ``-inf`` and says all there is to say.

    Rows are scored ``chunk_size`` at a time in evaluation mode (dropout off), each chunk
    moved to the flow's device and dtype, so a memory-mapped ``.npy`` of any size works.

    Args:
        flow: the flow.
        data: rows of shape ``(rows, flow.features)`` in the data's own units: a tensor or a
            numpy array (a memory map is read one chunk at a time).
        margin: the share of :math:`\alpha` above the floor that counts as near it, in
            ``(0, 1)``.
        chunk_size: rows per pass.

    Returns:
        The :class:`Scores` of every row, on the CPU.

    Raises:
        ValueError: ``data`` has the wrong shape, a row holds NaN or inf, or an argument is
            out of range.

    Example:
        >>> from flowkit import build_flow
        >>> flow = build_flow("unbounded", features=2, num_layers=1, hidden_features=4)
        >>> scores = score(flow, torch.zeros(3, 2))
        >>> scores.log_likelihood.shape, scores.elu_units
        (torch.Size([3]), 20)
    """
    if not 0 < margin < 1:
        raise ValueError(f"margin must lie in (0, 1); got {margin!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    shape = tuple(data.shape)
    if len(shape) != 2 or shape[1] != flow.features:
        columns = shape[1] if len(shape) == 2 else None
        raise ValueError(
            f"data must have {flow.features} column(s), one per feature of the flow; got "
            + (f"{columns} column(s)" if columns is not None else f"shape {shape}")
        )

    reference = flow.log_normalizer
    log_likelihoods, saturations = [], []
    units = 0
    counter = _SaturationCounter(flow, margin)
    was_training = flow.training
    flow.eval()
    try:
        for start in range(0, shape[0], chunk_size):
            chunk = _rows_as_tensor(data[start : start + chunk_size], reference)
            finite = torch.isfinite(chunk).all(dim=1)
            if not torch.all(finite):
                rows = ((~finite).nonzero().flatten()[:5] + start).tolist()
                raise ValueError(f"data hold NaN or inf in rows {rows} (counted from 0)")

            counter.start(len(chunk), chunk.device)
            log_likelihoods.append(flow.log_prob(chunk).cpu())
            examined = counter.examined.cpu()
            units = max(units, int(examined.max())) if len(examined) else units
            share = counter.saturated.cpu().double() / examined.clamp_min(1).double()
            saturations.append(share.to(reference.dtype))
    finally:
        counter.remove()
        flow.train(was_training)

    if units == 0 and shape[0] > 0:
        logger.warning("the flow has no ELU units; every saturation score is 0")
    empty = torch.zeros(0, dtype=reference.dtype)

    return Scores(
        log_likelihood=torch.cat(log_likelihoods) if log_likelihoods else empty,
        elu_saturation=torch.cat(saturations) if saturations else empty.clone(),
        elu_units=units,
        margin=margin,
    )


@dataclass(frozen=True)
class ScoreReference:
    r"""Fixes the combination of the two scores from in-distribution data alone.

    Each score is turned into an outlier score (high means unusual) and standardized with
    the mean and standard deviation it has on in-distribution reference data (a validation
    split, never the out-of-distribution data); the combination is their plain sum,

    .. math::
        c(x) = \frac{-\log p(x) - \mu_{\mathrm{nll}}}{\sigma_{\mathrm{nll}}}
             + \frac{s(x) - \mu_{s}}{\sigma_{s}}.

    Equal weights, because nothing but out-of-distribution labels could say which score
    deserves more, and those are not to be used in building the rule. A row outside the
    support (:math:`\log p = -\infty`) gets :math:`c = +\infty`. The saturation is a share
    of :math:`U` units, so its resolution is :math:`1/U`; :math:`\sigma_s` is floored there,
    which keeps a reference on which no unit ever saturates from dividing by zero.

    Measured (``docs/elu_demonstrations.md``, section 7): on shifted toy points the
    saturation points the expected way and the sum gains a little where the likelihood is
    fooled; on digits of unseen classes it points the other way and the sum does worse than
    the log-likelihood alone. Treat the combination as an experiment, not a default.

    Attributes:
        nll_mean: :math:`\mu_{\mathrm{nll}}`, mean negative log-likelihood (nats).
        nll_scale: :math:`\sigma_{\mathrm{nll}}`.
        saturation_mean: :math:`\mu_s`.
        saturation_scale: :math:`\sigma_s`.

    Example:
        >>> scores = Scores(torch.tensor([-1.0, -3.0]), torch.tensor([0.0, 0.5]), 2, 0.05)
        >>> ScoreReference.fit(scores).combine(scores)
        tensor([-1.2071,  1.2071])
    """

    nll_mean: float
    nll_scale: float
    saturation_mean: float
    saturation_scale: float

    @classmethod
    def fit(cls, scores: Scores) -> ScoreReference:
        """Takes the means and standard deviations from in-distribution ``scores``.

        Rows outside the support are left out of the log-likelihood's figures.

        Raises:
            ValueError: fewer than two rows inside the support, or log-likelihoods that are
                all equal.
        """
        inside = torch.isfinite(scores.log_likelihood)
        if int(inside.sum()) < 2:
            raise ValueError(
                f"a score reference needs at least 2 rows inside the support; got "
                f"{int(inside.sum())} of {len(scores)}"
            )
        nll = -scores.log_likelihood[inside].double()
        saturation = scores.elu_saturation.double()

        nll_scale = nll.std().item()
        if not nll_scale > 0:
            raise ValueError("the reference log-likelihoods are all equal; cannot standardize")
        resolution = 1.0 / max(scores.elu_units, 1)

        return cls(
            nll_mean=nll.mean().item(),
            nll_scale=nll_scale,
            saturation_mean=saturation.mean().item(),
            saturation_scale=max(saturation.std().item(), resolution),
        )

    def combine(self, scores: Scores) -> Tensor:
        """Returns the combined outlier score :math:`c(x)` of every row (high = unusual)."""
        nll = -scores.log_likelihood.double()
        standardized_nll = (nll - self.nll_mean) / self.nll_scale
        standardized_saturation = (
            scores.elu_saturation.double() - self.saturation_mean
        ) / self.saturation_scale

        return (standardized_nll + standardized_saturation).to(scores.log_likelihood.dtype)


def _as_flat_array(values: Any, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} is empty; AUROC needs at least one inlier and one outlier")
    if np.isnan(array).any():
        raise ValueError(f"{name} holds NaN at {np.flatnonzero(np.isnan(array))[:5].tolist()}")

    return array


def auroc(inlier_scores: Any, outlier_scores: Any) -> float:
    r"""Area under the ROC curve of a score where high means outlier.

    It is the probability that a random outlier scores above a random inlier, ties counting
    one half, computed from ranks (the Mann-Whitney statistic): with :math:`R` the sum of the
    outliers' ranks among all :math:`n_{\mathrm{in}} + n_{\mathrm{out}}` scores, tied
    scores sharing their average rank,

    .. math::
        \mathrm{AUROC} = \frac{R - n_{\mathrm{out}}(n_{\mathrm{out}} + 1)/2}
                              {n_{\mathrm{in}}\, n_{\mathrm{out}}}.

    0.5 means no separation, 1 a perfect one, below 0.5 a score pointing the wrong way.
    Infinite scores are fine; NaN is refused.

    Args:
        inlier_scores: scores of in-distribution rows (a tensor, array or sequence).
        outlier_scores: scores of out-of-distribution rows.

    Example:
        >>> auroc([0.1, 0.4], [0.4, 0.9])
        0.875
    """
    inliers = _as_flat_array(inlier_scores, "inlier_scores")
    outliers = _as_flat_array(outlier_scores, "outlier_scores")
    values = np.concatenate([inliers, outliers])

    order = np.argsort(values, kind="mergesort")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    # Ranks start at 1; a tie group starting at index i with c members shares i + (c + 1) / 2.
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)

    outlier_rank_sum = ranks[len(inliers) :].sum()
    statistic = outlier_rank_sum - len(outliers) * (len(outliers) + 1) / 2

    return float(statistic / (len(inliers) * len(outliers)))
