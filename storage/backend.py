"""Where a study lives while workers run it: Optuna's storage, and gapsweep's records beside it.

A worker needs more than Optuna's storage API offers: a lock around each claim, a study's counts
and ranking without loading every trial, the index of kept models and checkpoints, and each
trial's per-example val losses. ``SqlBackend`` keeps them in SQL beside Optuna's tables (SQLite,
PostgreSQL: fast queries, the default); ``JournalBackend`` keeps them in an Optuna journal file
through Optuna's storage API, for machines that share a folder but no database server
(``gapsweep.storage.journal``). Commands that only read a study go through ``engine.reading``,
which serves a journal from a SQL snapshot of it.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, Protocol, Sequence

import optuna
from sqlalchemy.exc import SQLAlchemyError

from gapsweep.errors import StorageError
from gapsweep.storage import artifacts, queries, trial_keys, val_losses
from gapsweep.storage.artifact_store import CONFIG_KEY as ARTIFACTS_KEY, ArtifactStore, artifact_name, open_store
from gapsweep.storage.engine import describe_failure, heartbeat_settings
from gapsweep.storage.heartbeats import open_crash_safe_storage, quiet_experimental, reap, retry_stale_trials
from gapsweep.storage.journal import ARTIFACT_PREFIX, ARTIFACT_RECORD, VAL_LOSSES_RECORD, open_journal, own_folder
from gapsweep.storage.locks import StudyLock
from gapsweep.storage.studies import CONFIG_ATTR
from gapsweep.storage.url import journal_path

#: The errors of a storage that a worker rides out (a dropped connection, a busy file).
STORAGE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, optuna.exceptions.StorageInternalError)


class Backend(Protocol):
    """What a worker asks of the place its study lives, beyond Optuna's storage API."""

    storage: optuna.storages.BaseStorage

    def lock(self, study: str) -> StudyLock:
        """The study-wide lock a claim holds while it checks the budget and creates its trial."""

    def reap(self, study: optuna.Study) -> None:
        """Fail the trials whose worker stopped sending heartbeats and queue them again."""

    def state_counts(self, study: str) -> dict[str, int]:
        """Trials per state (every ``TrialState`` name, zeros included)."""

    def best_values(self, study: str, k: int) -> list[queries.Standing]:
        """The standings of the ``k`` best complete trials, best first."""

    def trial_numbers(self, study: str, states: Sequence[str]) -> set[int]:
        """The numbers of the trials in ``states``."""

    def save_artifact(
        self, study: str, trial_number: int, kind: str, data: bytes, *, store: ArtifactStore | None = None,
        meta: dict[str, Any] | None = None, epoch: int | None = None,
    ) -> None:
        """Store (or replace) a running trial's model or checkpoint, never half-written; ``store``:
        where the bytes go (None: the store the study was launched with)."""

    def load_artifact(
        self, study: str, trial_number: int, kind: str, *, store: ArtifactStore | None = None
    ) -> artifacts.Artifact | None:
        """One artifact with its bytes, or None."""

    def delete_artifacts(
        self, study: str, *, kind: str, trial_numbers: Sequence[int] | set[int], store: ArtifactStore | None = None,
        in_trial: bool = True,
    ) -> int:
        """Drop the artifacts of ``kind`` of the named trials (never "all but these"); ``in_trial``:
        asked by a running trial."""

    def save_val_losses(self, study: str, trial_number: int, losses: Sequence[float], *, epoch: int | None) -> None:
        """A running trial's per-example val losses at its restored epoch."""

    def delete_study(self, study: str) -> int:
        """Remove ``study`` and everything gapsweep stored for it, the stored bytes first (an
        interrupted delete leaves a study to delete again, never checkpoints a new study of the
        same name would resume from); returns how many models and checkpoints went."""

    def failure(self, exc: BaseException) -> StorageError:
        """One line naming the storage and why it failed."""

    def close(self) -> None:
        """Give the connections or files back."""


