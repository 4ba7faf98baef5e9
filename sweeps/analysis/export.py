"""The best trial's model out of the database: loaded (Keras safe mode) or written to a file.

A stored model takes raw rows: the data's preprocessing (standardization, imputation, category
encoding) is inside it as Keras layers, and ``gapsweep.json`` in the file names its inputs and
classes (``gapsweep.model_info``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from gapsweep.errors import ConfigError, StudyNotFoundError
from gapsweep.storage import artifacts, queries
from gapsweep.storage.engine import reading
from gapsweep.sweeps.trial.models import model_from_bytes

if TYPE_CHECKING:
    import keras


def load_best_model(study: str, storage: str | None = None, *, trial: int | None = None) -> "keras.Model":
    """The stored model of the study's best trial (or of trial number ``trial``); it takes raw rows."""
    return model_from_bytes(best_artifact(study, storage, trial).data)


def export_best(study: str, out: str | os.PathLike[str], storage: str | None = None, *, trial: int | None = None) -> artifacts.Artifact:
    """Write the best (or a given) trial's model to ``out`` as a ``.keras`` file."""
    path = Path(out)
    if path.suffix != ".keras" or path.is_dir():
        raise ConfigError(f"--out {path}: give a file path ending in .keras (Keras loads models from such files)")
    if not path.parent.is_dir():
        raise ConfigError(f"--out {path}: the folder {path.parent} does not exist; create it first")
    artifact = best_artifact(study, storage, trial)
    path.write_bytes(artifact.data)
    return artifact


def best_artifact(study: str, storage: str | None, trial: int | None = None) -> artifacts.Artifact:
    """The stored model (bytes and meta) of the best trial, or of trial number ``trial``."""
    with reading(storage) as engine:
        queries.study_id(engine, study)
        if trial is None:
            best = queries.best_trials(engine, study, 1)
            if not best:
                raise StudyNotFoundError(f"study '{study}' has no complete trial yet; nothing to export")
            trial = best[0].number
        found = artifacts.load(engine, study, trial, artifacts.MODEL) if artifacts.schema_version(engine) else None
    if found is None:
        raise StudyNotFoundError(
            f"trial {trial} of study '{study}' has no stored model (models are kept for the top trials only); "
            "pass --trial with one of the best trials"
        )
    return found
