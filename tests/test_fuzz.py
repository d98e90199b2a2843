"""Property-based fuzzing of the public tensor APIs with hypothesis.

Random shapes, float32 and float64, extreme finite values (+-1e30, subnormals, exactly
``-alpha``) and ``alpha`` over many orders of magnitude. The properties: no NaN where the
answer is defined, ``InputOutsideDomain`` with a message where it is not, ``log_prob``
exactly ``-inf`` outside the support, finite samples.

Found by this module, and fixed: ``Logit.inverse`` of a noise value past the sigmoid's
saturation (float32: z >= about 16.7 or z <= about -104) returned a point that
``Logit.forward`` put outside its domain (the squeeze rounded to exactly 1 or 0), so such a
sample got ``log_prob = -inf``; the test below now asserts every inverse stays inside.

The default profile keeps the whole module to a few seconds; ``HYPOTHESIS_PROFILE=long``
runs a hundred times more examples.
"""

from __future__ import annotations

import functools
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nflows.transforms import InputOutsideDomain

from flowkit import ELU, Logit, LowerBound, build_flow, fit_data_dependent_layers

settings.register_profile(
    "fuzz-default",
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=3000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Chosen here, not globally, so that other test modules keep hypothesis' own defaults.
FUZZ = settings.get_profile(
    "long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "fuzz-default"
)

DTYPES = st.sampled_from([torch.float32, torch.float64])
ALPHAS = st.floats(min_value=-6.0, max_value=6.0).map(lambda power: 10.0**power)
SPECIAL = [0.0, -0.0, 1e30, -1e30, 1e-30, -1e-30, 1e-40, -1e-40, 5e-324, -5e-324, 1.0, -1.0]


def _values(alpha: float | None = None) -> st.SearchStrategy[float]:
    """Finite floats within +-1e30, the special values, and values at and near ``-alpha``."""
    special = list(SPECIAL)
    if alpha is not None:
        special += [-alpha, -alpha * (1 - 1e-7), -alpha * (1 + 1e-7), -alpha / 2]
    return st.one_of(
        st.floats(min_value=-1e30, max_value=1e30, allow_nan=False),
        st.floats(min_value=-50.0, max_value=50.0),
        st.sampled_from(special),
    )


@st.composite
def _batches(draw, alpha: float | None = None, max_features: int = 4):
    """A tensor of shape (rows, features) in a random dtype, with rows possibly 0."""
    dtype = draw(DTYPES)
    rows = draw(st.integers(min_value=0, max_value=6))
    features = draw(st.integers(min_value=1, max_value=max_features))
    values = draw(st.lists(_values(alpha), min_size=rows * features, max_size=rows * features))
    tensor = torch.tensor(values, dtype=torch.float64).reshape(rows, features).to(dtype)

    return tensor


def _no_nan(*tensors: torch.Tensor) -> None:
    for tensor in tensors:
        assert not torch.any(torch.isnan(tensor)), tensor


def _message_names_the_bound(error: Exception) -> None:
    message = str(error)
    assert len(message) > 20 and ("alpha" in message or "bound" in message), message


@FUZZ
@given(data=st.data(), alpha=ALPHAS, learnable=st.booleans())
def test_elu_toward_noise(data, alpha: float, learnable: bool) -> None:
    inputs = data.draw(_batches(alpha))
    elu = ELU(inputs.shape[1], alpha=alpha, learnable=learnable)
    floor = -elu.alpha.to(inputs.dtype)

    # The exp side is defined everywhere: no NaN, outputs in [-alpha, inf).
    with torch.no_grad():
        outputs, logabsdet = elu(inputs)
    _no_nan(outputs, logabsdet)
    assert torch.all(outputs >= floor)
    assert outputs.dtype == inputs.dtype and logabsdet.shape == (len(inputs),)

    # The log1p side is defined strictly above -alpha and refused, with the bound, below.
    try:
        with torch.no_grad():
            recovered, inverse_logabsdet = elu.inverse(inputs)
    except InputOutsideDomain as error:
        assert torch.any(inputs <= floor)
        _message_names_the_bound(error)
    else:
        assert torch.all(inputs > floor)
        _no_nan(recovered, inverse_logabsdet)


@FUZZ
@given(data=st.data(), alpha=ALPHAS)
def test_elu_toward_data(data, alpha: float) -> None:
    inputs = data.draw(_batches(alpha))
    elu = ELU(inputs.shape[1], alpha=alpha, orientation="noise_to_data")
    floor = -elu.alpha.to(inputs.dtype)

    with torch.no_grad():
        samples, logabsdet = elu.inverse(inputs)
    _no_nan(samples, logabsdet)
    assert torch.all(samples >= floor)

    try:
        with torch.no_grad():
            noise, forward_logabsdet = elu(inputs)
    except InputOutsideDomain as error:
        assert torch.any(inputs <= floor)
        _message_names_the_bound(error)
    else:
        assert torch.all(inputs > floor)
        _no_nan(noise, forward_logabsdet)


@FUZZ
@given(
    x=st.floats(min_value=-6.0, max_value=1e6),
    alpha=ALPHAS,
    dtype=DTYPES,
)
def test_elu_round_trip_inside_the_documented_range(x: float, alpha: float, dtype) -> None:
    # The README's bound: 1e-4 down to x = -6.5 in float32 (float64 is far better).
    elu = ELU(1, alpha=alpha)
    inputs = torch.tensor([[x]], dtype=dtype)
    with torch.no_grad():
        recovered, _ = elu.inverse(elu(inputs)[0])

    torch.testing.assert_close(recovered, inputs, rtol=1e-4, atol=1e-4)


@FUZZ
@given(data=st.data(), alpha=ALPHAS)
def test_lower_bound_layer(data, alpha: float) -> None:
    inputs = data.draw(_batches())
    features = inputs.shape[1]
    lower = data.draw(
        st.lists(
            st.one_of(st.sampled_from([0.0, -1e6, 1e6, -math.inf]), st.floats(-100, 100)),
            min_size=features,
            max_size=features,
        )
    )
    layer = LowerBound(lower, alpha=alpha).to(inputs.dtype)
    bound = layer.lower.to(inputs.dtype)

    try:
        with torch.no_grad():
            noise, logabsdet = layer(inputs)
    except InputOutsideDomain as error:
        assert torch.any((inputs <= bound) & layer.bounded)
        _message_names_the_bound(error)
    else:
        assert torch.all((inputs > bound) | ~layer.bounded)
        _no_nan(noise, logabsdet)

    # Any noise maps into the support, strictly above every bound.
    with torch.no_grad():
        samples, inverse_logabsdet = layer.inverse(inputs)
    _no_nan(samples, inverse_logabsdet)
    assert torch.all((samples > bound) | ~layer.bounded)


@FUZZ
@given(data=st.data(), epsilon=st.sampled_from([1e-6, 1e-3, 0.1]))
def test_logit_layer(data, epsilon: float) -> None:
    inputs = data.draw(_batches())
    layer = Logit(inputs.shape[1], epsilon=epsilon)

    try:
        with torch.no_grad():
            noise, logabsdet = layer(inputs)
    except InputOutsideDomain as error:
        assert not torch.all((inputs >= 0) & (inputs <= 1))
        assert "[0, 1]" in str(error)
    else:
        _no_nan(noise, logabsdet)

    with torch.no_grad():
        samples, inverse_logabsdet = layer.inverse(inputs)
    _no_nan(samples, inverse_logabsdet)
    # Every inverse lies inside the forward domain, even where the sigmoid saturates.
    _, inside = layer.split_forward_domain(samples)
    assert torch.all(inside), samples[~inside]


PRESETS = {
    "unbounded": ("unbounded", {}),
    "elu-tail": ("unbounded", {"elu_tail": True}),
    "bounded": ("bounded", {"lower": [0.0, None]}),
    "unit-interval": ("unit-interval", {}),
}


@functools.cache
def _flow(name: str, dtype: torch.dtype):
    """A small preset flow fitted to some data, its weights perturbed, in ``dtype``."""
    preset, options = PRESETS[name]
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        flow = build_flow(preset, features=2, num_layers=1, hidden_features=8, **options)
        flow = flow.to(torch.float64)
        if preset == "unit-interval":
            data = 0.01 + 0.98 * torch.rand(200, 2, generator=generator, dtype=torch.float64)
        else:
            data = torch.randn(200, 2, generator=generator, dtype=torch.float64).exp()
        fit_data_dependent_layers(flow, data)
        with torch.no_grad():
            for parameter in flow.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))

    return flow.to(dtype).eval()


