"""flowkit: normalizing flows on PyTorch with an exact, invertible ELU bijector."""

import warnings

from flowkit._version import __version__
from flowkit.checkpoints import CheckpointError, load, read_metadata, save
from flowkit.data import DataError, DataSplit, dataset_names, load_dataset
from flowkit.flow import Flow, InexactFlowError
from flowkit.presets import (
    PRESETS,
    FlowConfig,
    build_flow,
    fit_data_dependent_layers,
    training_defaults,
)
from flowkit.scoring import ScoreReference, Scores, auroc, score
from flowkit.training import TrainingResult, mean_negative_log_likelihood, train
from flowkit.transforms import ELU, AffineCoupling, Logit, LowerBound, Standardize

# nflows 0.14's LULinear calls a deprecated torch function; silence that one message only.
warnings.filterwarnings(
    "ignore", message="torch.triangular_solve is deprecated", category=UserWarning
)

__all__ = [
    "__version__",
    "ELU",
    "PRESETS",
    "AffineCoupling",
    "CheckpointError",
    "DataError",
    "DataSplit",
    "Flow",
    "FlowConfig",
    "InexactFlowError",
    "Logit",
    "LowerBound",
    "ScoreReference",
    "Scores",
    "Standardize",
    "TrainingResult",
    "mean_negative_log_likelihood",
    "train",
    "auroc",
    "score",
    "build_flow",
    "dataset_names",
    "load",
    "load_dataset",
    "read_metadata",
    "save",
    "fit_data_dependent_layers",
    "training_defaults",
]
