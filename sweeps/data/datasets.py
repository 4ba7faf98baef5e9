"""Data for a sweep: built-in sets, a synthetic generator, the user's ``.npz``/CSV file, data
passed in memory from Python, or a data loader (``loaders.py:load``) that every process calls.

Everything is split once, deterministically from a seed, into train/val/test (stratified by
class for classification, so every class that has the rows appears in each split); the test split
is kept for the user and never shown to the sweep. The raw inputs then pass through a
``Preprocessing`` fitted on the training split alone (standardization; for CSV files also
imputation and one-hot categories), so nothing leaks from val or test into training, and the
same steps can be put in front of a kept model so that it takes raw rows.

A CSV file is read as it comes: a column whose cells are all numbers (or empty) is numeric, any
other is a category column; empty cells (and NA, N/A, NaN, null, ?) are missing values; a text
target makes a classification with those class names. Each defect is a one-line ``DataError``
naming the column.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import math
import os
import shlex
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gapsweep import checks
from gapsweep.errors import DataError, one_line
from gapsweep.search_spaces import code_refs
from gapsweep.search_spaces.builder import TaskSpec
from gapsweep.search_spaces.loader import python_object
from gapsweep.sweeps.data import in_memory
from gapsweep.sweeps.data.in_memory import InMemoryData
from gapsweep.sweeps.data.preprocessing import Columns, Preprocessing, RawInputs, input_name, n_rows, take


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how it is split; stored with the study as JSON.

    ``source`` is a built-in name, an ``.npz``/``.csv`` path, a data loader ``path/module.py:NAME``
    (called with ``options`` as keyword arguments), or data in memory (``in_memory.FORMS``),
    read into arrays here, once.
    """

    source: str | InMemoryData = "digits"
    target: str | None = None
    task: str | None = None
    train_fraction: float = 0.6
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    #: What to do with empty CSV cells: "impute" (training mean plus a missing indicator for
    #: numbers, a category of their own for text) or "refuse" (a DataError naming the column).
    missing: str = "impute"
    #: CSV columns to leave out (identifiers, free text, leaks of the target).
    ignore: tuple[str, ...] = ()
    #: Standardize regression targets with the training rows' mean and standard deviation for
    #: training (kept models predict in the target's units); a study stored before reads as False.
    scale_target: bool = True

    def __post_init__(self) -> None:
        for name in ("train_fraction", "val_fraction", "test_fraction"):
            checks.number(name, getattr(self, name), maximum=1, error=DataError)
        fractions = (self.train_fraction, self.val_fraction, self.test_fraction)
        if self.train_fraction <= 0:
            raise DataError(f"split fractions must lie in (0, 1], got {fractions}")
        if sum(fractions) > 1 + 1e-9:
            room = 1 - self.val_fraction - self.test_fraction
            raise DataError(
                f"train + val + test fractions add up to {sum(fractions):.3f}; they must be <= 1: with val "
                f"{self.val_fraction:g} and test {self.test_fraction:g} (data.val_fraction, data.test_fraction in a "
                f"sweep file), the train fraction may be at most {room:g}"
            )
        if self.task not in (None, "classification", "regression"):
            raise DataError(f"task must be 'classification' or 'regression', got {self.task!r}")
        if self.missing not in ("impute", "refuse"):
            raise DataError(f"missing must be 'impute' or 'refuse', got {self.missing!r}")
        checks.whole("data seed", self.seed, 0, error=DataError)
        if not isinstance(self.scale_target, bool):
            raise DataError(f"scale_target must be true or false, got {self.scale_target!r}")
        if self.target is not None and not isinstance(self.target, str):
            raise DataError(f"target must be a column name, got {self.target!r}")
        if not isinstance(self.options, dict):
            raise DataError(f"data options must be a table of keyword arguments (options = {{n_samples = 500}}), got {self.options!r}")
        # One column named as a string is that column, not its letters.
        ignore = (self.ignore,) if isinstance(self.ignore, str) else self.ignore
        if not isinstance(ignore, (list, tuple)) or not all(isinstance(column, str) for column in ignore):
            raise DataError(f"ignore must be a column name or a list of them, got {self.ignore!r}")
        object.__setattr__(self, "ignore", tuple(ignore))
        if isinstance(self.source, os.PathLike):  # a pathlib.Path names a file as its text does
            object.__setattr__(self, "source", os.fspath(self.source))
        if not isinstance(self.source, (str, InMemoryData)):
            object.__setattr__(self, "source", in_memory.capture(self.source, "the data passed from Python"))

    @property
    def loader(self) -> bool:
        """Whether the source names a data loader, ``path/module.py:NAME``."""
        return isinstance(self.source, str) and code_refs.is_ref(self.source)

    @property
    def in_memory(self) -> bool:
        """Whether the data lives only in this process's memory."""
        return isinstance(self.source, InMemoryData)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.note() if isinstance(self.source, InMemoryData) else self.source,
            "target": self.target,
            "task": self.task,
            "train_fraction": self.train_fraction,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "options": dict(self.options),
            "missing": self.missing,
            "ignore": list(self.ignore),
            "scale_target": self.scale_target,
        }


