"""Data handed over from Python: arrays, ``(x, y)`` tuples, a ``tf.data.Dataset``, a ``keras.utils.PyDataset``.

A script sweeps what it already holds, as it would hand it to ``model.fit`` or to a KerasTuner
tuner's ``search``. It becomes numpy arrays once, when the ``DataSpec`` is made (a finite
Dataset is read to its end), and then passes the same checks, stratified split and preprocessing
as a file. A data loader (``data = "loaders.py:load"``) returns the same forms.

Other processes cannot reach a script's memory: a worker, a job of ``launch --jobs``, or a later
command on the study. The study therefore stores a note in place of the source (``IN_MEMORY``),
and loading that note is a one-line ``DataError`` saying how to mend it: name a loader, which
every process imports and calls.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from gapsweep.errors import DataError

#: How a stored note in place of the data source begins.
IN_MEMORY = "<in memory"

SPLITS = ("train", "val", "test")

#: The forms accepted, for error messages.
FORMS = (
    "(x, y) arrays, (train, val) or (train, val, test) pairs of them, a dict with 'train', 'val' [and 'test'], "
    "or a finite tf.data.Dataset or keras.utils.PyDataset of (x, y)"
)


@dataclass(frozen=True, eq=False)
class InMemoryData:
    """The arrays, keyed as in an ``.npz`` (``x_train``, ``y_train``, and ``x_val``… when the
    splits were given)."""

    arrays: dict[str, np.ndarray]

    def note(self) -> str:
        """What the study stores in place of the source: the shapes, so a refusal can name them."""
        parts = []
        for split in SPLITS:
            if f"x_{split}" in self.arrays:
                x, y = self.arrays[f"x_{split}"], self.arrays[f"y_{split}"]
                name = f"{split} " if "x_val" in self.arrays else ""
                parts.append(f"{name}x {x.shape} {x.dtype}, y {y.shape} {y.dtype}")
        return f"{IN_MEMORY}: {'; '.join(parts)}>"


def is_note(source: Any) -> bool:
    """Whether ``source`` is the note a study stores for data passed in memory."""
    return isinstance(source, str) and source.startswith(IN_MEMORY)


#: Who needs the data when a study's stored note is loaded.
OTHER_PROCESS = "this process (a worker, a job of launch --jobs, a later command on the study)"


def unreachable(note: str, who: str = OTHER_PROCESS) -> DataError:
    """The one-line refusal when ``who`` needs data that only the launching script held."""
    shapes = note.removeprefix(IN_MEMORY).strip(": <>")
    return DataError(
        f"the study's data was passed in memory from Python ({shapes}), and {who} cannot get it; "
        "name a data loader instead, data = \"loaders.py:load\" (a function in the project folder that returns "
        "the same data), which every process imports"
    )


def capture(data: Any, what: str) -> InMemoryData:
    """``data`` as arrays; ``what`` names it in errors ("the data", "data loader 'l.py:load'")."""
    if isinstance(data, InMemoryData):
        return data
    if isinstance(data, dict):
        unknown = set(data) - set(SPLITS)
        if unknown or not {"train", "val"} <= set(data):
            raise DataError(f"{what} is a dict with keys {sorted(data)}; give 'train', 'val' and optionally 'test'")
        return InMemoryData(_split_arrays({name: data[name] for name in SPLITS if name in data}, what))
    if isinstance(data, (tuple, list)) and len(data) in (2, 3) and all(_is_pair(part) for part in data):
        return InMemoryData(_split_arrays(dict(zip(SPLITS, data)), what))
    if isinstance(data, tuple) and len(data) == 2 or _dataset_kind(data):
        x, y = _pair(data, what)
        return InMemoryData({"x_train": x, "y_train": y})
    raise DataError(f"{what} is {_kind(data)}; give {FORMS}")


def _split_arrays(parts: dict[str, Any], what: str) -> dict[str, np.ndarray]:
    arrays = {}
    for name, part in parts.items():
        arrays[f"x_{name}"], arrays[f"y_{name}"] = _pair(part, f"{what} ({name})")
    return arrays


def _is_pair(part: Any) -> bool:
    """A split: an ``(x, y)`` tuple or a dataset. A list stays a candidate array of rows."""
    return (isinstance(part, tuple) and len(part) == 2) or _dataset_kind(part) is not None


def _kind(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"one array of shape {value.shape} (no labels)"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    return "None" if value is None else f"a {type(value).__module__}.{type(value).__qualname__}"


def _dataset_kind(value: Any) -> str | None:
    """"tf.data" or "PyDataset" for those objects. TensorFlow and Keras are looked up among the
    loaded modules: an object of theirs exists only once they are, and importing costs seconds."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(value, tf.data.Dataset):
        return "tf.data"
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(value, keras.utils.PyDataset):
        return "PyDataset"
    return None


def _pair(part: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's ``(x, y)`` as arrays (checked for shape and values later, as a file's are)."""
    kind = _dataset_kind(part)
    if kind == "tf.data":
        return _rows(_tf_elements(part, what), what)
    if kind == "PyDataset":
        return _rows(_py_batches(part, what), what)
    if not (isinstance(part, tuple) and len(part) == 2):
        raise DataError(f"{what} is {_kind(part)}; give {FORMS}")
    x, y = part
    for name, array in (("x", x), ("y", y)):
        if isinstance(array, dict):
            raise DataError(f"{what}: {name} is a dict of named arrays; give one array (rows first)")
    return _array(x, what, "x"), _array(y, what, "y")


def _array(value: Any, what: str, name: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise DataError(f"{what}: {name} is not a rectangular array ({exc})") from None


def _tf_elements(dataset: Any, what: str) -> list[Any]:
    import tensorflow as tf

    if int(dataset.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise DataError(f"{what} is an infinite tf.data.Dataset (repeat() without a count?); give one that ends, gapsweep reads it once")
    return list(dataset.as_numpy_iterator())


def _py_batches(dataset: Any, what: str) -> list[Any]:
    batches = dataset.num_batches
    if batches is None:
        raise DataError(f"{what} is an infinite keras.utils.PyDataset (num_batches is None); give one that ends, gapsweep reads it once")
    return [dataset[index] for index in range(batches)]


def _rows(elements: list[Any], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows from a dataset's elements: batches of ``(x, y)`` as ``model.fit`` takes them, or
    single rows (a scalar label, or an ``x`` of rank 1) as ``from_tensor_slices`` yields them."""
    if not elements:
        raise DataError(f"{what} is an empty dataset")
    for element in elements:
        _check_xy(element, what)
    pairs = [_pair(element, what) for element in elements]
    xs = [x for x, _ in pairs]
    ys = [y for _, y in pairs]
    x0, y0 = xs[0], ys[0]
    batched = y0.ndim >= 1 and x0.ndim >= 2 and len(x0) == len(y0)
    try:
        return (np.concatenate(xs), np.concatenate(ys)) if batched else (np.stack(xs), np.stack(ys))
    except ValueError as exc:
        raise DataError(f"{what}: its elements do not stack into one array ({str(exc).splitlines()[0]})") from None


def _check_xy(element: Any, what: str) -> None:
    if isinstance(element, tuple) and len(element) == 2:
        return
    if isinstance(element, tuple) and len(element) == 3:
        raise DataError(f"{what} yields (x, y, sample_weight); gapsweep weighs every row alike, give (x, y)")
    raise DataError(f"{what} yields {_kind(element)}, not (x, y) pairs; map it to (x, y) first")
