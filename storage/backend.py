"""Where a study lives while workers run it: Optuna's storage, and gapsweep's records beside it.

A worker needs more than Optuna's storage API offers: a lock around each claim, a study's counts
and ranking without loading every trial, the index of kept models and checkpoints, and each
trial's per-example val losses. ``SqlBackend`` keeps them in SQL beside Optuna's tables (SQLite,
PostgreSQL: fast queries, the default); ``JournalBackend`` keeps them in an Optuna journal file
through Optuna's storage API, for machines that share a folder but no database server
(``gapsweep.storage.journal``); ``ProxyBackend`` reaches a database through Optuna's gRPC storage
proxy, which does the rest (``gapsweep.storage.proxy``). Commands that only read a study go
through ``engine.reading``, which serves a journal from a SQL snapshot of it.
"""

from __future__ import annotations

import collections
import contextlib
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

import grpc
import optuna
from sqlalchemy.exc import SQLAlchemyError

from gapsweep.errors import StorageError
from gapsweep.storage import artifacts, queries, records, trial_keys, val_losses
from gapsweep.storage.artifact_store import CONFIG_KEY as ARTIFACTS_KEY, ArtifactStore, artifact_name, open_store
from gapsweep.storage.engine import describe_failure, heartbeat_settings
from gapsweep.storage.heartbeats import open_crash_safe_storage, quiet_experimental, reap, retry_stale_trials
from gapsweep.storage.journal import open_journal, own_folder
from gapsweep.storage.locks import StudyLock
from gapsweep.storage.optuna_tables import HeartbeatGrpcProxy
from gapsweep.storage.studies import CONFIG_ATTR
from gapsweep.storage.url import journal_path, proxy_address

#: The errors of a storage that a worker rides out (a dropped connection, a busy file, a proxy
#: that restarts).
STORAGE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, optuna.exceptions.StorageInternalError, grpc.RpcError)

#: Why a study behind a storage proxy cannot keep its models in the database.
NO_BYTES_THROUGH_PROXY = (
    "a worker behind a storage proxy keeps trained models and checkpoints in a store every worker reaches, "
    "not in the database: launch the study with --artifacts file:///shared/folder or s3://bucket/prefix"
)

#: Seconds a worker waits for its storage proxy to answer before it gives up.
PROXY_WAIT_S = 10.0


class Backend(Protocol):
    """What a worker asks of the place its study lives, beyond Optuna's storage API."""

    storage: optuna.storages.BaseStorage
    #: Whether a study launched with the ``database`` store can keep its models' bytes here.
    holds_bytes: bool
    #: Whether claims take turns under ``lock`` (False: a storage proxy admits each new trial
    #: itself, and claims interleave).
    claims_in_turn: bool

    def lock(self, study: str) -> StudyLock | FreeLock:
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

    def recover(self) -> None:
        """Wait after a storage error before the next try."""

    def close(self) -> None:
        """Give the connections or files back."""


class SqlBackend:
    """Everything in one SQL database: Optuna's tables and gapsweep's (``artifacts``, ``val_losses``)."""

    holds_bytes = claims_in_turn = True

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

    def recover(self) -> None:
        """A second: the pool reconnects on its next checkout."""
        time.sleep(1.0)

    def close(self) -> None:
        self.engine.dispose()


class ApiBackend:
    """A worker's records through Optuna's storage API alone (``records``), for storages that are
    not a SQL database at hand: a journal file, a storage proxy. Subclasses give the storage,
    the claim lock, reaping and where a ``database`` store's bytes go."""

    storage: optuna.storages.BaseStorage

    def lock(self, study: str) -> StudyLock | FreeLock:
        raise NotImplementedError

    def reap(self, study: optuna.Study) -> None:
        raise NotImplementedError

    def own_store(self) -> ArtifactStore:
        """Where the bytes of a study whose store is ``database`` go."""
        raise NotImplementedError

    def failure(self, exc: BaseException) -> StorageError:
        raise NotImplementedError

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
        """Where the bytes go: ``store``, or (None) the one ``study`` was launched with; for the
        ``database`` store, ``own_store``."""
        if store is None:
            study_id = self.storage.get_study_id_from_name(study)
            store = open_store((self.storage.get_study_user_attrs(study_id).get(CONFIG_ATTR) or {}).get(ARTIFACTS_KEY))
        return self.own_store() if store.in_database else store

    def save_artifact(
        self, study: str, trial_number: int, kind: str, data: bytes, *, store: ArtifactStore | None = None,
        meta: dict[str, Any] | None = None, epoch: int | None = None,
    ) -> None:
        """The bytes first, under an id of their own, then the index entry that points at them,
        then the bytes it replaced: a worker killed between two leaves unreferenced bytes only."""
        store = self._bytes_store(study, store)
        key = records.ARTIFACT_RECORD.format(kind=kind, number=trial_number)
        replaced = (self._attrs(study).get(key) or {}).get("location")
        location = store.put(artifact_name(study, trial_number, kind), data, artifacts.SUFFIXES.get(kind, ""))
        self._set(study, key, {"location": location, "epoch": epoch, "meta": meta or {}, "size": len(data)})
        if replaced:
            store.remove([replaced])

    def load_artifact(
        self, study: str, trial_number: int, kind: str, *, store: ArtifactStore | None = None
    ) -> artifacts.Artifact | None:
        entry = self._attrs(study).get(records.ARTIFACT_RECORD.format(kind=kind, number=trial_number))
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
            key = records.ARTIFACT_RECORD.format(kind=kind, number=number)
            if attrs.get(key):
                self._set(study, key, None)
                dropped.append(attrs[key]["location"])
        if dropped:
            self._bytes_store(study, store).remove(dropped)
        return len(dropped)

    def save_val_losses(self, study: str, trial_number: int, losses: Sequence[float], *, epoch: int | None) -> None:
        self._set(study, records.VAL_LOSSES_RECORD.format(number=trial_number), {"epoch": epoch, "losses": list(losses)})

    def delete_study(self, study: str) -> int:
        locations = [entry["location"] for key, entry in self._attrs(study).items() if records.artifact_of(key) and entry]
        self._bytes_store(study, None).remove(locations)
        self.storage.delete_study(self.storage.get_study_id_from_name(study))
        return len(locations)

    def recover(self) -> None:
        """A second, then try again."""
        time.sleep(1.0)

    def close(self) -> None:
        """Nothing stays open between one call and the next."""


