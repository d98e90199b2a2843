"""ELU ablation: flowkit's presets with and without ELU layers on every known-density set.

For each set whose true density is known, the same flowkit stack is trained with and without
its ELU layers, on the same data stream, steps, batch size and seed as
:mod:`benchmarks.quality`: on every set, the unbounded preset without and with the ELU tail
(an ELU toward the noise next to a truncated-normal base); on sets with a known lower bound
also the bounded preset, whose lower-bounded ELU output layer gives the exact support, with
and without the tail. Every variant on a set shares the body (layers, bins, width) and the
training recipe of the preset the quality table runs there, so that only the ELU layers and
the data side (Standardize or LowerBound) differ. Reported per variant: test NLL, KL(p||q)
with its standard error, the share of test points scored ``-inf``, and the change in KL
against the variant without any ELU layer with the standard error of the paired per-point
differences.

Run: python -m benchmarks.ablation [--quick] [--steps N] [--sets a,b] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path
from typing import Any

import torch

import flowkit
from benchmarks.quality import KNOWN_DENSITY_SETS, train_flowkit
from benchmarks.runtime import QUICK_SPLIT_SIZES, SPLIT_SIZES, single_thread_float32
from flowkit.data import load_dataset
from flowkit.presets import PRESET_DEFAULTS, PRESET_TRAINING

__all__ = ["VARIANTS", "main", "variants_for"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BASELINE = "no ELU"
VARIANTS: dict[str, dict[str, Any]] = {
    BASELINE: {"preset": "unbounded"},
    "ELU tail": {"preset": "unbounded", "elu_tail": True},
    "ELU output": {"preset": "bounded"},
    "ELU output + tail": {"preset": "bounded", "elu_tail": True},
}
"""Each variant's :func:`flowkit.build_flow` options; the bounded ones need a known bound."""


def variants_for(split) -> list[str]:
    """The variants that apply to a set: the bounded ones only where the bound is known."""
    if split.lower_bound is None:
        return [BASELINE, "ELU tail"]

    return list(VARIANTS)


def _paired_difference(baseline: torch.Tensor, variant: torch.Tensor) -> tuple[float, float]:
    # KL(variant) - KL(baseline) is the mean of log q_baseline - log q_variant over the same
    # test points; pairing removes the variance the truth's own log-density contributes.
    if not (torch.isfinite(baseline).all() and torch.isfinite(variant).all()):
        return math.inf, math.nan
    difference = (baseline - variant).double()

    return difference.mean().item(), (difference.std() / math.sqrt(len(difference))).item()


def _verdict(change: float, error: float) -> str:
    if not math.isfinite(change):
        return "scores test points -inf"
    if change < -2 * error:
        return "ELU helps"
    if change > 2 * error:
        return "ELU hurts"

    return "no significant difference"


def _format(value: float, error: float) -> str:
    if not math.isfinite(value):
        return "inf"
    return f"{value:+.4f} ± {error:.4f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The ablation table: KL per variant, its change against no ELU, -inf share, verdict."""
    lines = [
        "# ELU ablation: flowkit with and without ELU layers, KL(p||q) in nats",
        "",
        f"- command: `{report['command']}`",
        f"- budget: {report['steps']} steps of batch {report['batch_size']}, "
        "seed 0, the data stream of the quality table; every variant on a set has the body "
        f"and training recipe of that set's preset: {report['bodies']}",
        f"- machine: {report['machine']['platform']}, one torch thread; "
        f"torch {report['versions']['torch']}, flowkit {report['versions']['flowkit']}",
        "- ΔKL: KL(variant) − KL(no ELU) ± the standard error of the paired per-point "
        "differences; negative means the ELU layers help. Verdict at two standard errors.",
        "",
        "| data | variant | test NLL | KL ± SE | ΔKL vs no ELU | -inf share | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in report["rows"].items():
        for variant, run in row["runs"].items():
            kl = (
                f"{run['kl']:.4f} ± {run['kl_standard_error']:.4f}"
                if math.isfinite(run["kl"])
                else "inf"
            )
            if variant == BASELINE:
                change, verdict = "(reference)", ""
            else:
                change = _format(run["kl_change"], run["kl_change_standard_error"])
                verdict = _verdict(run["kl_change"], run["kl_change_standard_error"])
            lines.append(
                f"| {name} | {variant} | {run['test_nll']:.4f} | {kl} | {change} | "
                f"{run['test_outside']:.2%} | {verdict} |"
            )

    verdicts: dict[str, list[str]] = {}
    for name, row in report["rows"].items():
        for variant, run in row["runs"].items():
            if variant != BASELINE:
                verdict = _verdict(run["kl_change"], run["kl_change_standard_error"])
                verdicts.setdefault(verdict, []).append(f"{name} ({variant})")
    lines += ["", "Summary at two standard errors:", ""]
    lines += [f"- {verdict}: {', '.join(cases)}" for verdict, cases in sorted(verdicts.items())]
    if "ELU helps" not in verdicts:
        lines.append("- ELU helps: on no set at this budget")

    return "\n".join(lines) + "\n"


def main(argv: list[str | Path] | None = None) -> dict[str, Any]:
    """Trains every applicable variant on every set; writes ``ablation.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke test")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sets", default=",".join(KNOWN_DENSITY_SETS))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="ablation", help="stem of the output files")
    arguments = parser.parse_args(None if argv is None else [str(item) for item in argv])
    sizes, shrink = SPLIT_SIZES, {}
    if arguments.quick:
        arguments.steps = 6
        sizes, shrink = QUICK_SPLIT_SIZES, {"num_layers": 1}
    bodies = {kind: {**PRESET_DEFAULTS[kind], **shrink} for kind in ("unbounded", "bounded")}

    rows: dict[str, dict[str, Any]] = {}
    with single_thread_float32():
        for name in arguments.sets.split(","):
            split = load_dataset(name, seed=0, **sizes)
            runs, test_log_probs = {}, {}
            kind = "unbounded" if split.lower_bound is None else "bounded"
            for variant in variants_for(split):
                result, flow = train_flowkit(
                    split,
                    arguments.steps,
                    arguments.batch_size,
                    training=PRESET_TRAINING[kind],
                    **bodies[kind],
                    **VARIANTS[variant],
                )
                test_log_probs[variant] = flow.log_prob_in_chunks(split.test)
                change, error = _paired_difference(
                    test_log_probs[BASELINE], test_log_probs[variant]
                )
                runs[variant] = {**result, "kl_change": change, "kl_change_standard_error": error}
            rows[name] = {"lower_bound": split.lower_bound is not None, "runs": runs}
            print(name, {v: round(r["kl"], 4) for v, r in runs.items()}, flush=True)

    report = {
        "command": "python -m benchmarks.ablation "
        + " ".join(str(item) for item in (sys.argv[1:] if argv is None else argv)),
        "steps": arguments.steps,
        "batch_size": arguments.batch_size,
        "bodies": {kind: {**body, **PRESET_TRAINING[kind]} for kind, body in bodies.items()},
        "machine": {"platform": platform.platform(), "threads": 1},
        "versions": {"torch": torch.__version__, "flowkit": flowkit.__version__},
        "rows": rows,
    }
    arguments.out.mkdir(parents=True, exist_ok=True)
    (arguments.out / f"{arguments.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    (arguments.out / f"{arguments.name}.md").write_text(markdown)
    print(markdown)

    return report


if __name__ == "__main__":
    main()
