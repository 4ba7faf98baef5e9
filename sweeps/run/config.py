"""A sweep's whole configuration, from a TOML/YAML sweep file, flags, or Python.

A sweep file keeps space, data, objective, pruner, budget and storage in version control:

    study = "digits-small"
    space = "mlp"                 # a built-in name, a file, module.py:NAME, or an inline table
    # hypermodel = "models.py:build_model"   # or, instead of space, a KerasTuner hypermodel
    trials = 20
    max_failures = 5              # stop after this many failed trials in a row
    pruner = "median"             # median | hyperband | sha | none
    [data]
    source = "digits"
    train_fraction = 0.3
    [objective]
    gap_penalty = 1.0
    score = "bounded"             # bounded (default) | additive
    kappa = 0.5                   # the bounded penalty moves a score by at most κ·SE

and, above the tables, where trained models and checkpoints live (default: the database):

    artifacts = "file:///shared/gapsweep-artifacts"   # or "s3://bucket/prefix"

Flags given on the command line override the file. Relative paths in a file are read relative
to the file. The file's folder is the project folder of its ``hypermodel`` and of its data
loader (``data = "loaders.py:load"``): the study stores the module's path relative to it, and
workers look for it in their ``--code-dir`` (see ``gapsweep.search_spaces.code_refs``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from gapsweep import checks
from gapsweep.errors import ConfigError, DataError, GapsweepError
from gapsweep.search_spaces import code_refs
from gapsweep.search_spaces.keras_tuner import unimportable
from gapsweep.search_spaces.loader import read_document
from gapsweep.storage import artifact_store, url
from gapsweep.storage.reader import get_study_config
from gapsweep.sweeps.data import in_memory
from gapsweep.sweeps.data import datasets
from gapsweep.sweeps.data.datasets import DataSpec, Splits
from gapsweep.sweeps.trial.objective import ObjectiveSettings
from gapsweep.sweeps.trial.pruning import PRUNERS
from gapsweep.sweeps.trial.runtime import SEED_RANGE

if TYPE_CHECKING:
    import keras_tuner

SAMPLERS = ("tpe", "random")

#: What a study stores beside its settings (to refuse mixing), not read back as a setting.
STORED_ONLY = ("data_fingerprint", "test_fingerprint", "hypermodel_params")


@dataclass(frozen=True)
class SweepConfig:
    """Everything ``launch`` needs. ``storage`` is never stored with the study or printed raw."""

    study: str = "gapsweep"
    space: str | dict[str, Any] = "mlp"
    #: A ``DataSpec``, or what its ``source`` takes (a name, a path, a loader, data in memory).
    data: DataSpec | Any = field(default_factory=DataSpec)
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    pruner: str = "median"
    sampler: str = "tpe"
    trials: int = 20
    timeout: float | None = None
    seed: int = 0
    #: A database URL, or a ``pathlib.Path`` of a SQLite file (kept as its ``sqlite:///`` URL).
    storage: str | None = None
    baseline: dict[str, Any] | None = None
    #: A KerasTuner build function or HyperModel (``path/to/module.py:NAME``, or the object itself)
    #: searched instead of ``space``; ``max_epochs`` is its epoch budget.
    hypermodel: str | Callable[..., Any] | keras_tuner.HyperModel | None = None
    max_epochs: int = 20
    #: The project folder a ``hypermodel`` or data loader path is read from (None: the current folder): a sweep
    #: file's folder, or a worker's ``--code-dir``. Never stored: each machine has its own.
    code_dir: str | None = None
    #: A sweep stops after this many failed trials in a row (failures spend no budget, so a
    #: sweep whose every trial fails would otherwise run for ever).
    max_failures: int = 5
    #: Where trained models and checkpoints keep their bytes: ``database`` (None), a shared folder
    #: (``file:///shared/gapsweep-artifacts``) or ``s3://bucket/prefix``; stored with the study.
    artifacts: str = artifact_store.DATABASE
    #: A new study's first trial trains the linear reference's configuration where the space can
    #: express it (``reference.linear_start``), so the sweep always tries the simplest sound model.
    linear_start: bool = True

    def __post_init__(self) -> None:
        if self.study is not None and not isinstance(self.study, str):  # YAML and TOML read study: 2024 as a number
            raise ConfigError(f"the study's name must be text: write it in quotes, \"{self.study}\"; got {self.study!r}")
        if not self.study or not self.study.strip():
            raise ConfigError(f"the study needs a name: study='NAME' (--study NAME), got {self.study!r}")
        if self.study != self.study.strip():
            raise ConfigError(f"study name {self.study!r} starts or ends with spaces; give it without them")
        if isinstance(self.space, os.PathLike):  # a pathlib.Path names a space file as its text does
            object.__setattr__(self, "space", os.fspath(self.space))
        if not isinstance(self.space, (str, dict)):
            raise ConfigError(
                f"space must be a built-in name, a .toml/.yaml file, 'module.py:NAME' or a dict, got {self.space!r}"
            )
        if self.code_dir is not None:
            object.__setattr__(self, "code_dir", checks.path("code_dir", self.code_dir))
        if not isinstance(self.data, DataSpec):
            object.__setattr__(self, "data", DataSpec(self.data))
        if self.pruner not in PRUNERS:
            raise ConfigError(f"unknown pruner '{self.pruner}'; use one of {', '.join(PRUNERS)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{self.sampler}'; use one of {', '.join(SAMPLERS)}")
        checks.whole("trials", self.trials, 1)
        checks.whole("seed", self.seed, 0)
        if self.seed >= SEED_RANGE:
            raise ConfigError(f"seed must be below 2**32 = {SEED_RANGE}, got {self.seed}")
        if not isinstance(self.linear_start, bool):
            raise ConfigError(f"linear_start must be true or false, got {self.linear_start!r}")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or not self.timeout > 0):
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        object.__setattr__(self, "storage", url.as_text(self.storage))
        if self.storage is not None and not isinstance(self.storage, str):
            raise ConfigError(
                f"storage must be a database URL such as sqlite:///gapsweep.db, or a pathlib.Path of a SQLite file, got {self.storage!r}"
            )
        if self.hypermodel is not None and self.space != SweepConfig.space:
            raise ConfigError("a sweep searches either a space or a hypermodel; give SweepConfig one of space= and hypermodel=")
        if not isinstance(self.objective, ObjectiveSettings):
            raise ConfigError(
                f"objective must be an ObjectiveSettings (e.g. ObjectiveSettings(gap_penalty=2)), got {type(self.objective).__name__}"
            )
        if self.objective.max_gap is not None and self.sampler != "tpe":
            raise ConfigError(f"max_gap needs the tpe sampler (it supports constraints), not sampler {self.sampler!r}")
        if self.baseline is not None and not isinstance(self.baseline, dict):
            raise ConfigError(f"baseline must be a table of parameter values, got {self.baseline!r}")
        reason = unimportable(self.hypermodel) if isinstance(self.hypermodel, str) else None
        if reason is not None:  # a build function only the launching script held
            raise ConfigError(
                f"this study's hypermodel cannot be imported here ({reason}), and a "
                "worker, a refit, an ensemble, verify and rerun must build its models again: define it in a module "
                "and launch a study with hypermodel='module.py:NAME'"
            )
        if isinstance(self.hypermodel, str) and not code_refs.is_ref(self.hypermodel):
            raise _not_a_hypermodel_ref(self.hypermodel)
        checks.whole("max_epochs", self.max_epochs, 1)
        checks.whole("max_failures", self.max_failures, 1)
        if self.artifacts is not None and not isinstance(self.artifacts, str):
            raise ConfigError(f"artifacts must be a URL such as file:///shared/gapsweep-artifacts, got {self.artifacts!r}")
        object.__setattr__(self, "artifacts", artifact_store.canonical(self.artifacts))

    def code(self) -> code_refs.CodeRef | None:
        """The ``hypermodel`` file, found inside the project folder; one outside it is refused
        here, before anything is imported."""
        if not isinstance(self.hypermodel, str):
            return None
        return code_refs.locate(self.hypermodel, self.code_dir)

    def data_code(self) -> code_refs.CodeRef | None:
        """The data loader's file, found inside the project folder, as ``code`` finds the
        hypermodel's; data that only the launching script held is refused here too, before
        anything starts."""
        if in_memory.is_note(self.data.source):
            raise in_memory.unreachable(str(self.data.source))
        if not self.data.loader:
            return None
        return code_refs.locate(str(self.data.source), self.code_dir, what="data loader")

    def to_dict(self) -> dict[str, Any]:
        """The study's stored configuration (no storage URL: it may hold a password; no
        ``code_dir``: each machine has its own)."""
        return {
            "study": self.study,
            "space": self.space if self.hypermodel is None else None,
            # For a hypermodel given as an object, the hypermodel's describe() stores where it lives.
            "hypermodel": self.hypermodel if isinstance(self.hypermodel, str) else None,
            "max_epochs": self.max_epochs,
            "data": self._stored_data(),
            "objective": self.objective.to_dict(),
            "pruner": self.pruner,
            "sampler": self.sampler,
            "trials": self.trials,
            "timeout": self.timeout,
            "seed": self.seed,
            "baseline": self.baseline,
            "max_failures": self.max_failures,
            "artifacts": self.artifacts,
            "linear_start": self.linear_start,
        }

    def _stored_data(self) -> dict[str, Any]:
        """The data as stored: a loader by its path relative to the project folder, the same on every machine."""
        data = self.data.to_dict()
        if self.data.loader:
            data["source"] = self.data_code().stored
        return data

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], base: Path | None = None) -> "SweepConfig":
        """Build from a sweep file's content; unknown keys are errors, not silent typos."""
        known = {f.name for f in fields(cls)} - {"code_dir"}
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
        if not isinstance(values.get("hypermodel"), (str, type(None))):  # a file holds a reference, never an object
            raise _not_a_hypermodel_ref(values["hypermodel"])
        if "space" in values and values.get("hypermodel") is not None:
            raise ConfigError("a sweep searches either a space or a hypermodel; drop one of the two settings")
        if isinstance(values.get("space"), str) and base is not None:
            values["space"] = _relative(values["space"], base)
        loader = isinstance(values.get("data"), DataSpec) and values["data"].loader
        if (values.get("hypermodel") is not None or loader) and base is not None:
            values["code_dir"] = str(base)  # the study stores the module relative to the sweep file
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"invalid sweep setting: {exc}") from None

    def override(self, **changes: Any) -> "SweepConfig":
        """A copy with the given (non-None) settings replaced: flags over the file."""
        return replace(self, **{key: value for key, value in changes.items() if value is not None})


