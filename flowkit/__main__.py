"""Runs the flowkit command line as ``python -m flowkit``."""

from flowkit.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