def _outside(name: str, inputs: torch.Tensor) -> torch.Tensor:
    """Rows outside the preset's support, known from the preset's definition alone."""
    if name == "bounded":
        return inputs[:, 0] <= 0
    if name == "unit-interval":
        squeezed = 1e-6 + (1 - 2e-6) * inputs
        return torch.any((squeezed <= 0) | (squeezed >= 1), dim=1)
    return torch.zeros(len(inputs), dtype=torch.bool)


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(PRESETS)))
def test_flow_log_prob(data, name: str) -> None:
    inputs = data.draw(_batches(max_features=2).filter(lambda batch: batch.shape[1] == 2))
    flow = _flow(name, inputs.dtype)

    with torch.no_grad():
        log_prob = flow.log_prob(inputs)
    _no_nan(log_prob)
    outside = _outside(name, inputs)
    assert torch.all(log_prob[outside] == -math.inf)
    assert torch.all(log_prob < math.inf)

    # Moderate points inside the support have a finite density.
    moderate = ~outside & torch.all(inputs.abs() < 1e3, dim=1)
    if name == "unit-interval":
        moderate &= torch.all((inputs > 0.001) & (inputs < 0.999), dim=1)
    if name == "bounded":
        moderate &= inputs[:, 0] > 1e-3
    assert torch.all(torch.isfinite(log_prob[moderate])), (inputs, log_prob)


@FUZZ
@given(
    name=st.sampled_from(sorted(PRESETS)),
    dtype=DTYPES,
    count=st.integers(min_value=0, max_value=64),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_flow_samples_are_finite_and_inside(name: str, dtype, count: int, seed: int) -> None:
    flow = _flow(name, dtype)
    generator = torch.Generator().manual_seed(seed)

    with torch.no_grad():
        samples, log_prob = flow.sample_and_log_prob(count, dtype=dtype, generator=generator)
    assert samples.shape == (count, 2) and samples.dtype == dtype
    assert torch.all(torch.isfinite(samples))
    _no_nan(log_prob)
    assert not torch.any(_outside(name, samples))


@pytest.mark.parametrize("count", [-1, 1.5, True])
def test_flow_sample_rejects_bad_counts(count) -> None:
    with pytest.raises(ValueError, match="non-negative integer"):
        _flow("unbounded", torch.float64).sample(count)
