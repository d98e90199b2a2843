"""Runs every benchmark: ``python -m benchmarks [--quick] [--out DIR]``.

``--quick`` runs the same code paths with tiny budgets (a smoke test, a minute or two on an
idle machine); the full run writes the tables and plots under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks import (
    ablation,
    compare_nflows,
    elu_speed,
    quality,
    scaling,
    speed,
    throughput,
)


def main(argv: list[str] | None = None) -> None:
    """Runs every benchmark module in turn with the same flags."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke test")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the results (default: benchmarks/results, or a temporary folder "
        "with --quick)",
    )
    arguments = parser.parse_args(argv)

    shared: list[str | Path] = ["--quick"] if arguments.quick else []
    if arguments.out is None and arguments.quick:
        # A smoke run's tiny-budget tables must not overwrite the committed full results.
        arguments.out = Path(tempfile.mkdtemp(prefix="flowkit-benchmarks-quick-"))
        print(f"quick run: results go to {arguments.out}")
    if arguments.out is not None:
        shared += ["--out", arguments.out]
    compare_nflows.main(shared)
    quality.main(shared)
    ablation.main(shared)
    elu_speed.main(shared)
    speed.main(shared)
    scaling.main(shared)
    throughput.main(shared)


if __name__ == "__main__":
    main()
