"""Measure how precise flowkit's ELU math is against the written-out formulas.

For inputs ``x`` from ``-1e-12`` to ``-30`` (log-spaced), in float32 and float64, compare
flowkit's functions (``expm1``, ``log1p``, log-determinant ``log(alpha) + x``) with the
forms written out by hand (``alpha * (exp(x) - 1)``, ``log(y / alpha + 1)``,
``log(alpha * exp(x))`` and ``log(y + alpha)``). The reference is computed with Python's
``decimal`` module at 50 significant digits from the very same floating-point inputs, so
it measures the error of each formula and not the rounding of its input. (A float64
reference would do for the float32 case; for float64 only a wider arithmetic is a valid
reference.)

The inverse is fed ``y``, the exact forward value rounded to the working precision, and its
reference is ``log1p(y / alpha)`` of that rounded ``y``. Where ``y`` rounds onto
``-alpha`` (float32 below about ``x = -17.3``) the inverse is outside its domain: those
points are counted, not scored.

Run: python examples/elu_precision.py [--quick] [--figure docs/figures/elu_precision.png]
"""

from __future__ import annotations

import argparse
import decimal
import math
from pathlib import Path

import torch
from torch import Tensor

from flowkit.transforms.elu_math import elu_forward, elu_inverse, elu_log_abs_det

DTYPES = {"float32": torch.float32, "float64": torch.float64}
QUANTITIES = ("forward", "inverse", "log-det (from x)", "log-det (from y)")
FORMS = ("flowkit", "written out")
RANGES = ((1e-12, 1e-4), (1e-4, 1.0), (1.0, 30.0 + 1e-9))
"""Bands of ``|x|`` over which the table reports the largest relative error."""
DEFAULT_FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "elu_precision.png"

decimal.getcontext().prec = 50


def _exact_references(inputs: list[float], alpha: float) -> dict[str, list[decimal.Decimal]]:
    """Forward value and log-determinant at each input, to 50 significant digits."""
    exact_alpha = decimal.Decimal(alpha)
    forward = [exact_alpha * (decimal.Decimal(x).exp() - 1) for x in inputs]
    log_det = [exact_alpha.ln() + decimal.Decimal(x) for x in inputs]

    return {"forward": forward, "log-det (from x)": log_det}


def _relative_errors(computed: Tensor, reference: list[decimal.Decimal | None]) -> list[float]:
    """``|computed - reference| / |reference|`` in decimal arithmetic; NaN where undefined."""
    errors = []
    for value, exact in zip(computed.tolist(), reference, strict=True):
        if exact is None:
            errors.append(math.nan)
        elif not math.isfinite(value):
            errors.append(math.inf)
        else:
            errors.append(float(abs(decimal.Decimal(value) - exact) / abs(exact)))

    return errors


def measure(dtype: torch.dtype, points: int, alpha: float = 1.0) -> dict[str, object]:
    """Relative errors of both forms of the four quantities, at ``points`` inputs.

    Returns a dictionary with ``magnitudes`` (``|x|``, float64 values of the rounded
    inputs), ``errors[quantity][form]`` (lists aligned with ``magnitudes``, NaN where the
    inverse is undefined) and ``undefined`` (inputs whose forward value rounds to
    ``-alpha``).
    """
    inputs = -torch.logspace(-12, math.log10(30.0), points, dtype=torch.float64).to(dtype)
    values = inputs.tolist()
    alpha_tensor = torch.tensor([alpha], dtype=dtype)
    references = _exact_references(values, alpha)

    # The inverse is fed the exact forward value rounded to the working precision.
    rounded = torch.tensor([float(y) for y in references["forward"]], dtype=torch.float64)
    outputs = rounded.to(dtype)
    exact_alpha = decimal.Decimal(alpha)
    inside = [y > -alpha for y in outputs.tolist()]
    inverse_reference = [
        (1 + decimal.Decimal(y) / exact_alpha).ln() if ok else None
        for y, ok in zip(outputs.tolist(), inside, strict=True)
    ]
    inverse_log_det_reference = [
        None if x is None else exact_alpha.ln() + x for x in inverse_reference
    ]

    # flowkit's functions, as the ELU layer calls them (log-dets on (batch, 1) rows).
    flowkit_inverse = elu_inverse(outputs, alpha_tensor)
    computed = {
        "forward": (
            elu_forward(inputs, alpha_tensor),
            alpha * (torch.exp(inputs) - 1),
        ),
        "inverse": (flowkit_inverse, torch.log(outputs / alpha + 1)),
        "log-det (from x)": (
            elu_log_abs_det(inputs[:, None], alpha_tensor),
            torch.log(alpha * torch.exp(inputs)),
        ),
        "log-det (from y)": (
            elu_log_abs_det(flowkit_inverse[:, None], alpha_tensor),
            torch.log(outputs + alpha),
        ),
    }
    reference_of = {
        "forward": references["forward"],
        "inverse": inverse_reference,
        "log-det (from x)": references["log-det (from x)"],
        "log-det (from y)": inverse_log_det_reference,
    }
    errors = {
        quantity: {
            form: _relative_errors(value, reference_of[quantity])
            for form, value in zip(FORMS, pair, strict=True)
        }
        for quantity, pair in computed.items()
    }

    return {
        "magnitudes": [-x for x in values],
        "errors": errors,
        "undefined": sum(not ok for ok in inside),
        "first_undefined": max(
            (x for x, ok in zip(values, inside, strict=True) if not ok), default=None
        ),
    }


