"""What turns the user's raw rows into the matrix a model trains on, fitted on the training split.

The trainer sees a float32 matrix: numeric features standardized with the training split's mean
and standard deviation, missing numbers imputed with that mean (plus a 0/1 indicator column for
each numeric column that had gaps in training), and every category column one-hot encoded over
the training split's values (column 0 of each block catches values training never saw).
Regression targets are standardized the same way (``scale_target``), so every loss a sweep
computes is in standardized units, and the raw-input model ends in the layer that undoes it.

The same steps are also built from Keras' own layers and ops (``Preprocessing.wrap``) in front of
a trained model, so the stored and exported model takes raw rows: a float array for array data,
or a dict of named columns (numbers with NaN for gaps, strings with "" for gaps) for CSV data.
Its column inputs are a list of inputs named after the columns, so Keras matches a dict by those
names: a dict that also holds other columns (an id, the target) feeds each input its own column,
and one that lacks a column is refused, where a dict of inputs would be matched by position.
Only built-in Keras layers are used, so ``keras.models.load_model(path)`` reads the file in safe
mode without gapsweep installed. Class names and the input description travel inside the
``.keras`` zip as ``gapsweep.json`` (``model_info``); Keras ignores the extra entry.

Training keeps the plain matrix (fast tf.data pipelines, and KerasTuner hypermodels see the same
arrays as before); a model is wrapped only when it is kept, and tests check that both routes
give the same predictions.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from gapsweep.errors import DataError

if TYPE_CHECKING:
    import keras

#: Raw CSV data: one array per feature column (float32 with NaN, or str with "" for a gap).
Columns = dict[str, np.ndarray]
RawInputs = Union[np.ndarray, Columns]

#: The entry in a stored ``.keras`` zip that describes its inputs and classes.
MODEL_INFO = "gapsweep.json"
INFO_FORMAT = 1
_EPSILON = 1e-7  # keras.backend.epsilon(): Normalization divides by max(sqrt(variance), it)


def input_name(column: str) -> str:
    """The name of a column's model input: Keras refuses "/" in a name, so it becomes "_"."""
    return column.replace("/", "_")


def as_model_inputs(raw: RawInputs, model: "keras.Model") -> RawInputs:
    """``raw`` keyed as ``model`` takes it: by input name (``input_name``), or, for a model stored
    before its inputs were a list, by column name (a dict of inputs, keyed so)."""
    if not isinstance(raw, dict) or isinstance(model.input, dict):
        return raw
    return {input_name(name): values for name, values in raw.items()}


def n_rows(raw: RawInputs) -> int:
    """How many rows ``raw`` holds."""
    if isinstance(raw, dict):
        return len(next(iter(raw.values()))) if raw else 0
    return len(raw)


def take(raw: RawInputs, rows: np.ndarray) -> RawInputs:
    """The rows ``rows`` of ``raw`` (an index array), in that order."""
    if isinstance(raw, dict):
        return {name: values[rows] for name, values in raw.items()}
    return raw[rows]


#: The name of a model that ``Preprocessing.wrap`` put behind the raw-input layers.
RAW_INPUT_MODEL = "gapsweep_raw_input"


