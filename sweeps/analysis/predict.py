"""Predictions of a stored model on new raw rows, written as a CSV file (``gapsweep predict``).

The model is the study's best stored one (or a given trial's, or a ``.keras`` file gapsweep
exported); its ``gapsweep.json`` says which inputs it takes, so the new rows are read exactly as
the training data was (``datasets.read_rows``). A classifier writes ``predicted`` (the class name)
and one ``p_<class>`` probability column per class; a regressor writes ``predicted``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapsweep.errors import ConfigError, DataError
from gapsweep.sweeps.analysis.export import best_artifact, outputs_logits
from gapsweep.sweeps.data.datasets import read_rows
from gapsweep.sweeps.data.losses import class_probabilities
from gapsweep.sweeps.data.preprocessing import as_model_inputs, model_info
from gapsweep.sweeps.trial.models import model_from_bytes

_BATCH = 1024


def _probabilities(output: np.ndarray, logits: bool) -> np.ndarray:
    """One probability per class (``losses.class_probabilities``), after the sigmoid or softmax
    that a model trained on logits left to its loss."""
    if logits and output.shape[1] == 1:
        output = 1.0 / (1.0 + np.exp(-output))
    elif logits:
        shifted = np.exp(output - output.max(axis=1, keepdims=True))
        output = shifted / shifted.sum(axis=1, keepdims=True)
    return class_probabilities(output)


@dataclass(frozen=True)
class Predictions:
    """What was written: how many rows, where, from which trial (None for a model file)."""

    rows: int
    out: str
    trial: int | None
    columns: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "out": self.out, "trial": self.trial, "columns": self.columns}


def predict_file(
    study: str | None,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    storage: str | None = None,
    *,
    trial: int | None = None,
    model: str | os.PathLike[str] | None = None,
) -> Predictions:
    """Predict the rows of ``data`` with the study's best (or ``trial``'s) model, or with the
    ``.keras`` file ``model``, and write them to the CSV file ``out``."""
    path = Path(out)
    if path.suffix.lower() != ".csv" or path.is_dir():
        raise ConfigError(f"--out {path}: give a file path ending in .csv")
    if not path.parent.is_dir():
        raise ConfigError(f"--out {path}: the folder {path.parent} does not exist; create it first")
    if Path(data).resolve() == path.resolve():
        raise ConfigError(f"--out {path} is the --data file itself; write the predictions to another path")
    if model is not None and study is not None:
        raise ConfigError(f"give a STUDY ('{study}') or --model {model}, not both")
    if model is None and study is not None and study.endswith(".keras") and Path(study).is_file():
        raise ConfigError(f"{study} is a model file, not a study: pass it as --model {study}")
    if model is not None:
        source = Path(model)
        if source.suffix != ".keras" or not source.is_file():
            raise ConfigError(f"--model {source}: give an existing .keras file written by gapsweep export")
        data_bytes, number = source.read_bytes(), None
    elif study is not None:
        artifact = best_artifact(
            study, storage, trial, retrain="write it with `gapsweep export --refit` and predict with --model FILE.keras"
        )
        data_bytes, number = artifact.data, artifact.trial_number
    else:
        raise ConfigError("name a STUDY or give --model FILE.keras")
    info = model_info(data_bytes)
    if info is None:
        raise DataError(
            "this model carries no gapsweep.json (it was stored by an older gapsweep), so its inputs are unknown; "
            "rerun the sweep to store models that take raw rows"
        )
    raw = read_rows(data, info)
    loaded = model_from_bytes(data_bytes)
    output = np.asarray(loaded.predict(as_model_inputs(raw, loaded), verbose=0, batch_size=_BATCH))
    header, rows = _table(output, info, logits=outputs_logits(loaded))
    # Written beside ``out`` and renamed over it: nothing half-written there. A plain open, so
    # the file gets the permissions any file the user writes gets (a temporary file's are 0600).
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with part.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return Predictions(rows=len(rows), out=str(path), trial=number, columns=header)


def _table(output: np.ndarray, info: dict[str, Any], *, logits: bool) -> tuple[list[str], list[list[Any]]]:
    """The CSV header and rows for a model's raw outputs (``logits``: not yet probabilities)."""
    classes = list(info.get("classes") or [])
    if info.get("task") == "classification":
        probabilities = _probabilities(output.reshape(len(output), -1), logits)
        predicted = np.argmax(probabilities, axis=1)
        header = ["predicted", *(f"p_{name}" for name in classes)]
        return header, [[classes[int(k)], *(f"{p:.6g}" for p in row)] for k, row in zip(predicted, probabilities)]
    values = output.reshape(len(output), -1)
    header = ["predicted"] if values.shape[1] == 1 else [f"predicted_{i}" for i in range(values.shape[1])]
    return header, [[f"{v:.7g}" for v in row] for row in values]