class SqlBackend:
    """Everything in one SQL database: Optuna's tables and gapsweep's (``artifacts``, ``val_losses``)."""

    def __init__(self, storage: optuna.storages.RDBStorage) -> None:
        self.storage = storage
        self.engine = storage.engine

    def lock(self, study: str) -> StudyLock:
        return StudyLock(self.engine, study)

    def reap(self, study: optuna.Study) -> None:
        reap(study, self.engine)

    def state_counts(self, study: str) -> dict[str, int]:
        return queries.state_counts(self.engine, study)

    def best_values(self, study: str, k: int) -> list[queries.Standing]:
        return queries.best_values(self.engine, study, k)

    def trial_numbers(self, study: str, states: Sequence[str]) -> set[int]:
        return queries.trial_numbers(self.engine, study, states)

    def save_artifact(
        self, study: str, trial_number: int, kind: str, data: bytes, *, store: ArtifactStore | None = None,
        meta: dict[str, Any] | None = None, epoch: int | None = None,
    ) -> None:
        artifacts.save(self.engine, study, trial_number, kind, data, meta=meta, epoch=epoch, store=store, in_trial=True)

    def load_artifact(
        self, study: str, trial_number: int, kind: str, *, store: ArtifactStore | None = None
    ) -> artifacts.Artifact | None:
        return artifacts.load(self.engine, study, trial_number, kind, store=store)

    def delete_artifacts(
        self, study: str, *, kind: str, trial_numbers: Sequence[int] | set[int], store: ArtifactStore | None = None,
        in_trial: bool = True,
    ) -> int:
        return artifacts.delete(self.engine, study, kind=kind, trial_numbers=trial_numbers, store=store, in_trial=in_trial)

    def save_val_losses(self, study: str, trial_number: int, losses: Sequence[float], *, epoch: int | None) -> None:
        val_losses.save(self.engine, study, trial_number, losses, epoch=epoch, in_trial=True)

    def delete_study(self, study: str) -> int:
        removed = artifacts.delete_all(self.engine, study) if artifacts.schema_version(self.engine) else 0
        optuna.delete_study(study_name=study, storage=self.storage)
        return removed

    def failure(self, exc: BaseException) -> StorageError:
        return describe_failure(self.engine.url, exc)

    def close(self) -> None:
        self.engine.dispose()