@dataclass(frozen=True, eq=False)
class Preprocessing:
    """The fitted steps from raw rows to the training matrix, and what the model predicts."""

    task: str
    #: Class names in output order (classification), else empty.
    classes: tuple[str, ...]
    #: The CSV target column's name, if the data came from a CSV.
    target: str | None
    #: Means/standard deviations of the numeric inputs: shaped like one array row, or one value
    #: per numeric CSV column.
    mean: np.ndarray
    std: np.ndarray
    #: CSV feature columns in file order, as (name, "number" | "category"); empty for arrays.
    columns: tuple[tuple[str, str], ...] = ()
    #: Numeric CSV columns that had gaps in training: each adds a 0/1 "was missing" feature.
    indicators: tuple[str, ...] = ()
    #: Category CSV columns and their training vocabularies (sorted; "" is the missing value).
    vocabularies: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: The training targets' mean and standard deviation (one per output) that regression targets
    #: are standardized with, so that a network starting from small weights reaches them; None:
    #: targets as they are (classification, ``scale_target = false``, studies stored before).
    target_mean: np.ndarray | None = None
    target_std: np.ndarray | None = None

    @classmethod
    def fit(
        cls, raw: RawInputs, *, task: str, classes: tuple[str, ...], target: str | None, y: np.ndarray | None = None
    ) -> "Preprocessing":
        """Fit on the training split's raw inputs, and on its regression targets ``y`` when they
        are to be standardized."""
        scaling: dict[str, Any] = {}
        if y is not None:
            target_mean, target_std = _mean_std(y.reshape(len(y), -1))
            scaling = {"target_mean": target_mean, "target_std": target_std}
        if not isinstance(raw, dict):
            mean, std = _mean_std(raw)
            return cls(task, classes, target, mean, std, **scaling)
        kinds = tuple((name, "category" if values.dtype.kind in "OUS" else "number") for name, values in raw.items())
        numeric = [name for name, kind in kinds if kind == "number"]
        means, stds = [], []
        for name in numeric:
            values = raw[name].astype("float64")
            present = values[~np.isnan(values)]
            if not len(present):
                raise DataError(f"column '{name}' has no value in the training rows; drop it with data.ignore")
            means.append(present.mean())
            stds.append(present.std() or 1.0)
        return cls(
            task, classes, target,
            np.asarray(means, dtype="float32"), np.asarray(stds, dtype="float32"),
            columns=kinds,
            indicators=tuple(name for name in numeric if np.isnan(raw[name]).any()),
            vocabularies=tuple(
                (name, tuple(sorted(set(raw[name].tolist())))) for name, kind in kinds if kind == "category"
            ),
            **scaling,
        )

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(name for name, kind in self.columns if kind == "number")

    def apply(self, raw: RawInputs) -> np.ndarray:
        """The float32 matrix the trainer sees, computed as the Keras layers of ``wrap`` do."""
        scale = _divisor(self.std)
        if not isinstance(raw, dict):
            return ((raw.astype("float32") - self.mean) / scale).astype("float32")
        rows = n_rows(raw)
        parts = []
        if self.numeric:
            x = np.stack([raw[name].astype("float32") for name in self.numeric], axis=1)
            x = np.where(np.isnan(x), self.mean, x)
            parts.append(((x - self.mean) / scale).astype("float32"))
        for name in self.indicators:
            parts.append(np.isnan(raw[name].astype("float32")).astype("float32")[:, None])
        for name, vocabulary in self.vocabularies:
            index = {value: position + 1 for position, value in enumerate(vocabulary)}  # 0: unseen
            block = np.zeros((rows, len(vocabulary) + 1), dtype="float32")
            block[np.arange(rows), [index.get(value, 0) for value in raw[name].tolist()]] = 1.0
            parts.append(block)
        return np.concatenate(parts, axis=1) if parts else np.zeros((rows, 0), dtype="float32")

    def scale_target(self, y: np.ndarray) -> np.ndarray:
        """Targets as the trainer sees them: standardized where ``target_mean`` is set, else as they are."""
        if self.target_mean is None or self.target_std is None:
            return y
        return ((y.astype("float32") - self.target_mean) / _divisor(self.target_std)).astype("float32")

    def wrap(self, model: "keras.Model") -> "keras.Model":
        """``model`` behind Keras layers doing ``apply``, and before one undoing ``scale_target``:
        a model that takes raw inputs and predicts in the target's own units."""
        import keras

        variance = np.square(self.std)
        if not self.columns:
            inputs = keras.Input(shape=self.mean.shape, dtype="float32", name="features")
            axis = -1 if self.mean.ndim == 1 else tuple(range(1, self.mean.ndim + 1))
            features = keras.layers.Normalization(axis=axis, mean=self.mean, variance=variance, name="gapsweep_standardize")(inputs)
            return keras.Model(inputs, self._in_target_units(model(features)), name=RAW_INPUT_MODEL)
        named = {
            name: keras.Input(shape=(1,), dtype="float32" if kind == "number" else "string", name=input_name(name))
            for name, kind in self.columns
        }
        parts = []
        if self.numeric:
            numbers = [named[name] for name in self.numeric]
            x = keras.layers.Concatenate(name="gapsweep_numbers")(numbers) if len(numbers) > 1 else numbers[0]
            x = keras.ops.where(keras.ops.isnan(x), self.mean, x)  # impute the training mean
            parts.append(keras.layers.Normalization(mean=self.mean, variance=variance, name="gapsweep_standardize")(x))
        for name in self.indicators:
            parts.append(keras.ops.cast(keras.ops.isnan(named[name]), "float32"))
        for position, (name, vocabulary) in enumerate(self.vocabularies):
            lookup = keras.layers.StringLookup(
                vocabulary=list(vocabulary), num_oov_indices=1, output_mode="one_hot", name=f"gapsweep_categories_{position}"
            )
            parts.append(lookup(named[name]))
        features = keras.layers.Concatenate(name="gapsweep_features")(parts) if len(parts) > 1 else parts[0]
        return keras.Model(list(named.values()), self._in_target_units(model(features)), name=RAW_INPUT_MODEL)

    def _in_target_units(self, outputs: Any) -> Any:
        """The trained network's outputs taken back to the target's units (``target_std`` · output
        + ``target_mean``, by Keras' own inverted ``Normalization``); as they are without scaling."""
        if self.target_mean is None or self.target_std is None:
            return outputs
        import keras

        return keras.layers.Normalization(
            mean=self.target_mean, variance=np.square(self.target_std), invert=True, name="gapsweep_target_units"
        )(outputs)

    def info(self) -> dict[str, Any]:
        """What ``gapsweep.json`` says: inputs, task, class names, target (and the scaling that the
        model's last layer undoes)."""
        described: dict[str, Any] = {"format": INFO_FORMAT, "task": self.task, "classes": list(self.classes), "target": self.target}
        if self.target_mean is not None and self.target_std is not None:
            described["target_mean"] = self.target_mean.tolist()
            described["target_std"] = self.target_std.tolist()
        if self.columns:
            described["inputs"] = "columns"
            described["columns"] = [{"name": name, "kind": kind} for name, kind in self.columns]
        else:
            described["inputs"] = "array"
            described["shape"] = list(self.mean.shape)
        return described


