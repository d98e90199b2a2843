"""Exceptions raised by the flowkit data package."""

from __future__ import annotations

__all__ = ["DataError", "DensityNotAvailableError"]


class DataError(ValueError):
    """A data set, file or argument that flowkit cannot use.

    The message names the problem in the user's terms: the file, the row (1-based, counted as
    lines in the file), the column (1-based), and what was expected against what was found.
    """


class DensityNotAvailableError(NotImplementedError):
    """A toy distribution whose true density has no tractable form was asked for it."""
