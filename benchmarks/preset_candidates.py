"""Test KL of the settings :mod:`benchmarks.preset_search` chose on validation data.

The search picked one setting per preset kind from validation NLL alone; this script, run
after the choice was fixed, trains each chosen setting once per known-density set exactly as
the search did (seed 0, the quality benchmark's data, steps and batch size, width matched to
the benchmark's flowkit parameter count) and reports the test NLL and KL(p||q) with the
standard error of the paired differences, to set beside ``quality.md``. It was the check
made before flowkit adopted these settings as the ``unbounded`` and ``bounded`` presets'
defaults; round two of the search then raised their learning rate
(:data:`benchmarks.preset_search.ADOPTED`, which a test holds equal to the presets).

Run: python -m benchmarks.preset_candidates [--quick] [--sets a,b] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.compare_nflows import match_hidden_features
from benchmarks.preset_search import ROUND_ONE_CHOICE, build_candidate
from benchmarks.quality import KNOWN_DENSITY_SETS, RESULTS_DIR, _evaluate
from benchmarks.runtime import (
    QUICK_SPLIT_SIZES,
    SPLIT_SIZES,
    single_thread_float32,
    train_on_split,
)
from flowkit.data import load_dataset

__all__ = ["CHOSEN", "main"]

CHOSEN: dict[str, dict[str, Any]] = ROUND_ONE_CHOICE
"""The final settings of ``benchmarks/results/preset_search.md``, one per preset kind."""

TARGET_PARAMETERS = 73_068
"""flowkit's parameter count in ``quality.md`` (the default preset, 4 layers)."""


def evaluate(name: str, steps: int, batch_size: int, sizes: dict[str, int]) -> dict[str, Any]:
    """Trains the chosen setting for set ``name``'s kind and returns its test figures."""
    split = load_dataset(name, seed=0, **sizes)
    kind = "unbounded" if split.lower_bound is None else "bounded"
    candidate = CHOSEN[kind]
    width, parameters = match_hidden_features(
        lambda hidden: build_candidate(split, candidate, hidden), TARGET_PARAMETERS
    )

    torch.manual_seed(0)
    flow = build_candidate(split, candidate, width)
    train_on_split(
        flow,
        split,
        steps,
        batch_size,
        learning_rate=candidate["learning_rate"],
        warmup_steps=candidate["warmup_steps"],
    )
    flow.eval()

    return {"kind": kind, "hidden_features": width, "parameters": parameters} | _evaluate(
        flow.log_prob, split
    )


def main(argv: Sequence[str | Path] | None = None) -> dict[str, Any]:
    """Evaluates the chosen settings; writes ``preset_candidates.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke test")
    parser.add_argument("--sets", default=",".join(KNOWN_DENSITY_SETS))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    arguments = parser.parse_args(None if argv is None else [str(item) for item in argv])

    steps, sizes = (6, QUICK_SPLIT_SIZES) if arguments.quick else (1000, SPLIT_SIZES)
    with single_thread_float32():
        rows = {name: evaluate(name, steps, 256, sizes) for name in arguments.sets.split(",")}
    report = {
        "command": "python -m benchmarks.preset_candidates " + " ".join(sys.argv[1:]),
        "budget": {"steps": steps, "batch_size": 256, "seed": 0},
        "chosen": CHOSEN,
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "rows": rows,
    }

    arguments.out.mkdir(parents=True, exist_ok=True)
    stem = "preset_candidates-quick" if arguments.quick else "preset_candidates"
    (arguments.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Test KL of the settings chosen on validation (preset_search.md)",
        "",
        f"- command: `{report['command']}`; {steps} steps of batch 256, seed 0",
        f"- unbounded sets: {CHOSEN['unbounded']}",
        f"- bounded sets: {CHOSEN['bounded']}",
        "",
        "| data | kind | width | parameters | test NLL | KL ± SE |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['kind']} | {row['hidden_features']} | {row['parameters']:,} | "
            f"{row['test_nll']:.4f} | {row['kl']:.4f} ± {row['kl_standard_error']:.4f} |"
        )
    (arguments.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    return report


if __name__ == "__main__":
    main()