class JournalBackend:
    """A worker's records in the journal itself; see the module docstring."""

    def __init__(self, path: Path, *, heartbeat_interval: int, grace_period: int) -> None:
        self.path = path
        with quiet_experimental():
            self.storage = open_journal(
                path, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                failed_trial_callback=retry_stale_trials(),
            )
        #: Where the bytes of a study whose store is ``database`` go: beside the log.
        folder = own_folder(path)
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {folder} beside journal {path}: {exc.strerror}") from None
        self.own_store = open_store(f"file://{folder}")

    def lock(self, study: str) -> StudyLock:
        # Not ``<log>.lock``: Optuna's own lock of the log is a symlink of that name.
        return StudyLock(Path(f"{self.path}.claim-lock"), study)

    def reap(self, study: optuna.Study) -> None:
        with quiet_experimental():
            optuna.storages.fail_stale_trials(study)

    def _trials(self, study: str, states: Sequence[str] | None = None) -> list[optuna.trial.FrozenTrial]:
        study_id = self.storage.get_study_id_from_name(study)
        wanted = None if states is None else tuple(optuna.trial.TrialState[state.upper()] for state in states)
        return self.storage.get_all_trials(study_id, deepcopy=False, states=wanted)

    def state_counts(self, study: str) -> dict[str, int]:
        counts = collections.Counter(trial.state.name for trial in self._trials(study))
        return {state.name: counts[state.name] for state in optuna.trial.TrialState}

    def best_values(self, study: str, k: int) -> list[queries.Standing]:
        standings = sorted(
            queries.Standing(trial.user_attrs.get(trial_keys.FEASIBLE) is False, trial.values[0], trial.number)
            for trial in self._trials(study, ["COMPLETE"]) if trial.values and trial.values[0] is not None
        )
        return standings[:k]

    def trial_numbers(self, study: str, states: Sequence[str]) -> set[int]:
        return {trial.number for trial in self._trials(study, states)}

    def _attrs(self, study: str) -> dict[str, Any]:
        return self.storage.get_study_system_attrs(self.storage.get_study_id_from_name(study))

    def _set(self, study: str, key: str, value: Any) -> None:
        self.storage.set_study_system_attr(self.storage.get_study_id_from_name(study), key, value)

    def _bytes_store(self, study: str, store: ArtifactStore | None) -> ArtifactStore:
        """Where the bytes go: ``store``, or (None) the one ``study`` was launched with; the
        folder beside the log for the ``database`` store."""
        if store is None:
            study_id = self.storage.get_study_id_from_name(study)
            store = open_store((self.storage.get_study_user_attrs(study_id).get(CONFIG_ATTR) or {}).get(ARTIFACTS_KEY))
        return self.own_store if store.in_database else store

    def save_artifact(
        self, study: str, trial_number: int, kind: str, data: bytes, *, store: ArtifactStore | None = None,
        meta: dict[str, Any] | None = None, epoch: int | None = None,
    ) -> None:
        """The bytes first, under an id of their own, then the index entry that points at them,
        then the bytes it replaced: a worker killed between two leaves unreferenced bytes only."""
        store = self._bytes_store(study, store)
        key = ARTIFACT_RECORD.format(kind=kind, number=trial_number)
        replaced = (self._attrs(study).get(key) or {}).get("location")
        location = store.put(artifact_name(study, trial_number, kind), data, artifacts.SUFFIXES.get(kind, ""))
        self._set(study, key, {"location": location, "epoch": epoch, "meta": meta or {}, "size": len(data)})
        if replaced:
            store.remove([replaced])

    def load_artifact(
        self, study: str, trial_number: int, kind: str, *, store: ArtifactStore | None = None
    ) -> artifacts.Artifact | None:
        entry = self._attrs(study).get(ARTIFACT_RECORD.format(kind=kind, number=trial_number))
        if not entry:
            return None
        data = self._bytes_store(study, store).get(entry["location"])
        if data is None:
            return None
        return artifacts.Artifact(study, trial_number, kind, entry["epoch"], entry["meta"], data, entry["location"])

    def delete_artifacts(
        self, study: str, *, kind: str, trial_numbers: Sequence[int] | set[int], store: ArtifactStore | None = None,
        in_trial: bool = True,
    ) -> int:
        attrs = self._attrs(study)
        dropped = []
        for number in sorted(trial_numbers):
            key = ARTIFACT_RECORD.format(kind=kind, number=number)
            if attrs.get(key):
                self._set(study, key, None)
                dropped.append(attrs[key]["location"])
        if dropped:
            self._bytes_store(study, store).remove(dropped)
        return len(dropped)

    def save_val_losses(self, study: str, trial_number: int, losses: Sequence[float], *, epoch: int | None) -> None:
        self._set(study, VAL_LOSSES_RECORD.format(number=trial_number), {"epoch": epoch, "losses": list(losses)})

    def delete_study(self, study: str) -> int:
        locations = [entry["location"] for key, entry in self._attrs(study).items() if key.startswith(ARTIFACT_PREFIX) and entry]
        self._bytes_store(study, None).remove(locations)
        self.storage.delete_study(self.storage.get_study_id_from_name(study))
        return len(locations)

    def failure(self, exc: BaseException) -> StorageError:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StorageError(f"cannot use journal {self.path}: {reason}")

    def close(self) -> None:
        """Nothing stays open between a journal's reads and writes."""


def open_backend(url: str | None, *, create: bool = True) -> Backend:
    """The backend of a storage URL with heartbeats on, its tables (or journal) created on first
    use; ``create=False`` makes none of gapsweep's tables (reaping needs Optuna's alone)."""
    path = journal_path(url)
    if path is not None:
        interval, grace = heartbeat_settings()
        return JournalBackend(path, heartbeat_interval=interval, grace_period=grace)
    backend = SqlBackend(open_crash_safe_storage(url))
    if not create:
        return backend
    try:
        artifacts.ensure_schema(backend.engine)
    except SQLAlchemyError as exc:
        backend.close()
        raise backend.failure(exc) from None
    return backend
