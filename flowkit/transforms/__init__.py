"""Transforms: the ELU bijector and the layers flowkit adds to nflows."""

from flowkit.transforms.coupling import AffineCoupling
from flowkit.transforms.elu import ELU
from flowkit.transforms.logit import Logit
from flowkit.transforms.lower_bound import LowerBound
from flowkit.transforms.standardize import Standardize

__all__ = ["ELU", "AffineCoupling", "Logit", "LowerBound", "Standardize"]
