"""Base distributions: the standard normal and the standard normal truncated to a box."""

from flowkit.distributions.truncated_normal import (
    box_normal_log_normalizer,
    box_normal_log_prob,
    sample_box_normal,
    standard_normal_log_prob,
)

__all__ = [
    "box_normal_log_normalizer",
    "box_normal_log_prob",
    "sample_box_normal",
    "standard_normal_log_prob",
]