def _not_a_hypermodel_ref(value: Any) -> ConfigError:
    return ConfigError(
        f"hypermodel must be 'path/to/module.py:NAME' (a KerasTuner build function or HyperModel), got {value!r}"
    )


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
    path = Path(checks.path("path", path))
    try:
        document = read_document(path)
        if not document:  # every key has a default, but an empty file is a mistake, not a choice
            raise ConfigError("the sweep file is empty; give at least its study, e.g. study = \"digits\"")
        return SweepConfig.from_dict(document, base=path.parent)
    except GapsweepError as exc:
        message = str(exc)
        raise ConfigError(message if str(path) in message else f"{path}: {message}") from None


def _data_spec(raw: Any, base: Path | None) -> DataSpec:
    if isinstance(raw, str):
        raw = {"source": raw}
    if not isinstance(raw, Mapping):  # the short form is text, so a bare "must be a table" would mislead
        raise ConfigError(f"data must be a data set's name or file, e.g. data = \"wine\", or a [data] table; got {raw!r}")
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


def stored_sweep(study: str, storage: str | None, code_dir: str | None = None) -> SweepConfig:
    """The configuration a study was launched with, bound to ``storage`` and to this machine's
    project folder ``code_dir`` (None: the current folder), where its hypermodel is looked up."""
    return _from_stored(get_study_config(study, storage), storage, code_dir)


