"""Saving and loading flows as single-file checkpoints that never execute code on load."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import pickle
import platform
import tempfile
import warnings
import zipfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowkit._version import __version__
from flowkit.flow import Flow
from flowkit.presets import FlowConfig, build_flow
from flowkit.training import RESUME_STATE_KEYS, TrainingResult

__all__ = [
    "CHECKPOINT_FORMAT",
    "SCHEMA_VERSION",
    "CheckpointError",
    "json_ready",
    "load",
    "read_metadata",
    "read_training_state",
    "save",
    "weights_digest",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "flowkit-checkpoint"
"""The value of the ``"format"`` key that marks a file as a flowkit checkpoint."""

SCHEMA_VERSION = 1
"""The newest checkpoint schema this flowkit reads and the one it writes."""

_NON_FINITE = {math.inf: "inf", -math.inf: "-inf"}


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged, unsafe or not a flowkit checkpoint.

    The message always names the file.
    """


def json_ready(value: Any) -> Any:
    """Converts ``value`` into plain JSON types, keeping the JSON standard.

    Dictionaries (keys become strings), lists and tuples are converted item by item;
    scalar tensors and numpy scalars become numbers, other tensors and arrays nested lists,
    paths strings. Non-finite floats, which standard JSON cannot hold, become the strings
    ``"inf"``, ``"-inf"`` and ``"nan"``; ``float()`` reads them back.

    Raises:
        TypeError: for a value of any other type, naming it.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return _NON_FINITE.get(value, float(value))
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        return json_ready(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)

    raise TypeError(
        f"cannot store a value of type {type(value).__name__} in checkpoint metadata; "
        "use numbers, strings, booleans, None, and lists or dicts of those"
    )


def _package_version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def _training_summary(training: TrainingResult) -> dict[str, Any]:
    return {
        "arguments": dict(training.arguments),
        "best_step": training.best_step,
        "best_validation_nll": training.best_validation_nll,
        "steps_completed": training.steps_completed,
        "stop_reason": training.stop_reason,
        "undone_steps": training.undone_steps,
        "history": [dict(row) for row in training.history],
    }


def _build_metadata(
    metadata: dict[str, Any] | None, training: TrainingResult | None, dataset: str | None
) -> dict[str, Any]:
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None; got {type(metadata).__name__}")

    provenance = {
        "flowkit_version": __version__,
        "torch_version": torch.__version__,
        "nflows_version": _package_version("nflows"),
        "python_version": platform.python_version(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "dataset": dataset,
        "training": None if training is None else _training_summary(training),
        "user": dict(metadata or {}),
    }

    return json_ready(provenance)


def weights_digest(state: dict[str, Tensor]) -> str:
    """SHA-256 of a state dictionary's names, dtypes, shapes and bytes, in name order.

    Stored beside the weights, it lets :func:`load` tell damaged weights from good ones:
    bytes flipped inside an intact archive would otherwise load and crash deep in a layer.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())

    return digest.hexdigest()


def save(
    flow: Flow,
    path: str | os.PathLike[str],
    *,
    metadata: dict[str, Any] | None = None,
    training: TrainingResult | None = None,
    dataset: str | None = None,
) -> Path:
    """Writes ``flow`` to one checkpoint file, atomically, and returns its path.

    The file is a ``torch.save`` of a plain dictionary::

        {"format": "flowkit-checkpoint", "schema_version": 1,
         "config_json": <the builder's configuration as JSON>,
         "state_dict": <flow.state_dict()>,
         "metadata_json": <provenance as JSON>,
         "training_state": <TrainingResult.resume_state, when training has one>}

    The metadata JSON holds ``flowkit_version``, ``torch_version``, ``nflows_version``,
    ``python_version``, ``created_utc`` (ISO 8601), ``dataset``, ``training`` (arguments,
    ``best_step``, ``best_validation_nll``, ``steps_completed``, ``stop_reason``,
    ``undone_steps``, ``history``; or None) and ``user`` (the ``metadata`` given). Non-finite
    floats are stored as the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (see
    :func:`json_ready`), so the JSON stays standard.

    ``training_state`` (optional, so files without it stay valid under schema 1) holds what
    ``flowkit train --resume`` and ``train(..., resume=...)`` need to continue the run: the
    last weights, optimizer, scheduler, step and random states, all tensors and plain
    values; :func:`read_training_state` reads it back.

    The file is written to a temporary file in the same folder, synced to disk and then
    renamed over ``path``, so a failed write leaves any previous checkpoint intact.

    Args:
        flow: a flow made by :func:`~flowkit.presets.build_flow` (it carries its config).
        path: the file to write; its folder is created.
        metadata: extra JSON-compatible information to keep.
        training: the training run's result, for provenance.
        dataset: the data set's name or path.

    Raises:
        ValueError: the flow has no configuration (it was assembled by hand).
        TypeError: metadata holds a value JSON cannot represent.
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a flowkit Flow; got {type(flow).__name__}")
    if flow.config is None:
        raise ValueError(
            "this flow was assembled by hand and has no configuration, so a checkpoint could "
            "not rebuild it; build it with flowkit.build_flow, or save its state_dict() "
            "yourself with torch.save"
        )

    # Stored on the CPU, so a file saved from a GPU loads on machines without one.
    state = _on_cpu(flow.state_dict())
    payload = {
        "format": CHECKPOINT_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "config_json": json.dumps(json_ready(flow.config), allow_nan=False, sort_keys=True),
        "state_dict": state,
        "weights_sha256": weights_digest(state),
        "metadata_json": json.dumps(
            _build_metadata(metadata, training, dataset), allow_nan=False, sort_keys=True
        ),
    }
    if training is not None and training.resume_state is not None:
        payload["training_state"] = _on_cpu(training.resume_state)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        # Whatever stopped the write (even Ctrl-C), the half-written file must not remain.
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    logger.info("saved checkpoint %s", path)

    return path


def _on_cpu(value: Any) -> Any:
    """A copy of nested dictionaries, lists and tuples with every tensor moved to the CPU."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _on_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_on_cpu(item) for item in value)

    return value


