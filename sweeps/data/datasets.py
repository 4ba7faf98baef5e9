"""Data for a sweep: built-in sets, a synthetic generator, or the user's ``.npz``/CSV file.

Everything is split once, deterministically from a seed, into train/val/test; the test split is
kept for the user and never shown to the sweep. Features are standardized with statistics of the
training split alone, so nothing leaks from val or test into training.
"""

from __future__ import annotations

import csv
import zipfile
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gapsweep.errors import DataError
from gapsweep.search_spaces.builder import TaskSpec


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how it is split; stored with the study as JSON."""

    source: str = "digits"
    target: str | None = None
    task: str | None = None
    train_fraction: float = 0.6
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fractions = (self.train_fraction, self.val_fraction, self.test_fraction)
        if any(not 0 <= f <= 1 for f in fractions) or self.train_fraction <= 0:
            raise DataError(f"split fractions must lie in (0, 1], got {fractions}")
        if sum(fractions) > 1 + 1e-9:
            raise DataError(
                f"train + val + test fractions add up to {sum(fractions):.3f}; they must be <= 1"
            )
        if self.task not in (None, "classification", "regression"):
            raise DataError(f"task must be 'classification' or 'regression', got {self.task!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "task": self.task,
            "train_fraction": self.train_fraction,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "options": dict(self.options),
        }


@dataclass(frozen=True)
class Splits:
    """Train/val/test arrays and the task they define."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: TaskSpec

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short hash of the arrays, so a resumed study can tell it sees the same data; computed
        once, since every trial records it."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_val, self.y_val):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]


def _digits(options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype("float32"), bunch.target.astype("int64")


def _sklearn(loader_name: str) -> Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray]]:
    def load(options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        return bunch.data.astype("float32"), bunch.target

    return load


def _synthetic(options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """High-dimensional classes that a wide network memorizes easily: a set that overfits."""
    known = {"n_samples", "n_features", "n_classes", "n_informative", "noise", "seed"}
    unknown = set(options) - known
    if unknown:
        raise DataError(
            f"unknown synthetic data option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    n_samples = int(options.get("n_samples", 2000))
    n_features = int(options.get("n_features", 100))
    n_classes = int(options.get("n_classes", 4))
    n_informative = int(options.get("n_informative", min(10, n_features)))
    noise = float(options.get("noise", 1.5))
    if min(n_samples, n_features, n_classes, n_informative) < 1 or n_classes < 2:
        raise DataError("synthetic data needs n_samples, n_features, n_informative >= 1 and n_classes >= 2")
    if n_informative > n_features:
        raise DataError(f"n_informative ({n_informative}) cannot exceed n_features ({n_features})")
    rng = np.random.default_rng(int(options.get("seed", 0)))
    centers = rng.normal(size=(n_classes, n_informative))
    y = rng.integers(0, n_classes, size=n_samples)
    informative = centers[y] + noise * rng.normal(size=(n_samples, n_informative))
    distractors = rng.normal(size=(n_samples, n_features - n_informative))
    x = np.concatenate([informative, distractors], axis=1).astype("float32")
    return x, y.astype("int64")


BUILTIN: dict[str, Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _digits,
    "wine": _sklearn("load_wine"),
    "breast_cancer": _sklearn("load_breast_cancer"),
    "diabetes": _sklearn("load_diabetes"),
    "synthetic": _synthetic,
}


def load(spec: DataSpec) -> Splits:
    """Load, check and split the data ``spec`` names; raises ``DataError`` on any defect."""
    path = Path(spec.source)
    if spec.source in BUILTIN:
        x, y = BUILTIN[spec.source](dict(spec.options))
        given = None
    elif path.suffix.lower() == ".npz":
        x, y, given = _read_npz(path)
    elif path.suffix.lower() == ".csv":
        x, y = _read_csv(path, spec.target)
        given = None
    else:
        raise DataError(
            f"unknown data '{spec.source}': use a built-in set ({', '.join(sorted(BUILTIN))}), "
            "a .npz file with x_train/y_train, or a .csv file with --target COLUMN"
        )
    x, y = _check_arrays(x, y, "the data")
    task = _task(y, spec.task)
    if given is not None:
        return _finish(given, task)
    return _finish(_split(x, y, spec, task), task)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray] | None]:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a .npz archive (no zip inside); save one with np.savez(path, x_train=..., y_train=...)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError) as exc:
        raise DataError(f"{path} is not a readable .npz archive: {exc}") from None
    missing = {"x_train", "y_train"} - set(arrays)
    if missing:
        raise DataError(
            f"{path} lacks {', '.join(sorted(missing))}; save it with "
            "np.savez(path, x_train=..., y_train=..., [x_val=..., y_val=..., x_test=..., y_test=...])"
        )
    pairs = [("x_val", "y_val"), ("x_test", "y_test")]
    for x_key, y_key in pairs:
        if (x_key in arrays) != (y_key in arrays):
            raise DataError(f"{path} has only one of {x_key}/{y_key}; give both or neither")
    if "x_val" not in arrays:
        return arrays["x_train"], arrays["y_train"], None
    given = {}
    for name in ("train", "val", "test"):
        if f"x_{name}" in arrays:
            given[f"x_{name}"], given[f"y_{name}"] = _check_arrays(
                arrays[f"x_{name}"], arrays[f"y_{name}"], f"{path} ({name})"
            )
    return arrays["x_train"], arrays["y_train"], given


