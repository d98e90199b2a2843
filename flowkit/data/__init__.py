"""Data for flowkit: toy 2-D sets, scikit-learn's digits, and the user's own files."""

from flowkit.data.datasets import dataset_names, load_dataset
from flowkit.data.digits import (
    DIGITS_FEATURES,
    DIGITS_LEVELS,
    DIGITS_SPLIT_SIZES,
    bits_per_dimension,
    load_digits_split,
    redequantize,
)
from flowkit.data.errors import DataError, DensityNotAvailableError
from flowkit.data.files import SUPPORTED_SUFFIXES, LoadedArray, load_array
from flowkit.data.splits import DataSplit, derive_seed, split_rows
from flowkit.data.toy import TOY_DATASETS, ToyDistribution, get_toy, toy_names

__all__ = [
    "DIGITS_FEATURES",
    "DIGITS_LEVELS",
    "DIGITS_SPLIT_SIZES",
    "SUPPORTED_SUFFIXES",
    "TOY_DATASETS",
    "DataError",
    "DataSplit",
    "DensityNotAvailableError",
    "LoadedArray",
    "ToyDistribution",
    "bits_per_dimension",
    "dataset_names",
    "derive_seed",
    "get_toy",
    "load_array",
    "load_dataset",
    "load_digits_split",
    "redequantize",
    "split_rows",
    "toy_names",
]