@dataclass(frozen=True)
class Splits:
    """Train/val/test arrays as the trainer sees them (regression targets standardized where
    ``preprocessing.target_mean`` is set), the task they define, and how raw rows become those arrays."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: TaskSpec
    preprocessing: Preprocessing
    #: The test split's raw inputs: what a stored model (``Preprocessing.wrap``) takes.
    raw_test: RawInputs

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short hash of the arrays trials learn and are picked on, so a resumed study can tell
        it sees the same data; computed once, since every trial records it."""
        return _digest(self.x_train, self.y_train, self.x_val, self.y_val)

    @functools.cached_property
    def test_fingerprint(self) -> str:
        """The same for the test split, which kept models are measured on (never picked on)."""
        return _digest(self.x_test, self.y_test)


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _digits(options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype("float32"), bunch.target.astype("int64")


def _digits_images(options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Digits as 8×8×1 images, for convolutional models (the ``cnn`` space)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images[..., None].astype("float32"), bunch.target.astype("int64")


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
    # Checked as given: int() would take 1.5 as 1 and float() would raise on text, far from the option.
    n_samples = checks.whole("synthetic option n_samples", options.get("n_samples", 2000), 1, error=DataError)
    n_features = checks.whole("synthetic option n_features", options.get("n_features", 100), 1, error=DataError)
    n_classes = checks.whole("synthetic option n_classes", options.get("n_classes", 4), 2, error=DataError)
    n_informative = checks.whole(
        "synthetic option n_informative", options.get("n_informative", min(10, n_features)), 1, error=DataError
    )
    noise = checks.number("synthetic option noise", options.get("noise", 1.5), error=DataError)
    seed = checks.whole("synthetic option seed", options.get("seed", 0), 0, error=DataError)
    if n_informative > n_features:
        raise DataError(f"n_informative ({n_informative}) cannot exceed n_features ({n_features})")
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, n_informative))
    y = rng.integers(0, n_classes, size=n_samples)
    informative = centers[y] + noise * rng.normal(size=(n_samples, n_informative))
    distractors = rng.normal(size=(n_samples, n_features - n_informative))
    x = np.concatenate([informative, distractors], axis=1).astype("float32")
    return x, y.astype("int64")


BUILTIN: dict[str, Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _digits,
    "digits-images": _digits_images,
    "wine": _sklearn("load_wine"),
    "breast_cancer": _sklearn("load_breast_cancer"),
    "diabetes": _sklearn("load_diabetes"),
    "synthetic": _synthetic,
}