def _from_stored(stored: Mapping[str, Any], storage: str | None, code_dir: str | None) -> SweepConfig:
    settings = {key: value for key, value in stored.items() if key not in STORED_ONLY}
    if "data" in settings:
        settings["data"] = stored_data(settings["data"])
    return SweepConfig.from_dict(settings).override(storage=storage, code_dir=code_dir)


def stored_data(data: Any) -> Any:
    """A study's stored data setting; one stored before regression targets were standardized
    trained on them as they are, and is read so (``scale_target = false``)."""
    if isinstance(data, Mapping) and "scale_target" not in data:
        return {**data, "scale_target": False}
    return data


def stored_sweep_data(
    study: str, storage: str | None, code_dir: str | None = None, *, purpose: str
) -> tuple[SweepConfig, Splits]:
    """``stored_sweep`` with its data loaded, refused when the rows are no longer the ones the
    study was launched on (by fingerprint, as a resumed launch checks them): ``purpose`` (e.g.
    "a refit") would otherwise train or judge on other rows without a word."""
    stored = get_study_config(study, storage)
    config = _from_stored(stored, storage, code_dir)
    splits = datasets.load(config.data, config.code_dir)
    for key, now in (("data_fingerprint", splits.fingerprint), ("test_fingerprint", splits.test_fingerprint)):
        was = stored.get(key)
        if was is not None and was != now:
            raise DataError(
                f"the data of study '{study}' changed since it was launched ({key.replace('_', ' ')} {was}, now {now}), "
                f"so {purpose} would use other rows; restore the study's data, or launch a new study on the new data"
            )
    return config, splits