def _read_csv(path: Path, target: str | None) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if not target:
        raise DataError(f"{path}: name the target column with --target COLUMN (or data.target)")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        raise DataError(f"{path} needs a header row and at least one data row")
    header = [name.strip() for name in rows[0]]
    if target not in header:
        raise DataError(f"{path} has no column '{target}'; columns are: {', '.join(header)}")
    column = header.index(target)
    body = [row for row in rows[1:] if row]  # a blank line (e.g. at the end) is no row
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: every row must have {len(header)} cells like the header; a row near line {number} has {len(row)}")
    try:
        table = np.array(
            [[float(cell) if cell.strip() else np.nan for cell in row] for row in body],
            dtype="float64",
        )
    except ValueError as exc:
        raise DataError(f"{path}: every cell must be a number ({exc}); encode categories first") from None
    if table.ndim != 2 or table.shape[1] != len(header):
        raise DataError(f"{path}: every row must have {len(header)} cells like the header")
    y = table[:, column]
    x = np.delete(table, column, axis=1)
    return x, y


def _check_arrays(x: Any, y: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 1:
        raise DataError(f"{where}: x must be 2-D (rows × features), got shape {x.shape}; reshape(-1, 1)")
    if x.ndim > 2:
        x = x.reshape(len(x), -1)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if len(x) != len(y):
        raise DataError(
            f"{where}: x has {len(x)} rows but y has {len(y)}; they must match row for row"
        )
    if len(x) == 0:
        raise DataError(f"{where}: no rows")
    if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.number):
        raise DataError(f"{where}: x and y must be numeric, got {x.dtype} and {y.dtype}")
    for name, array in (("x", x), ("y", y)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise DataError(
                f"{where}: {name} holds {bad} NaN/inf value(s); drop or impute them before sweeping"
            )
    return x.astype("float32"), y


#: A classification target needs at least this many rows per class (labels 0..K-1); fewer means
#: y is most likely a numeric target with whole values (diabetes: 347 "classes" from 442 rows).
MIN_ROWS_PER_CLASS = 2


def _task(y: np.ndarray, declared: str | None) -> TaskSpec:
    integral = bool(np.all(np.equal(np.mod(y, 1), 0)))
    task = declared or ("classification" if integral and len(np.unique(y)) <= 50 else "regression")
    if task == "classification":
        if not integral or y.min() < 0:
            raise DataError(
                "classification needs integer class labels 0..K-1 in y; "
                "pass task = 'regression' for a numeric target"
            )
        n_classes = int(y.max()) + 1
        if n_classes > 2 and n_classes * MIN_ROWS_PER_CLASS > len(y):
            raise DataError(
                f"classification would make {n_classes} classes (labels 0..{n_classes - 1}) from {len(y)} rows, "
                f"fewer than {MIN_ROWS_PER_CLASS} rows per class: is y a numeric target? pass task = 'regression'"
            )
        return TaskSpec(n_features=0, task="classification", n_classes=n_classes)
    return TaskSpec(n_features=0, task="regression", n_outputs=1 if y.ndim == 1 else y.shape[1])


def _split(x: np.ndarray, y: np.ndarray, spec: DataSpec, task: TaskSpec) -> dict[str, np.ndarray]:
    order = np.random.default_rng(spec.seed).permutation(len(x))
    n_test = int(round(spec.test_fraction * len(x)))
    n_val = int(round(spec.val_fraction * len(x)))
    n_train = min(int(round(spec.train_fraction * len(x))), len(x) - n_test - n_val)
    if n_train < 2 or n_val < 1:
        raise DataError(
            f"{len(x)} rows give {n_train} train and {n_val} val rows; raise the fractions or add data"
        )
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    train = train[:n_train]
    return {
        "x_train": x[train], "y_train": y[train],
        "x_val": x[val], "y_val": y[val],
        "x_test": x[test], "y_test": y[test],
    }


def _finish(arrays: dict[str, np.ndarray], task: TaskSpec) -> Splits:
    n_features = arrays["x_train"].shape[1]
    for name in ("val", "test"):
        key = f"x_{name}"
        if key in arrays and len(arrays[key]) and arrays[key].shape[1] != n_features:
            raise DataError(
                f"x_{name} has {arrays[key].shape[1]} features but x_train has {n_features}"
            )
    mean = arrays["x_train"].mean(axis=0)
    std = arrays["x_train"].std(axis=0)
    std[std == 0] = 1.0

    def scale(values: np.ndarray) -> np.ndarray:
        return ((values - mean) / std).astype("float32")

    empty_x = np.zeros((0, n_features), dtype="float32")
    empty_y = np.zeros((0,), dtype=arrays["y_train"].dtype)
    labels = "int64" if task.task == "classification" else "float32"
    if task.task == "classification":
        n_classes = max(
            task.n_classes,
            *(int(arrays[k].max()) + 1 for k in ("y_train", "y_val", "y_test") if k in arrays and len(arrays[k])),
        )
        task = TaskSpec(n_features=n_features, task="classification", n_classes=n_classes)
    else:
        task = TaskSpec(n_features=n_features, task="regression", n_outputs=task.n_outputs)
    return Splits(
        x_train=scale(arrays["x_train"]),
        y_train=arrays["y_train"].astype(labels),
        x_val=scale(arrays["x_val"]),
        y_val=arrays["y_val"].astype(labels),
        x_test=scale(arrays.get("x_test", empty_x)),
        y_test=arrays.get("y_test", empty_y).astype(labels),
        task=task,
    )