#: Cells read as missing values in a CSV file (compared lower-case, after stripping spaces).
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "?"})
#: A text column with at least this share of distinct values (over at least _ID_MIN_ROWS filled
#: cells) is an identifier or free text, not a category.
_ID_SHARE = 0.9
_ID_MIN_ROWS = 20
#: An integer numeric target with at most this many distinct values is taken for class labels.
_MAX_AUTO_CLASSES = 50
#: The largest magnitude the trainer's float32 arithmetic holds; larger values would become inf.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def load(spec: DataSpec, project: str | Path | None = None) -> Splits:
    """Load, check and split the data ``spec`` names; raises ``DataError`` on any defect. A data
    loader is looked up inside the project folder ``project`` (None: the current folder)."""
    if in_memory.is_note(spec.source):
        raise in_memory.unreachable(spec.source)
    is_csv = isinstance(spec.source, str) and not spec.loader and Path(spec.source).suffix.lower() == ".csv"
    if (spec.target or spec.ignore) and not is_csv:
        flags = [flag for flag, given in (("--target", spec.target), ("--ignore", spec.ignore)) if given]
        what = f"'{spec.source}' is not one" if isinstance(spec.source, str) else "data passed from Python is not one"
        verb = "names a column" if len(flags) == 1 else "name columns"
        raise DataError(f"{' and '.join(flags)} {verb} of a .csv file, and {what}; drop {' and '.join(flags)}")
    classes: tuple[str, ...] = ()
    given = None
    if isinstance(spec.source, InMemoryData) or spec.loader:
        data, where = (spec.source, "the data passed from Python") if isinstance(spec.source, InMemoryData) else _call_loader(spec, project)
        x, y, given = _from_arrays(data.arrays, where)
        x, y = _check_arrays(x, y, where)
        task = _task(_all_labels(y, given), spec.task)
    elif spec.source in BUILTIN:
        if spec.options and spec.source != "synthetic":
            raise DataError(
                f"the built-in data '{spec.source}' takes no options, got {', '.join(sorted(spec.options))}; "
                "drop data.options (only 'synthetic' has some)"
            )
        x, y = _check_arrays(*BUILTIN[spec.source](dict(spec.options)), "the data")
        task = _task(y, spec.task)
    elif (path := _data_path(spec.source)).suffix.lower() == ".npz":
        x, y, given = _read_npz(path)
        x, y = _check_arrays(x, y, str(path))
        task = _task(_all_labels(y, given), spec.task)
    elif path.suffix.lower() == ".csv":
        columns, y, classes = _read_csv(path, spec)
        x = columns
        task = _task(y, "classification" if classes else "regression")
    else:
        raise DataError(
            f"unknown data '{spec.source}': use a built-in set ({', '.join(sorted(BUILTIN))}), "
            "a .npz file with x_train/y_train, a .csv file with --target COLUMN, or a data loader module.py:NAME"
        )
    return _finish(given or _split_rows(x, y, spec, task), task, classes, spec.target, scale_target=spec.scale_target)


def _data_path(source: str) -> Path:
    """A data file's path; a missing relative one is named with the folder it was looked for in
    (a study's stored path is relative to where it was launched)."""
    path = Path(source)
    if path.suffix.lower() in (".csv", ".npz") and not path.is_absolute() and not path.is_file():
        raise DataError(
            f"data file not found: {source} (a relative path is read from the current folder, {Path.cwd()}; "
            "run from the folder it is relative to, or give its absolute path)"
        )
    return path


def _all_labels(y: np.ndarray, given: dict[str, np.ndarray] | None) -> np.ndarray:
    """The labels the task is read from: every given split's (a class may be absent from one), else ``y``."""
    if given is None:
        return y
    return np.concatenate([given[key] for key in given if key.startswith("y_")])


def _split_rows(x: RawInputs, y: np.ndarray, spec: DataSpec, task: TaskSpec) -> dict[str, Any]:
    """The train/val/test arrays of ``spec``'s fractions and seed."""
    rows = _split(y, spec, stratify=task.task == "classification")
    given: dict[str, Any] = {}
    for name, index in rows.items():
        given[f"x_{name}"], given[f"y_{name}"] = take(x, index), y[index]
    return given


def _call_loader(spec: DataSpec, project: str | Path | None) -> tuple[InMemoryData, str]:
    """Import the loader from inside the project folder, call it with ``spec.options``, and read
    what it returns as data passed in memory."""
    assert isinstance(spec.source, str)
    ref = code_refs.locate(spec.source, project, what="data loader")
    where = f"data loader '{ref.stored}'"
    loader = python_object(ref.importable, "data loader")
    if not callable(loader):
        raise DataError(f"{where} is a {type(loader).__name__}, not a function; name a function that returns the data")
    try:
        data = loader(**spec.options)
    except Exception as exc:  # the user's code ran: whatever it raises (a wrong data.options key too) is one line
        raise DataError(f"calling {where} raised {one_line(exc)}") from None
    return in_memory.capture(data, f"what {where} returned"), where


