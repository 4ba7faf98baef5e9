"""A sweep's whole configuration, from a TOML/YAML sweep file, flags, or Python.

A sweep file keeps space, data, objective, pruner, budget and storage in version control:

    study = "digits-small"
    space = "mlp"                 # a built-in name, a file, module.py:NAME, or an inline table
    trials = 20
    pruner = "median"             # median | hyperband | sha | none
    [data]
    source = "digits"
    train_fraction = 0.3
    [objective]
    gap_penalty = 1.0

Flags given on the command line override the file. Relative paths in a file are read relative
to the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from gapsweep.errors import ConfigError, GapsweepError
from search_spaces.loader import read_document
from sweeps.data import DataSpec
from sweeps.objective import ObjectiveSettings
from sweeps.pruning import PRUNERS

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

    def __post_init__(self) -> None:
        if not self.study or not isinstance(self.study, str):
            raise ConfigError("the study needs a name: --study NAME")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"unknown pruner '{self.pruner}'; use one of {', '.join(PRUNERS)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{self.sampler}'; use one of {', '.join(SAMPLERS)}")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f"trials must be a whole number >= 1, got {self.trials!r}")
        if self.timeout is not None and not (self.timeout > 0):
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        penalty = self.objective.gap_penalty
        if not isinstance(penalty, (int, float)) or not math.isfinite(penalty) or penalty < 0:
            raise ConfigError(f"gap_penalty must be a number >= 0, got {penalty!r}")
        if isinstance(self.objective.patience, bool) or not isinstance(self.objective.patience, int) or self.objective.patience < 1:
            raise ConfigError(f"patience must be a whole number >= 1, got {self.objective.patience!r}")
        if isinstance(self.objective.keep_models, bool) or not isinstance(self.objective.keep_models, int) or self.objective.keep_models < 0:
            raise ConfigError(f"keep_models must be a whole number >= 0, got {self.objective.keep_models!r}")

    def to_dict(self) -> dict[str, Any]:
        """The study's stored configuration (no storage URL: it may hold a password)."""
        return {
            "study": self.study,
            "space": self.space,
            "data": self.data.to_dict(),
            "objective": self.objective.to_dict(),
            "pruner": self.pruner,
            "sampler": self.sampler,
            "trials": self.trials,
            "timeout": self.timeout,
            "seed": self.seed,
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
        if isinstance(values.get("space"), str) and base is not None:
            values["space"] = _relative(values["space"], base)
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"invalid sweep setting: {exc}") from None

    def override(self, **changes: Any) -> "SweepConfig":
        """A copy with the given (non-None) settings replaced: flags over the file."""
        return replace(self, **{key: value for key, value in changes.items() if value is not None})


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
