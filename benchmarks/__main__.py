"""Runs every benchmark: ``python -m benchmarks [--quick] [--out DIR]``.

``--quick`` runs the same code paths with tiny budgets (a smoke test, about a minute); the
full run writes the tables under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import compare_nflows, elu_speed, quality


def main(argv: list[str] | None = None) -> None:
    """Runs the nflows comparison, the quality table and the ELU timing, same flags."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="folder for the results")
    arguments = parser.parse_args(argv)

    shared: list[str | Path] = ["--quick"] if arguments.quick else []
    if arguments.out is not None:
        shared += ["--out", arguments.out]
    compare_nflows.main(shared)
    quality.main(shared)
    elu_speed.main(shared)


if __name__ == "__main__":
    main()