class JournalBackend(ApiBackend):
    """A worker's records in the journal itself; see ``gapsweep.storage.journal``."""

    holds_bytes = claims_in_turn = True

    def __init__(self, path: Path, *, heartbeat_interval: int, grace_period: int) -> None:
        self.path = path
        with quiet_experimental():
            self.storage = open_journal(
                path, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                failed_trial_callback=retry_stale_trials(),
            )
        folder = own_folder(path)
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {folder} beside journal {path}: {exc.strerror}") from None
        self._own = open_store(f"file://{folder}")

    def own_store(self) -> ArtifactStore:
        """The folder beside the log."""
        return self._own

    def lock(self, study: str) -> StudyLock:
        # Not ``<log>.lock``: Optuna's own lock of the log is a symlink of that name.
        return StudyLock(Path(f"{self.path}.claim-lock"), study)

    def reap(self, study: optuna.Study) -> None:
        with quiet_experimental():
            optuna.storages.fail_stale_trials(study)

    def failure(self, exc: BaseException) -> StorageError:
        return StorageError(f"cannot use journal {self.path}: {_reason(exc)}")


class FreeLock:
    """No lock: a storage proxy admits each new trial against the budget itself."""

    def acquire(self) -> None:
        """Nothing to wait for."""

    def release(self) -> None:
        """Nothing to give back."""

    def __enter__(self) -> "FreeLock":
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to give back."""


class ProxyBackend(ApiBackend):
    """A worker behind ``gapsweep proxy`` (``grpc://host:port``); see ``gapsweep.storage.proxy``.
    The proxy admits new trials against the budget, writes heartbeats and reaps, so this side
    takes no lock and reaps nothing; models travel to a store every worker reaches, never
    through the proxy."""

    holds_bytes = claims_in_turn = False

    def __init__(self, host: str, port: int, *, heartbeat_interval: int) -> None:
        self.address = f"{host}:{port}"
        with quiet_experimental():
            self.storage = HeartbeatGrpcProxy(
                host=host, port=port, heartbeat_interval=heartbeat_interval, failed_trial_callback=None,
            )
        try:
            self.storage.wait_server_ready(timeout=PROXY_WAIT_S)
        except ConnectionError:
            self.storage.close()
            raise StorageError(
                f"no storage proxy answers at grpc://{self.address} within {PROXY_WAIT_S:.0f} s; start one there "
                "(gapsweep proxy --storage postgresql://…) or check the host and port"
            ) from None

    def own_store(self) -> ArtifactStore:
        raise StorageError(NO_BYTES_THROUGH_PROXY)

    def lock(self, study: str) -> FreeLock:
        return FreeLock()

    def reap(self, study: optuna.Study) -> None:
        """The proxy reaps once a heartbeat interval."""

    def failure(self, exc: BaseException) -> StorageError:
        return StorageError(f"cannot use storage proxy grpc://{self.address}: {_reason(exc)}")

    def recover(self) -> None:
        """Until the proxy answers again (a restart), at most ``PROXY_WAIT_S``: a worker's five
        tries in a row would otherwise all fall inside one restart."""
        with contextlib.suppress(ConnectionError):
            self.storage.wait_server_ready(timeout=PROXY_WAIT_S)

    def close(self) -> None:
        self.storage.close()


def _reason(exc: BaseException) -> str:
    """The first line of an error's message (its type for an empty one); a gRPC error's details."""
    details = getattr(exc, "details", None)
    text = str(details() if callable(details) else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_backend(url: str | None, *, create: bool = True) -> Backend:
    """The backend of a storage URL with heartbeats on, its tables (or journal) created on first
    use; ``create=False`` makes none of gapsweep's tables (reaping needs Optuna's alone)."""
    path, address = journal_path(url), proxy_address(url)
    interval, grace = heartbeat_settings()
    if path is not None:
        return JournalBackend(path, heartbeat_interval=interval, grace_period=grace)
    if address is not None:
        return ProxyBackend(*address, heartbeat_interval=interval)
    backend = SqlBackend(open_crash_safe_storage(url))
    if not create:
        return backend
    try:
        artifacts.ensure_schema(backend.engine)
    except SQLAlchemyError as exc:
        backend.close()
        raise backend.failure(exc) from None
    return backend