def _npz_arrays(path: Path, how: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file at ``path``; ``how`` (e.g. ``np.savez(path, x=...)``)
    says how to write one, for the message when it is missing or no archive."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a .npz archive (no zip inside); save one with {how}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError) as exc:
        raise DataError(f"{path} is not a readable .npz archive: {exc}") from None


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray] | None]:
    arrays = _npz_arrays(path, "np.savez(path, x_train=..., y_train=...)")
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
    return _from_arrays(arrays, str(path))


def _from_arrays(arrays: dict[str, np.ndarray], where: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray] | None]:
    """The training arrays, and every split checked when the splits are given (``x_val`` present)."""
    if "x_val" not in arrays:
        return arrays["x_train"], arrays["y_train"], None
    given = {}
    for name in in_memory.SPLITS:
        if f"x_{name}" in arrays:
            given[f"x_{name}"], given[f"y_{name}"] = _check_arrays(
                arrays[f"x_{name}"], arrays[f"y_{name}"], f"{where} ({name})"
            )
    return arrays["x_train"], arrays["y_train"], given


def _csv_cells(path: Path, *, new_rows: bool = False, numbers_only: bool = False) -> tuple[list[str] | None, list[list[str]]]:
    """Header and data rows of a CSV file, cells stripped.

    Blank lines are skipped; so are rows of empty cells (``,,``) when training, but not in
    ``new_rows`` to predict, where every row must come back as one prediction, in order. A first
    row of numbers only is data, not a header: refused, unless ``numbers_only`` (the rows of an
    array model), where it means the file has no header (None).
    """
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            lines = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row) or (new_rows and len(row) > 1)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not a readable UTF-8 CSV file: {exc}") from None
    first = [name.strip() for name in lines[0][1]] if lines else []
    if first and all(_number(cell) is not None for cell in first):
        if not numbers_only:
            raise DataError(
                f"{path}: its first row ({', '.join(first[:4])}{', …' if len(first) > 4 else ''}) holds numbers only, "
                "so it looks like data; add a header row that names the columns"
            )
        header, data = None, lines
    else:
        if len(lines) < 2:
            raise DataError(f"{path} needs a header row and at least one data row")
        header, data = first, lines[1:]
        for position, name in enumerate(header):
            if not name:
                raise DataError(f"{path}: column {position + 1} of the header has no name; name it")
            if header.index(name) != position:
                raise DataError(f"{path}: column '{name}' appears twice in the header; rename one")
    width = len(header) if header is not None else len(data[0][1])
    rows = []
    for line, row in data:
        if len(row) != width:
            what = "the header has" if header is not None else "the first row has"
            raise DataError(f"{path}: line {line} has {len(row)} cells but {what} {width}")
        rows.append([cell.strip() for cell in row])
    return header, rows


def _missing(cell: str) -> bool:
    return cell.lower() in MISSING_MARKERS


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _separator_hint(header: list[str]) -> str:
    """A note for a header read as one cell: the file separates its cells with something else."""
    other = next((mark for mark in ";\t|" if len(header) == 1 and mark in header[0]), None)
    return f" (it seems to separate cells with {other!r}; save it with commas)" if other else ""


def _read_csv(path: Path, spec: DataSpec) -> tuple[Columns, np.ndarray, tuple[str, ...]]:
    """Feature columns as raw arrays, the target as numbers or class indices, the class names."""
    if not spec.target:
        raise DataError(f"{path}: name the target column with --target COLUMN (or data.target)")
    if spec.target in spec.ignore:
        raise DataError(f"--ignore {spec.target} leaves out the target column itself; drop it from --ignore")
    header, rows = _csv_cells(path)
    assert header is not None  # a first row of numbers only was refused
    for name in (spec.target, *spec.ignore):
        if name not in header:
            raise DataError(f"{path} has no column '{name}'; columns are: {', '.join(header)}{_separator_hint(header)}")
    inputs: dict[str, str] = {}
    for name in header:
        if name == spec.target or name in spec.ignore:
            continue
        other = inputs.setdefault(input_name(name), name)
        if other != name:  # the model's inputs are named after the columns, and must differ
            raise DataError(
                f"{path}: columns '{other}' and '{name}' would both be the model input '{input_name(name)}' "
                "(a Keras name cannot hold '/'); rename one, or leave one out with --ignore"
            )
    cells = {name: [row[index] for row in rows] for index, name in enumerate(header)}
    y, classes = _target(spec.target, cells[spec.target], spec.task)
    features = {
        name: _feature(name, values, spec.missing)
        for name, values in cells.items()
        if name != spec.target and name not in spec.ignore
    }
    if not features:
        raise DataError(f"{path} has no feature column besides the target '{spec.target}'")
    return features, y, classes