def summarize(result: dict[str, object]) -> dict[str, dict[str, list[float]]]:
    """Largest relative error in each band of :data:`RANGES`, per quantity and form."""
    magnitudes = result["magnitudes"]
    summary: dict[str, dict[str, list[float]]] = {}
    for quantity, by_form in result["errors"].items():
        summary[quantity] = {}
        for form, errors in by_form.items():
            bands = []
            for low, high in RANGES:
                scored = [
                    error
                    for magnitude, error in zip(magnitudes, errors, strict=True)
                    if low <= magnitude < high and not math.isnan(error)
                ]
                bands.append(max(scored) if scored else math.nan)
            summary[quantity][form] = bands

    return summary


def plot(results: dict[str, dict[str, object]], path: Path) -> None:
    """Relative error against ``|x|``, one row per dtype and one column per quantity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(results), len(QUANTITIES), figsize=(14, 6), sharex=True, squeeze=False
    )
    # Exact results (error 0) are drawn on a floor, so that a log axis can show them.
    floor = 1e-20
    for row, (name, result) in enumerate(results.items()):
        epsilon = torch.finfo(DTYPES[name]).eps
        for column, quantity in enumerate(QUANTITIES):
            axis = axes[row][column]
            for form, style in zip(FORMS, ("-", "--"), strict=True):
                errors = [max(error, floor) for error in result["errors"][quantity][form]]
                axis.loglog(result["magnitudes"], errors, style, label=form)
            axis.axhline(epsilon, color="grey", linewidth=0.8, label="machine epsilon")
            axis.set_ylim(floor / 3, 10)
            axis.set_title(f"{quantity}, {name}", fontsize=10)
            if row == len(results) - 1:
                axis.set_xlabel("|x|  (x < 0)")
            if column == 0:
                axis.set_ylabel("relative error")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(quick: bool = False, figure: Path | None = None, alpha: float = 1.0) -> dict:
    """Measures both dtypes; returns ``{dtype: {"summary", "undefined", "raw"}}``.

    ``quick`` uses 60 inputs instead of 400. A figure is written only if ``figure`` is given.
    """
    points = 60 if quick else 400
    results = {name: measure(dtype, points, alpha) for name, dtype in DTYPES.items()}
    if figure is not None:
        plot(results, figure)

    return {
        name: {
            "summary": summarize(result),
            "undefined": result["undefined"],
            "first_undefined": result["first_undefined"],
            "raw": result,
        }
        for name, result in results.items()
    }


def main() -> None:
    """Prints the table of largest relative errors and writes the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 inputs instead of 400")
    parser.add_argument(
        "--figure",
        type=Path,
        default=None,
        help=f"where to write the plot (default: {DEFAULT_FIGURE.name} under docs/figures; "
        "none with --quick, so a smoke run leaves the committed figure alone)",
    )
    parser.add_argument("--alpha", type=float, default=1.0)
    arguments = parser.parse_args()
    if arguments.figure is None and not arguments.quick:
        arguments.figure = DEFAULT_FIGURE

    figures = run(arguments.quick, arguments.figure, arguments.alpha)
    bands = "  ".join(f"|x| in [{low:g}, {high:.4g})".ljust(22) for low, high in RANGES)
    print(f"largest relative error, alpha = {arguments.alpha}")
    print(f"{'dtype':8} {'quantity':17} {'form':12} {bands}")
    for name, entry in figures.items():
        for quantity, by_form in entry["summary"].items():
            for form, values in by_form.items():
                # Below 1e-40 the difference is the 50-digit reference's own rounding.
                cells = "  ".join(
                    ("exact" if value < 1e-40 else f"{value:.2e}").ljust(22) for value in values
                )
                print(f"{name:8} {quantity:17} {form:12} {cells}")
        if entry["undefined"]:
            print(
                f"{name}: the forward value rounds onto -alpha for {entry['undefined']} inputs "
                f"(from x = {entry['first_undefined']:.4g} down); their inverse is not scored"
            )
    if arguments.figure is not None:
        print(f"figure: {arguments.figure}")


if __name__ == "__main__":
    main()
