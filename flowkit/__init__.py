"""flowkit: normalizing flows on PyTorch with an exact, invertible ELU bijector."""

from flowkit._version import __version__

__all__ = ["__version__"]