def _feature(name: str, cells: list[str], missing: str) -> np.ndarray:
    """One feature column: float32 with NaN for gaps, or text (a category) with "" for gaps."""
    gaps = [row for row, cell in enumerate(cells) if _missing(cell)]
    if len(gaps) == len(cells):
        raise DataError(f"column '{name}' is empty; leave it out with data.ignore (--ignore {shlex.quote(name)})")
    if gaps and missing == "refuse":
        raise DataError(
            f"column '{name}' has {len(gaps)} empty cell(s), the first on data row {gaps[0] + 1}; "
            "fill them, or let gapsweep impute them (--missing impute; data.missing = 'impute' in a sweep file)"
        )
    numbers = [None if _missing(cell) else _number(cell) for cell in cells]
    text = [row for row, (cell, number) in enumerate(zip(cells, numbers)) if number is None and not _missing(cell)]
    filled = len(cells) - len(gaps)
    if not text:
        values = np.array([math.nan if number is None else number for number in numbers], dtype="float64")
        bad = [row for row, value in enumerate(values) if math.isinf(value)]
        if bad:
            raise DataError(f"column '{name}' holds an infinite value on data row {bad[0] + 1}; fix or empty that cell")
        _check_float32(f"column '{name}'", values)
        return values.astype("float32")
    if len(text) < filled / 2:
        raise DataError(
            f"column '{name}' is numeric but data row {text[0] + 1} holds '{cells[text[0]]}'; "
            "fix that cell or empty it (a missing value)"
        )
    distinct = len({cell for cell in cells if not _missing(cell)})
    if filled >= _ID_MIN_ROWS and distinct >= _ID_SHARE * filled:
        raise DataError(
            f"column '{name}' looks like an identifier or free text ({distinct} distinct values in {filled} rows), "
            f"not a category; leave it out with data.ignore (--ignore {shlex.quote(name)})"
        )
    return np.array(["" if _missing(cell) else cell for cell in cells], dtype=object)