def _mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column float32 mean and standard deviation of training rows; a constant column's
    standard deviation is 1, so it is shifted, never divided by zero."""
    mean = values.mean(axis=0, dtype="float64")
    std = values.std(axis=0, dtype="float64")
    std[std == 0] = 1.0
    return mean.astype("float32"), std.astype("float32")


def _divisor(std: np.ndarray) -> np.ndarray:
    """What Keras' ``Normalization`` divides by: the standard deviation, at least its epsilon."""
    return np.maximum(np.sqrt(np.square(std)), np.float32(_EPSILON))


def unwrap(model: "keras.Model") -> "keras.Model":
    """The trained model inside a raw-input model (``Preprocessing.wrap``); any other model as it is."""
    import keras

    if model.name != RAW_INPUT_MODEL:
        return model
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def with_info(model_bytes: bytes, info: dict[str, Any]) -> bytes:
    """A ``.keras`` file's bytes with ``gapsweep.json`` added."""
    buffer = io.BytesIO(model_bytes)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(MODEL_INFO, json.dumps(info, indent=1))
    return buffer.getvalue()


def model_info(model: bytes | str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``gapsweep.json`` of a ``.keras`` file (path or bytes): inputs, task and class names;
    ``None`` for a file without one (a model stored before gapsweep recorded it)."""
    if not isinstance(model, (bytes, str, os.PathLike)):
        raise DataError(
            f"model_info reads a .keras file (a path or its bytes), not a {type(model).__name__}: "
            "pass the file the model was exported to"
        )
    source = io.BytesIO(model) if isinstance(model, bytes) else model
    try:
        with zipfile.ZipFile(source) as archive:
            if MODEL_INFO not in archive.namelist():
                return None
            return dict(json.loads(archive.read(MODEL_INFO)))
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{model if not isinstance(model, bytes) else 'the model'} is not a readable .keras file: {exc}") from None
