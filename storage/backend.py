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

from typing import Any, Protocol, Sequence

import optuna
from sqlalchemy.exc import SQLAlchemyError

from gapsweep.errors import StorageError
from gapsweep.storage import artifacts, queries, val_losses
from gapsweep.storage.artifact_store import ArtifactStore
from gapsweep.storage.engine import describe_failure
from gapsweep.storage.heartbeats import open_crash_safe_storage, reap
from gapsweep.storage.locks import StudyLock

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

    def load_artifact(self, study: str, trial_number: int, kind: str, *, store: ArtifactStore | None = None) -> artifacts.Artifact | None:
        """One artifact with its bytes, or None."""

    def delete_artifacts(
        self, study: str, *, kind: str, trial_numbers: Sequence[int] | set[int], store: ArtifactStore | None = None,
        in_trial: bool = True,
    ) -> int:
        """Drop the artifacts of ``kind`` of the named trials (never "all but these"); ``in_trial``:
        asked by a running trial."""

    def save_val_losses(self, study: str, trial_number: int, losses: Sequence[float], *, epoch: int | None) -> None:
        """A running trial's per-example val losses at its restored epoch."""

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

    def load_artifact(self, study: str, trial_number: int, kind: str, *, store: ArtifactStore | None = None) -> artifacts.Artifact | None:
        return artifacts.load(self.engine, study, trial_number, kind, store=store)

    def delete_artifacts(
        self, study: str, *, kind: str, trial_numbers: Sequence[int] | set[int], store: ArtifactStore | None = None,
        in_trial: bool = True,
    ) -> int:
        return artifacts.delete(self.engine, study, kind=kind, trial_numbers=trial_numbers, store=store, in_trial=in_trial)

    def save_val_losses(self, study: str, trial_number: int, losses: Sequence[float], *, epoch: int | None) -> None:
        val_losses.save(self.engine, study, trial_number, losses, epoch=epoch, in_trial=True)

    def failure(self, exc: BaseException) -> StorageError:
        return describe_failure(self.engine.url, exc)

    def close(self) -> None:
        self.engine.dispose()


def open_backend(url: str | None) -> Backend:
    """The backend of a storage URL with heartbeats on, its tables created on first use."""
    backend = SqlBackend(open_crash_safe_storage(url))
    try:
        artifacts.ensure_schema(backend.engine)
    except SQLAlchemyError as exc:
        backend.close()
        raise backend.failure(exc) from None
    return backend