def _target(name: str, cells: list[str], declared: str | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """The target as regression values, or as class indices with the class names."""
    gaps = [row for row, cell in enumerate(cells) if _missing(cell)]
    if gaps:
        raise DataError(
            f"column '{name}' (the target) has {len(gaps)} empty cell(s), the first on data row {gaps[0] + 1}; "
            "drop those rows or fill them"
        )
    numbers = [_number(cell) for cell in cells]
    if any(number is None for number in numbers):
        if declared == "regression":
            example = next(cell for cell, number in zip(cells, numbers) if number is None)
            raise DataError(
                f"column '{name}' (the target) holds text such as '{example}'; a regression target must be numbers"
            )
        names = sorted(set(cells))
        index = {value: position for position, value in enumerate(names)}
        labels = np.array([index[cell] for cell in cells], dtype="int64")
    else:
        values = np.array(numbers, dtype="float64")
        if not np.all(np.isfinite(values)):
            row = int(np.argmin(np.isfinite(values)))
            raise DataError(f"column '{name}' (the target) holds '{cells[row]}' on data row {row + 1}; it must be finite")
        distinct, labels = np.unique(values, return_inverse=True)
        integral = bool(np.all(np.mod(distinct, 1) == 0))
        if declared == "regression" or (declared is None and not (integral and len(distinct) <= _MAX_AUTO_CLASSES)):
            _check_float32(f"column '{name}' (the target)", values)
            return values.astype("float32"), ()
        names = [str(int(value)) if integral else repr(float(value)) for value in distinct]
    if len(names) < 2:
        raise DataError(f"column '{name}' (the target) has one class only ('{names[0]}'); classification needs two or more")
    return labels.astype("int64"), tuple(names)


def _check_float32(what: str, values: np.ndarray) -> None:
    """Refuse finite numbers that float32, the trainer's arithmetic, would turn into inf."""
    big = np.flatnonzero(np.abs(np.nan_to_num(values)) > _FLOAT32_MAX)
    if len(big):
        raise DataError(
            f"{what} holds {values[big[0]]:.3g} on data row {big[0] + 1}, beyond float32's range ({_FLOAT32_MAX:.3g}); "
            "the trainer computes in float32: rescale that column (e.g. divide or take a log)"
        )


def read_rows(path: str | Path, info: dict[str, Any]) -> RawInputs:
    """New rows for a stored model, read as its ``gapsweep.json`` (``info``) describes its inputs:
    named CSV columns, or an array (a .npz with ``x``, or a CSV of numbers)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if info.get("inputs") == "columns":
        if suffix != ".csv":
            raise DataError(f"{path}: this model takes CSV rows with columns {', '.join(c['name'] for c in info['columns'])}; give a .csv file")
        header, rows = _csv_cells(path, new_rows=True)
        assert header is not None
        raw: Columns = {}
        for column in info["columns"]:
            name = column["name"]
            if name not in header:
                raise DataError(f"{path} lacks column '{name}', which the model takes{_separator_hint(header)}")
            cells = [row[header.index(name)] for row in rows]
            if column["kind"] == "category":
                raw[name] = np.array(["" if _missing(cell) else cell for cell in cells], dtype=object)
                continue
            numbers = [math.nan if _missing(cell) else _number(cell) for cell in cells]
            wrong = next((row for row, value in enumerate(numbers) if value is None or math.isinf(value)), None)
            if wrong is not None:
                raise DataError(
                    f"column '{name}' must hold finite numbers (an empty cell is a missing value), but data row "
                    f"{wrong + 1} holds '{cells[wrong]}'"
                )
            raw[name] = np.array(numbers, dtype="float32")
        return raw
    shape = tuple(int(size) for size in info.get("shape", ()))
    if suffix == ".npz":
        arrays = _npz_arrays(path, "np.savez(path, x=...)")
        if "x" not in arrays:
            raise DataError(f"{path} lacks an array 'x'; save the rows with np.savez(path, x=...)")
        x = arrays["x"]
        if x.dtype.kind not in "biuf":
            raise DataError(f"{path}: this model takes numbers, but its array 'x' holds {x.dtype} values")
    elif suffix == ".csv":
        header, rows = _csv_cells(path, new_rows=True, numbers_only=True)
        names = header if header is not None else [""] * len(rows[0])
        keep = [index for index, name in enumerate(names) if name != info.get("target")]
        try:
            x = np.array([[float(row[index]) for index in keep] for row in rows], dtype="float32")
        except ValueError as exc:
            raise DataError(f"{path}: this model takes numbers only ({exc})") from None
    else:
        raise DataError(f"{path}: give new rows as a .csv or a .npz file with an array 'x'")
    if x.ndim < 1 or math.prod(x.shape[1:]) != math.prod(shape):
        raise DataError(f"{path}: the model takes rows of shape {shape}, got rows of shape {x.shape[1:]}")
    if not len(x):
        raise DataError(f"{path} holds no rows to predict")
    x = x.reshape(len(x), *shape).astype("float32")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path} holds NaN or infinite values; this model takes complete rows")
    return x


def _check_arrays(x: Any, y: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 1:
        raise DataError(f"{where}: x must be 2-D (rows × features) or more (rows × height × width × channels), got shape {x.shape}; reshape(-1, 1)")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if len(x) != len(y):
        raise DataError(
            f"{where}: x has {len(x)} rows but y has {len(y)}; they must match row for row"
        )
    if len(x) == 0:
        raise DataError(f"{where}: no rows")
    x = x.astype("float32") if x.dtype == bool else x
    y = y.astype("int64") if y.dtype == bool else y  # True/False labels: classes 1 and 0
    numeric = [np.issubdtype(a.dtype, np.number) and not np.iscomplexobj(a) for a in (x, y)]
    if not all(numeric):
        hint = ""
        if numeric[0] and y.dtype.kind in "USO":
            hint = ("; for text class names pass their numbers 0..K-1 (names, y = np.unique(y, return_inverse=True)), "
                    "or give a CSV with the names as its target column")
        raise DataError(f"{where}: x and y must hold real numbers, got {x.dtype} and {y.dtype}{hint}")
    for name, array in (("x", x), ("y", y)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise DataError(
                f"{where}: {name} holds {bad} NaN/inf value(s); drop or impute them before sweeping"
            )
        if np.issubdtype(array.dtype, np.floating) and np.size(array) and np.abs(array).max() > _FLOAT32_MAX:
            raise DataError(
                f"{where}: {name} holds values beyond float32's range (up to {np.abs(array).max():.3g}, the limit is "
                f"{_FLOAT32_MAX:.3g}); the trainer computes in float32: rescale them (e.g. divide or take a log)"
            )
    return x.astype("float32"), y



#: A classification target needs at least this many rows per class (labels 0..K-1); fewer means
#: y is most likely a numeric target with whole values (diabetes: 347 "classes" from 442 rows).
MIN_ROWS_PER_CLASS = 2


def _task(y: np.ndarray, declared: str | None) -> TaskSpec:
    integral = bool(np.all(np.equal(np.mod(y, 1), 0)))
    task = declared or ("classification" if integral and len(np.unique(y)) <= _MAX_AUTO_CLASSES else "regression")
    if task == "classification":
        if y.ndim > 1:
            raise DataError(
                f"classification needs one class index per row (y of shape (rows,)), got y of shape {y.shape}; "
                "for one-hot labels pass y.argmax(axis=1), for several numeric targets --task regression (task = 'regression')"
            )
        if not integral or y.min() < 0:
            raise DataError(
                "classification needs integer class labels 0..K-1 in y; "
                "pass --task regression (task = 'regression' in a sweep file) for a numeric target"
            )
        present = np.unique(y).astype("int64")
        if len(present) < 2:
            raise DataError(
                f"classification needs two or more classes, but y holds the label {present[0]} only; "
                "pass rows of every class, or --task regression (task = 'regression') for a numeric target"
            )
        n_classes = int(y.max()) + 1
        if n_classes > 2 and n_classes * MIN_ROWS_PER_CLASS > len(y):
            raise DataError(
                f"classification would make {n_classes} classes (labels 0..{n_classes - 1}) from {len(y)} rows, "
                f"fewer than {MIN_ROWS_PER_CLASS} rows per class: is the target a number to predict? pass --task regression "
                "(task = 'regression' in a sweep file)"
            )
        if len(present) != n_classes:
            absent = sorted(set(range(n_classes)) - set(present.tolist()))
            shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
            raise DataError(
                f"classification needs the labels 0..K-1, each present, but y has {len(present)} labels from {present[0]} "
                f"to {present[-1]} (none is {shown}); renumber them (np.unique(y, return_inverse=True)[1]), "
                "or pass --task regression (task = 'regression') for a numeric target"
            )
        return TaskSpec(n_features=0, task="classification", n_classes=n_classes)
    return TaskSpec(n_features=0, task="regression", n_outputs=1 if y.ndim == 1 else y.shape[1])


def _split(y: np.ndarray, spec: DataSpec, *, stratify: bool) -> dict[str, np.ndarray]:
    """Row indices of the train/val/test splits, drawn from ``spec.seed``.

    Stratified, each class is shared out in proportion to its size, and first one row to every
    split that wants rows, as long as the class has a row for each; the split sizes stay exactly
    those of the fractions.
    """
    n = len(y)
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(n)
    n_test = int(round(spec.test_fraction * n))
    n_val = int(round(spec.val_fraction * n))
    n_train = min(int(round(spec.train_fraction * n)), n - n_test - n_val)
    if n_train < 2 or n_val < 1:
        raise DataError(
            f"{n} rows give {n_train} train and {n_val} val rows; raise the fractions or add data"
        )
    sizes = {"test": n_test, "val": n_val, "train": n_train}
    if not stratify:
        bounds = np.cumsum([0, n_test, n_val, n_train])
        return {name: order[bounds[i] : bounds[i + 1]] for i, name in enumerate(sizes)}
    labels, shuffled = np.unique(y[order], return_inverse=True)
    members = [order[shuffled == label] for label in range(len(labels))]  # each class, shuffled
    counts = np.array([len(rows) for rows in members])
    available = counts.copy()
    taken = {}
    wanting = sum(1 for size in sizes.values() if size)
    for name, size in sizes.items():
        share = _share(size, available, counts, np.where(available >= wanting, 1, 0) if size else 0 * counts, rng)
        taken[name] = share
        available = available - share
        wanting -= 1 if size else 0
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)  # keep each split in the shuffled order
    start = np.zeros(len(members), dtype=np.int64)
    out = {}
    for name, share in taken.items():
        rows = np.concatenate([members[c][start[c] : start[c] + share[c]] for c in range(len(members))])
        start += share
        out[name] = rows[np.argsort(rank[rows], kind="stable")]
    return out


def _share(total: int, available: np.ndarray, weights: np.ndarray, floor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``total`` rows shared out among classes: at least ``floor`` each (when the total allows),
    the rest in proportion to ``weights`` by largest remainder, never more than ``available``."""
    floor = np.asarray(floor, dtype=np.int64)
    if floor.sum() > total:
        floor = np.zeros_like(floor)
    want = np.clip(weights * total / weights.sum() - floor, 0, available - floor)
    share = floor + np.floor(want).astype(np.int64)
    while share.sum() < total:
        room = available - share
        remainder = np.where(room > 0, weights * total / weights.sum() - share + rng.random(len(share)) * 1e-9, -np.inf)
        chosen = np.argsort(-remainder, kind="stable")[: total - int(share.sum())]
        share[chosen[np.isfinite(remainder[chosen])]] += 1
    return share


def _finish(
    arrays: dict[str, Any], task: TaskSpec, classes: tuple[str, ...], target: str | None, *, scale_target: bool
) -> Splits:
    """Fit the preprocessing on the training split and apply it to every split (to the regression
    targets too, with ``scale_target``)."""
    train = arrays["x_train"]
    if not isinstance(train, dict):
        for name in ("val", "test"):
            key = f"x_{name}"
            if key in arrays and len(arrays[key]) and arrays[key].shape[1:] != train.shape[1:]:
                if train.ndim == 2 and arrays[key].ndim == 2:
                    raise DataError(f"x_{name} has {arrays[key].shape[1]} features but x_train has {train.shape[1]}")
                raise DataError(f"x_{name} rows have shape {arrays[key].shape[1:]} but x_train rows {train.shape[1:]}")
    labels = "int64" if task.task == "classification" else "float32"
    if task.task == "classification":
        n_classes = max(
            task.n_classes,
            *(int(arrays[k].max()) + 1 for k in ("y_train", "y_val", "y_test") if k in arrays and len(arrays[k])),
        )
        classes = classes or tuple(str(label) for label in range(n_classes))
    y_train = arrays["y_train"].astype(labels)
    scaled = scale_target and task.task == "regression"
    preprocessing = Preprocessing.fit(train, task=task.task, classes=classes, target=target, y=y_train if scaled else None)
    empty = take(train, np.zeros(0, dtype=np.int64))
    raw_test = arrays.get("x_test", empty)
    x_train = preprocessing.apply(train)
    shape = tuple(int(size) for size in x_train.shape[1:])
    n_features = math.prod(shape)
    if task.task == "classification":
        task = TaskSpec(n_features=n_features, task="classification", n_classes=n_classes, input_shape=shape)
    else:
        task = TaskSpec(n_features=n_features, task="regression", n_outputs=task.n_outputs, input_shape=shape)
    return Splits(
        x_train=x_train,
        y_train=preprocessing.scale_target(y_train),
        x_val=preprocessing.apply(arrays["x_val"]),
        y_val=preprocessing.scale_target(arrays["y_val"].astype(labels)),
        x_test=preprocessing.apply(raw_test),
        y_test=preprocessing.scale_target(arrays.get("y_test", np.zeros(0)).astype(labels)),
        task=task,
        preprocessing=preprocessing,
        raw_test=raw_test,
    )
