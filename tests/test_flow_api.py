"""The Flow API and the preset builder: shapes, dtypes, gradients, errors, inexact stacks."""

from __future__ import annotations

import math

import pytest
import torch
from nflows.transforms import ActNorm, LULinear

import flowkit
from flowkit import ELU, Flow, FlowConfig, InexactFlowError, Standardize, build_flow, train
from flowkit.presets import fit_data_dependent_layers, training_defaults

TINY = {"num_layers": 2, "hidden_features": 8, "num_blocks": 1, "num_bins": 4}

PRESET_CASES = {
    "unbounded-spline": ({"preset": "unbounded"}, lambda n, d: torch.randn(n, d) * 2 + 1),
    "unbounded-affine-lu": (
        {"preset": "unbounded", "coupling": "affine", "mixing": "lu"},
        lambda n, d: torch.randn(n, d),
    ),
    "unbounded-no-elu": (
        {"preset": "unbounded", "elu_tail": False},
        lambda n, d: torch.randn(n, d),
    ),
    "bounded-elu-tail": (
        {"preset": "bounded", "elu_tail": True},
        lambda n, d: torch.exp(torch.randn(n, d)),
    ),
    "unit-interval": ({"preset": "unit-interval"}, lambda n, d: torch.rand(n, d)),
}


def make_flow(case: str, features: int) -> tuple[Flow, torch.Tensor]:
    options, sampler = PRESET_CASES[case]
    options = dict(options, **TINY)
    if options["preset"] == "bounded":
        options["lower"] = [0.0] * features
    flow = build_flow(features=features, **options)
    data = sampler(256, features)
    fit_data_dependent_layers(flow, data)
    return flow, data


