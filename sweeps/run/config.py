"""A sweep's whole configuration, from a TOML/YAML sweep file, flags, or Python.

A sweep file keeps space, data, objective, pruner, budget and storage in version control:

    study = "digits-small"
    space = "mlp"                 # a built-in name, a file, module.py:NAME, or an inline table
    # hypermodel = "models.py:build_model"   # or, instead of space, a KerasTuner hypermodel
    trials = 20
    pruner = "median"             # median | hyperband | sha | none
    [data]
    source = "digits"
    train_fraction = 0.3
    [objective]
    gap_penalty = 1.0
    score = "bounded"             # bounded (default) | additive
    kappa = 0.5                   # the bounded penalty moves a score by at most κ·SE

Flags given on the command line override the file. Relative paths in a file are read relative
to the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from gapsweep.errors import ConfigError, GapsweepError
from gapsweep.search_spaces.loader import read_document
from gapsweep.storage.reader import get_study_config
from gapsweep.sweeps.data.datasets import DataSpec
from gapsweep.sweeps.trial.objective import ObjectiveSettings
from gapsweep.sweeps.trial.pruning import PRUNERS
from gapsweep.sweeps.trial.score import SCORES

if TYPE_CHECKING:
    import keras_tuner

SAMPLERS = ("tpe", "random")


@dataclass(frozen=True)
class SweepConfig:
    """Everything ``launch`` needs. ``storage`` is never stored with the study or printed raw."""

    study: str = "gapsweep"
    space: str | dict[str, Any] = "mlp"
    data: DataSpec = field(default_factory=DataSpec)
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    pruner: str = "median"
    sampler: str = "tpe"
    trials: int = 20
    timeout: float | None = None
    seed: int = 0
    storage: str | None = None
    baseline: dict[str, Any] | None = None
    #: A KerasTuner build function or HyperModel (``path/to/module.py:NAME``, or the object itself)
    #: searched instead of ``space``; ``max_epochs`` is its epoch budget.
    hypermodel: str | Callable[..., Any] | keras_tuner.HyperModel | None = None
    max_epochs: int = 20

    def __post_init__(self) -> None:
        if not self.study or not isinstance(self.study, str):
            raise ConfigError("the study needs a name: --study NAME")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"unknown pruner '{self.pruner}'; use one of {', '.join(PRUNERS)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{self.sampler}'; use one of {', '.join(SAMPLERS)}")
        _whole("trials", self.trials, 1)
        if self.timeout is not None and not (self.timeout > 0):
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        objective = self.objective
        _non_negative("gap_penalty", objective.gap_penalty)
        _non_negative("kappa", objective.kappa)
        if objective.score not in SCORES:
            raise ConfigError(f"unknown score {objective.score!r}; use one of {', '.join(SCORES)}")
        _whole("patience", objective.patience, 1)
        _whole("keep_models", objective.keep_models, 0)
        if objective.max_gap is not None:
            _non_negative("max_gap", objective.max_gap)
            if self.sampler != "tpe":
                raise ConfigError("max_gap needs the tpe sampler (it supports constraints); drop --sampler random")
        if objective.cv:
            _whole("cv", objective.cv, 2)
        if not isinstance(objective.multi_objective, bool):
            raise ConfigError(f"multi_objective must be true or false, got {objective.multi_objective!r}")
        if self.baseline is not None and not isinstance(self.baseline, dict):
            raise ConfigError(f"baseline must be a table of parameter values, got {self.baseline!r}")
        if isinstance(self.hypermodel, str) and not _python_ref(self.hypermodel):
            raise ConfigError(
                "hypermodel must be 'path/to/module.py:NAME' (a KerasTuner build function or HyperModel), "
                f"got {self.hypermodel!r}"
            )
        _whole("max_epochs", self.max_epochs, 1)

    def to_dict(self) -> dict[str, Any]:
        """The study's stored configuration (no storage URL: it may hold a password)."""
        return {
            "study": self.study,
            "space": self.space if self.hypermodel is None else None,
            # For a hypermodel given as an object, the hypermodel's describe() stores where it lives.
            "hypermodel": self.hypermodel if isinstance(self.hypermodel, str) else None,
            "max_epochs": self.max_epochs,
            "data": self.data.to_dict(),
            "objective": self.objective.to_dict(),
            "pruner": self.pruner,
            "sampler": self.sampler,
            "trials": self.trials,
            "timeout": self.timeout,
            "seed": self.seed,
            "baseline": self.baseline,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], base: Path | None = None) -> "SweepConfig":
        """Build from a sweep file's content; unknown keys are errors, not silent typos."""
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(
                f"unknown sweep setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        values = dict(raw)
        if "data" in values:
            values["data"] = _data_spec(values["data"], base)
        if "objective" in values:
            values["objective"] = _section(ObjectiveSettings, values["objective"], "objective")
        if values.get("space") is None:
            values.pop("space", None)  # a hypermodel study stores no space
        if "space" in values and values.get("hypermodel") is not None:
            raise ConfigError("a sweep searches either a space or a hypermodel; drop one of the two settings")
        for key in ("space", "hypermodel"):
            if isinstance(values.get(key), str) and base is not None:
                values[key] = _relative(values[key], base)
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"invalid sweep setting: {exc}") from None

    def override(self, **changes: Any) -> "SweepConfig":
        """A copy with the given (non-None) settings replaced: flags over the file."""
        return replace(self, **{key: value for key, value in changes.items() if value is not None})


def _python_ref(ref: str) -> bool:
    """Whether ``ref`` reads ``path/to/module.py:NAME``."""
    file_part, colon, name = ref.rpartition(":")
    return bool(colon) and file_part.endswith(".py") and name.isidentifier()


def _whole(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def _non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a number >= 0, got {value!r}")


def load_baseline(path: str | Path) -> dict[str, Any]:
    """The user's current configuration, as a JSON object of parameter values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"baseline file not found: {path}")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a JSON object of parameter values, e.g. {{\"units\": 64}}")
    return values


def load_sweep_file(path: str | Path) -> SweepConfig:
    """Read a sweep file; any defect is a ``ConfigError`` naming the file."""
    path = Path(path)
    try:
        return SweepConfig.from_dict(read_document(path), base=path.parent)
    except GapsweepError as exc:
        message = str(exc)
        raise ConfigError(message if str(path) in message else f"{path}: {message}") from None


def _data_spec(raw: Any, base: Path | None) -> DataSpec:
    if isinstance(raw, str):
        raw = {"source": raw}
    spec = _section(DataSpec, raw, "data")
    if base is not None and Path(spec.source).suffix.lower() in {".npz", ".csv"}:
        spec = replace(spec, source=_relative(spec.source, base))
    return spec


def _section(cls: type, raw: Any, name: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{name}] must be a table, got {raw!r}")
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown [{name}] setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise ConfigError(f"invalid [{name}] setting: {exc}") from None


def _relative(ref: str, base: Path) -> str:
    """Resolve a file reference against the sweep file's folder; names stay names."""
    file_part, colon, attr = ref.partition(".py:")
    candidate = Path(file_part + (".py" if colon else ""))
    if candidate.suffix.lower() not in {".py", ".toml", ".yaml", ".yml", ".npz", ".csv"} or candidate.is_absolute():
        return ref
    resolved = str(base / candidate)
    return f"{resolved}:{attr}" if colon else resolved


def stored_sweep(study: str, storage: str | None) -> SweepConfig:
    """The configuration a study was launched with, bound to ``storage``."""
    return SweepConfig.from_dict(get_study_config(study, storage)).override(storage=storage)