def _sync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a folder be opened.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _read_payload(path: Path, map_location: Any) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")

    if not zipfile.is_zipfile(path):
        # flowkit writes torch.save's zip archives only; anything else is refused unread.
        raise CheckpointError(
            f"{path}: not a readable checkpoint: it is not a torch.save archive (zip), so it "
            "is truncated, corrupted or of another kind, such as a data file; it was not loaded"
        )

    try:
        with warnings.catch_warnings():
            # Pickles from other tools use newer protocols; torch warns before refusing them.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error):
            raise CheckpointError(
                f"{path}: the file tries to import and run code, which a checkpoint never "
                "needs; it was not loaded"
            ) from None
        raise CheckpointError(
            f"{path}: the file holds pickled content that safe loading refuses (it may try "
            "to run code); it was not loaded"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, IndexError) as error:
        raise CheckpointError(
            f"{path}: not a readable checkpoint; the file is truncated, corrupted or of "
            f"another kind ({type(error).__name__}: {_first_line(error)})"
        ) from None

    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a flowkit checkpoint (no format marker)")
    version = payload.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: invalid schema version {version!r}")
    if version > SCHEMA_VERSION:
        raise CheckpointError(
            f"{path}: schema version {version} is newer than the {SCHEMA_VERSION} this flowkit "
            f"{__version__} reads; upgrade flowkit"
        )
    missing = [key for key in ("config_json", "state_dict", "metadata_json") if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, missing {missing}")

    return payload


def _first_line(error: BaseException) -> str:
    # torch's messages run on for lines of advice; the first sentence says what failed.
    text = str(error).strip()
    if not text:
        return "no details"

    return text.splitlines()[0].split(". ")[0]


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Returns a checkpoint's metadata (see :func:`save`) without building the flow.

    The builder's configuration is added under ``"config"``.

    Raises:
        CheckpointError: as :func:`load`.
    """
    path = Path(path)
    payload = _read_payload(path, "cpu")

    try:
        result = json.loads(payload["metadata_json"])
        result["config"] = json.loads(payload["config_json"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({error})") from None

    return result


def read_training_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Returns the state a training run left in a checkpoint, for ``train(..., resume=...)``.

    Read on the CPU with ``torch.load(..., weights_only=True)``, like :func:`load`.

    Raises:
        CheckpointError: as :func:`load`, or the file holds no complete training state (it
            was saved without a training run, or by an older flowkit).
    """
    path = Path(path)
    state = _read_payload(path, "cpu").get("training_state")
    if state is None:
        raise CheckpointError(
            f"{path}: holds no training state to resume from (it was saved without a "
            "training run, or by an older flowkit); start a new run instead"
        )
    missing = [key for key in RESUME_STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path}: damaged training state, missing {missing}")

    return state


def load(path: str | os.PathLike[str], map_location: Any = "cpu") -> Flow:
    """Rebuilds a flow from a checkpoint written by :func:`save`, in eval mode.

    The file is read with ``torch.load(..., weights_only=True)``: tensors and plain
    containers only, so loading never runs code from the file. The flow is rebuilt from the
    stored configuration, takes the floating dtype of the stored weights, and gives the same
    ``log_prob`` to the last bit as the flow that was saved.

    Args:
        path: the checkpoint file.
        map_location: where to put the tensors, as for ``torch.load``; a device name or
            ``torch.device`` also moves the flow there.

    Raises:
        CheckpointError: a missing file, a file that is not a flowkit checkpoint, a newer
            schema, a truncated or corrupted file, a file that would need to run code, or
            weights that do not fit the configuration.
    """
    path = Path(path)
    payload = _read_payload(path, map_location)

    try:
        config = FlowConfig.from_dict(json.loads(payload["config_json"]))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid flow configuration ({error})") from None
    state = payload["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: damaged checkpoint, the weights are not a dictionary")

    stored_digest = payload.get("weights_sha256")
    if stored_digest is not None and stored_digest != weights_digest(state):
        raise CheckpointError(
            f"{path}: damaged checkpoint, the weights do not match their stored SHA-256 "
            "checksum (the file was changed or corrupted after it was written)"
        )

    flow = build_flow(config)
    dtypes = {value.dtype for value in state.values() if torch.is_floating_point(value)}
    if len(dtypes) == 1:
        # Built in the default dtype; match the stored weights so nothing is rounded.
        flow.to(dtypes.pop())
    try:
        flow.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"{path}: the weights do not fit the stored configuration ({_first_line(error)})"
        ) from None

    if isinstance(map_location, str | torch.device):
        flow.to(torch.device(map_location))
    flow.eval()
    logger.info("loaded checkpoint %s", path)

    return flow