@pytest.mark.parametrize("case", sorted(PRESET_CASES))
@pytest.mark.parametrize("features", [1, 2, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_prob_and_sample_shapes_and_dtypes(case, features, dtype):
    flow, data = make_flow(case, features)
    flow = flow.to(dtype).eval()

    log_prob = flow.log_prob(data[:7].to(dtype))
    samples = flow.sample(11, dtype=dtype)

    assert log_prob.shape == (7,) and log_prob.dtype == dtype
    assert torch.isfinite(log_prob).all()
    assert samples.shape == (11, features) and samples.dtype == dtype
    assert torch.isfinite(samples).all()


@pytest.mark.parametrize("case", sorted(PRESET_CASES))
def test_gradients_reach_every_parameter(case):
    flow, data = make_flow(case, 3)
    for parameter in flow.parameters():
        parameter.data.add_(0.1 * torch.randn_like(parameter))

    flow.log_prob(data).mean().backward()

    missing = [name for name, p in flow.named_parameters() if p.grad is None or p.grad.eq(0).all()]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("case", sorted(PRESET_CASES))
def test_eval_equals_train_after_initialisation(case):
    flow, data = make_flow(case, 3)

    flow.train()
    in_training = flow.log_prob(data[:20])
    flow.eval()
    in_evaluation = flow.log_prob(data[:20])

    torch.testing.assert_close(in_training, in_evaluation)


@pytest.mark.parametrize("batch", [0, 1])
def test_small_batches(batch):
    flow, data = make_flow("unbounded-spline", 2)

    assert flow.log_prob(data[:batch]).shape == (batch,)
    assert flow.sample(batch).shape == (batch, 2)


@pytest.mark.parametrize("count", [-1, 2.5, "3", True])
def test_sample_rejects_bad_counts(count):
    flow, _ = make_flow("unbounded-spline", 2)

    with pytest.raises(ValueError, match="num_samples must be a non-negative integer"):
        flow.sample(count)


def test_sampling_is_repeatable_with_a_generator():
    flow, _ = make_flow("unbounded-spline", 2)

    first = flow.sample(5, generator=torch.Generator().manual_seed(3))
    second = flow.sample(5, generator=torch.Generator().manual_seed(3))

    torch.testing.assert_close(first, second)


@pytest.mark.parametrize("case", sorted(PRESET_CASES))
def test_sample_draws_what_sample_and_log_prob_draws(case):
    # sample skips the base density; the draws themselves must not change.
    flow, _ = make_flow(case, 2)
    flow.eval()

    with torch.no_grad():
        alone = flow.sample(64, generator=torch.Generator().manual_seed(5))
        paired, log_prob = flow.sample_and_log_prob(64, generator=torch.Generator().manual_seed(5))

    assert torch.equal(alone, paired)
    torch.testing.assert_close(log_prob, flow.log_prob(paired), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("inputs", "error", "message"),
    [
        (torch.zeros(3, 3), ValueError, r"shape \(batch, 2\)"),
        (torch.zeros(3), ValueError, r"shape \(batch, 2\)"),
        (torch.zeros(3, 2, dtype=torch.int64), TypeError, "floating point"),
        (torch.tensor([[0.0, math.nan]], dtype=torch.float64), ValueError, "NaN in rows"),
        (torch.zeros(3, 2, dtype=torch.float32), TypeError, "inputs are torch.float32 but"),
        ([[0.0, 0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_log_prob_rejects_bad_inputs(inputs, error, message):
    flow, _ = make_flow("unbounded-spline", 2)

    with pytest.raises(error, match=message):
        flow.log_prob(inputs)


def test_sample_rejects_a_dtype_other_than_the_flows():
    flow, _ = make_flow("unbounded-spline", 2)

    with pytest.raises(TypeError, match="cannot sample torch.float32 from a torch.float64"):
        flow.sample(3, dtype=torch.float32)


def test_log_prob_rejects_a_tensor_on_another_device():
    flow, _ = make_flow("unbounded-spline", 2)

    with pytest.raises(ValueError, match="on meta but the flow is on cpu"):
        flow.log_prob(torch.zeros(2, 2, device="meta"))


def test_elu_toward_noise_away_from_the_base_is_refused():
    layers = [ELU(2), LULinear(2), ActNorm(2)]

    with pytest.raises(InexactFlowError, match="layer 0 \\(ELU\\)"):
        Flow(layers, features=2)


def test_inexact_stack_on_request_samples_by_rejection_and_corrects_its_normalizer():
    torch.manual_seed(1)
    linear = LULinear(2)
    with torch.no_grad():
        linear.lower_entries.fill_(0.8)
    flow = Flow([ELU(2, alpha=0.5), linear], features=2, allow_inexact=True)

    mass, error = flow.estimate_normalizer(200_000, generator=torch.Generator().manual_seed(0))
    samples = flow.sample(2000)
    axis = torch.linspace(-12, 12, 801)
    first, second = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([first.flatten(), second.flatten()], dim=1)
    with torch.no_grad():
        integral = torch.exp(flow.log_prob(grid)).sum().item() * (24 / 800) ** 2

    assert 0 < mass < 1 and error < 0.01
    assert torch.isfinite(samples).all()
    assert abs(integral - 1) < 4 * error / mass + 5e-3


def test_exact_flow_reports_unit_normalizer():
    flow, _ = make_flow("unbounded-spline", 2)

    assert flow.support.exact
    assert flow.estimate_normalizer(10) == (1.0, 0.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preset": "sideways"}, "preset must be one of"),
        ({"num_layers": 0}, "num_layers must be a positive integer"),
        ({"alpha": 0.0}, "alpha must be positive"),
        ({"alpha": -2.0}, "alpha must be positive"),
        ({"coupling": "cubic"}, "coupling must be one of"),
        ({"preset": "bounded"}, "needs lower with 2 entries"),
        ({"preset": "bounded", "lower": [None, None]}, "at least one finite lower bound"),
        ({"hidden_features": -4}, "hidden_features must be a positive integer"),
    ],
)
def test_builder_rejects_bad_configurations(options, message):
    with pytest.raises(ValueError, match=message):
        build_flow(features=2, **options)


def test_configuration_round_trips_through_a_dictionary():
    config = FlowConfig(preset="bounded", features=2, lower=[0.0, None], num_layers=3)

    assert FlowConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown flow configuration keys \\['depth'\\]"):
        FlowConfig.from_dict({"depth": 3})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"learning_rate": -1e-3}, "learning_rate must be positive"),
        ({"batch_size": 10_000}, "larger than the"),
        ({"validation_fraction": 1.5}, "validation_fraction must lie in"),
        ({"warmup_steps": -1}, "warmup_steps must be a non-negative integer"),
        ({"learning_rate": math.inf}, "learning_rate must be positive and finite"),
        ({"patience": 0}, "patience must be a positive integer"),
        ({"validation_interval": 2.5}, "validation_interval must be a positive integer"),
    ],
)
def test_training_rejects_bad_arguments(arguments, message):
    flow = build_flow("unbounded", 2, **TINY)

    with pytest.raises(ValueError, match=message):
        train(flow, torch.randn(100, 2), progress=False, **arguments)


def _train_briefly(flow: Flow, data: torch.Tensor, **options):
    """A few steps of batch 16, enough to read which arguments the trainer settled on."""
    return train(flow, data, **{"steps": 2, "batch_size": 16, "progress": False, **options})


@pytest.mark.parametrize(
    ("preset", "options", "expected"),
    [
        ("unbounded", {}, {"learning_rate": 1.2e-2, "warmup_steps": 150}),
        ("bounded", {"lower": [-5.0, None]}, {"learning_rate": 1.2e-2, "warmup_steps": 50}),
        ("unit-interval", {}, {"learning_rate": 2e-3, "warmup_steps": 50}),
    ],
)
def test_training_takes_the_presets_learning_rate_and_warm_up(preset, options, expected):
    flow = build_flow(preset, 2, **TINY, **options)
    data = torch.rand(64, 2) * 0.9 + 0.05

    result = _train_briefly(flow, data)
    given = _train_briefly(
        build_flow(preset, 2, **TINY, **options), data, learning_rate=1e-3, warmup_steps=0
    )

    assert {key: result.arguments[key] for key in expected} == expected
    assert training_defaults(flow) == expected
    assert (given.arguments["learning_rate"], given.arguments["warmup_steps"]) == (1e-3, 0)


def test_a_flow_assembled_by_hand_trains_with_the_generic_rate():
    flow = Flow([Standardize(2), ActNorm(2)], features=2)

    result = _train_briefly(flow, torch.randn(64, 2))

    assert (result.arguments["learning_rate"], result.arguments["warmup_steps"]) == (2e-3, 50)


def test_a_resumed_run_keeps_its_own_learning_rate_and_warm_up():
    data = torch.randn(128, 2)
    first = _train_briefly(
        build_flow("unbounded", 2, **TINY),
        data,
        steps=4,
        learning_rate=1e-3,
        warmup_steps=3,
        stop_after=2,
    )
    flow = build_flow("unbounded", 2, **TINY)
    flow.load_state_dict(first.resume_state["flow"])

    with pytest.raises(ValueError, match="learning_rate 0.001 -> 0.005"):
        _train_briefly(flow, data, steps=4, resume=first.resume_state, learning_rate=5e-3)
    with pytest.raises(ValueError, match="warmup_steps 3 -> 0"):
        _train_briefly(flow, data, steps=4, resume=first.resume_state, warmup_steps=0)
    resumed = _train_briefly(flow, data, steps=4, resume=first.resume_state)

    assert (resumed.arguments["learning_rate"], resumed.arguments["warmup_steps"]) == (1e-3, 3)


@pytest.mark.parametrize("warmup_steps", [0, 40])
def test_early_stopping_waits_for_the_second_half_of_the_decay(warmup_steps):
    # A rate this small moves no float32 weight, so no validation ever improves on the first.
    flow = build_flow("unbounded", 2, **TINY)

    result = train(
        flow,
        torch.randn(256, 2),
        steps=240,
        batch_size=32,
        learning_rate=1e-30,
        warmup_steps=warmup_steps,
        validation_interval=10,
        patience=2,
        progress=False,
    )

    # The rate is at most half its peak from the middle of the cosine part on; the second
    # validation counted from there stops the run.
    middle = warmup_steps + (240 - warmup_steps) // 2
    assert result.stop_reason == "early stopping"
    assert result.best_step == 10
    assert result.steps_completed == middle + 10
    assert result.history[-2]["learning_rate"] <= 0.5 * 1e-30 < result.history[-3]["learning_rate"]


@pytest.mark.parametrize("preset", ["unbounded", "unit-interval"])
@pytest.mark.parametrize("rows", [1, 3])
def test_an_untrained_flow_is_a_valid_density_from_its_first_call(preset, rows):
    # nflows' ActNorm alone would fit itself to this first batch: NaN for one or equal rows.
    flow = build_flow(preset, 2, **TINY)

    first = flow.log_prob(torch.full((rows, 2), 0.5))
    later = flow.log_prob(torch.tensor([[0.25, 0.75], [0.5, 0.5]]))

    assert torch.isfinite(first).all() and torch.isfinite(later).all()


@pytest.mark.parametrize(
    ("preset", "options"), [("unbounded", {}), ("bounded", {"lower": [0.0, None]})]
)
def test_rows_at_infinity_get_minus_infinity_and_leave_the_others_alone(preset, options):
    flow = build_flow(preset, 2, **TINY, **options)
    inputs = torch.tensor([[1.0, math.inf], [-math.inf, 1.0], [math.inf, -math.inf], [1.0, 1.0]])

    log_prob = flow.log_prob(inputs)

    assert log_prob[:3].tolist() == [-math.inf] * 3
    assert log_prob[3] == flow.log_prob(inputs[3:])[0]


def test_training_refuses_data_outside_the_support():
    flow = build_flow("bounded", 2, lower=[0.0, None], **TINY)
    data = torch.randn(100, 2)

    with pytest.raises(ValueError, match="at or below its lower bound"):
        train(flow, data, steps=5, batch_size=16, progress=False)


def test_training_is_repeatable_and_keeps_the_best_weights():
    data = torch.randn(600, 2) @ torch.tensor([[1.0, 0.5], [0.0, 0.3]])
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        flow = build_flow("unbounded", 2, **TINY)
        result = train(
            flow, data, steps=60, batch_size=64, validation_interval=20, progress=False, seed=5
        )
        results.append((result, flow.log_prob(data[:10]).detach()))

    (first, first_log_prob), (second, second_log_prob) = results
    assert torch.equal(first_log_prob, second_log_prob)
    assert first.best_validation_nll == min(row["validation_nll"] for row in first.history)
    assert len(first.history) == 3


def test_training_stops_cleanly_on_a_non_finite_loss():
    flow = build_flow("unbounded", 2, **TINY)
    data = torch.randn(400, 2)
    calls = {"count": 0}
    original = flow.log_prob

    def failing_log_prob(inputs):
        calls["count"] += 1
        values = original(inputs)
        if flow.training and calls["count"] > 25:
            return values * math.nan
        return values

    flow.log_prob = failing_log_prob
    result = train(flow, data, steps=100, validation_interval=10, progress=False)

    assert result.stop_reason == "non-finite loss"
    assert all(torch.isfinite(p).all() for p in flow.parameters())
    assert result.best_step > 0


def test_support_guard_undoes_steps_that_push_training_points_out():
    torch.manual_seed(0)
    data = torch.exp(0.6 * torch.randn(2000, 2))
    layers = [
        flowkit.Standardize(2),
        ELU(2, alpha=1.0, orientation="noise_to_data"),
        ActNorm(2),
        flowkit.AffineCoupling(torch.tensor([1, 0]), lambda i, o: _tiny_net(i, o)),
    ]
    flow = Flow(layers, features=2)
    floor = ((data.min(dim=0).values - data.mean(dim=0)) / data.std(dim=0)).min().item()
    with torch.no_grad():
        # alpha just above the lowest standardized point: likelihood pulls it onto the data.
        layers[1].log_alpha.fill_(math.log(-floor + 1e-3))

    result = train(
        flow,
        data,
        steps=150,
        batch_size=512,
        learning_rate=0.05,
        warmup_steps=1,
        validation_interval=25,
        progress=False,
    )

    assert result.undone_steps > 0
    assert torch.isfinite(flow.log_prob(data)).all()


def _tiny_net(in_features, out_features):
    from flowkit.nets import ResidualConditioner

    return ResidualConditioner(in_features, out_features, hidden_features=8, num_blocks=1)
