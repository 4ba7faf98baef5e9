"""Optuna's own tables and trial internals: the one place gapsweep uses Optuna's private API.

Six things have no public form fast enough: reading the best k trials of a large study (an
``ORDER BY … LIMIT k`` over Optuna's tables instead of loading every trial), writing a
finished trial's dozen user attributes in one transaction instead of a commit each, reading a
running trial's system attributes from the copy it loaded when it started, recording a
heartbeat in one statement, an epoch's report in one upsert, and looking for stale trials once
a heartbeat interval instead of before every trial. All are written against Optuna 5's RDB
schema ``v3.2.0.a``; this module refuses another Optuna major version at import, and
``check_schema`` refuses a database of another schema, each in one line.
Two have no public form at all: heartbeats on a journal storage (``HeartbeatJournalStorage``)
and through Optuna's gRPC proxy (``HeartbeatGrpcProxy``), on Optuna's ``BaseHeartbeat``; and a
storage proxy's say over each new trial (``AdmittingStorage``, on ``_create_new_trial``).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Iterator, Mapping

import grpc
import optuna
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from gapsweep.errors import BudgetTaken, StorageError
from gapsweep.storage.durability import transaction

#: The Optuna major version and RDB schema the table definitions below were written for.
OPTUNA_MAJOR = 5
SCHEMA_VERSION = "v3.2.0.a"

if int(optuna.__version__.split(".")[0]) != OPTUNA_MAJOR:
    raise ImportError(
        f"gapsweep reads Optuna {OPTUNA_MAJOR}.x's tables, but Optuna {optuna.__version__} is installed: "
        f"pip install 'optuna>={OPTUNA_MAJOR}.0,<{OPTUNA_MAJOR + 1}'"
    )

from optuna.storages._heartbeat import BaseHeartbeat  # noqa: E402
from optuna.storages._rdb import models  # noqa: E402  (after the version check, on purpose)

studies = models.StudyModel.__table__
study_directions = models.StudyDirectionModel.__table__
study_user_attrs = models.StudyUserAttributeModel.__table__
trials = models.TrialModel.__table__
trial_values = models.TrialValueModel.__table__
trial_params = models.TrialParamModel.__table__
trial_user_attrs = models.TrialUserAttributeModel.__table__
trial_heartbeats = models.TrialHeartbeatModel.__table__
trial_intermediate_values = models.TrialIntermediateValueModel.__table__



def stored_value(value: float | None, value_type: Any) -> float:
    """A ``trial_values`` row as the number it stands for: Optuna stores ±inf as NULL plus a
    ``value_type``, so the bare column reads an infinite objective as missing."""
    return float(models.TrialValueModel.stored_repr_to_value(value, value_type))


def stored_intermediate_value(value: float | None, value_type: Any) -> float:
    """A ``trial_intermediate_values`` row as the reported number (NaN and ±inf are NULL plus a type)."""
    return float(models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(value, value_type))


#: Inserts that can replace a row on a repeated key, for the databases gapsweep supports.
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


#: The tables Optuna's storage creates (its schema version's table is made last).
TABLE_NAMES = frozenset(models.BaseModel.metadata.tables)


def check_schema(conn: Connection) -> None:
    """Refuse a database whose Optuna schema is not the one these tables describe."""
    try:
        found = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.SQLAlchemyError:  # Optuna writes this table last when it creates a database
        conn.rollback()
        raise StorageError(
            "the database has Optuna's tables but no schema version (alembic_version): another process may be "
            "creating it right now; run again in a moment"
        ) from None
    if found != SCHEMA_VERSION:
        raise StorageError(
            f"the database's Optuna schema is {found}, gapsweep reads {SCHEMA_VERSION} (Optuna {OPTUNA_MAJOR}.x): "
            "run `optuna storage upgrade --storage URL` or use the Optuna version that wrote it"
        )


def trial_system_attrs(trial: optuna.Trial) -> dict[str, Any]:
    """A running trial's system attributes (where Optuna's retry callback notes the retried trial),
    as the trial loaded them when it started: a retry's are written when it is queued, before any
    worker claims it, so asking the storage again would cost a whole trial load for nothing."""
    return dict(trial._cached_frozen_trial.system_attrs)


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Write many user attributes of a running trial in one statement and one transaction.

    Optuna's ``Trial.set_user_attr`` looks the trial up and commits for each attribute alone; a
    finished trial's curves and score parts are a dozen of them, which made attributes the
    largest part of gapsweep's per-trial storage time. The rows are the ones ``set_user_attr``
    writes (JSON values in Optuna's own table, replaced on a repeated key), after the same
    check that the trial is still running.
    """
    if not attrs:
        return
    storage = _rdb(trial.storage)
    if isinstance(storage, HeartbeatGrpcProxy):  # one request; the proxy writes the rows (``write_user_attrs``)
        storage.set_trial_system_attr(trial._trial_id, USER_ATTRS_ATTR, dict(attrs))
    elif isinstance(storage, optuna.storages.RDBStorage):
        write_user_attrs(storage, trial._trial_id, attrs)
    else:  # a journal: one log line each
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what set_user_attr keeps in step


def write_user_attrs(storage: optuna.storages.RDBStorage, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """The rows ``set_user_attr`` writes for each of ``attrs``, in one transaction, after the same
    check that the trial is still running."""
    with transaction(storage.engine, in_trial=True) as conn:
        state = conn.execute(sa.select(trials.c.state).where(trials.c.trial_id == trial_id)).scalar_one()
        storage.check_trial_is_updatable(trial_id, state)
        _upsert_user_attrs(conn, trial_id, attrs)


def set_finished_trial_user_attrs(study: optuna.Study, trial: optuna.trial.FrozenTrial, attrs: Mapping[str, Any]) -> None:
    """Add user attributes to a trial Optuna has already finished (its API refuses to): why the
    stale-trial reaper failed it, written in the same rows ``set_user_attr`` writes."""
    with _rdb(study._storage).engine.begin() as conn:
        _upsert_user_attrs(conn, trial._trial_id, attrs)


class LightHeartbeatStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeat is one upsert that does not wait for the disk.

    Optuna's own reads the heartbeat row, reads it again for update, asks the server's clock and
    commits synchronously: four round trips and a WAL flush at every trial's start and every
    interval. The row and the server-side clock are the same; a heartbeat lost to a server crash
    only makes its trial look older, which is what a crash means anyway (see ``durability``).
    """

    def record_heartbeat(self, trial_id: int) -> None:
        """One beat; one lost to a dropped connection is skipped, where Optuna's heartbeat thread
        would die of it and leave a live trial to be reaped as stale (the next beat tries again)."""
        insert = _INSERTS[self.engine.dialect.name](trial_heartbeats)
        upsert = insert.values(trial_id=trial_id, heartbeat=sa.func.now()).on_conflict_do_update(
            index_elements=[trial_heartbeats.c.trial_id], set_={"heartbeat": sa.func.now()}
        )
        with contextlib.suppress(sa.exc.SQLAlchemyError), transaction(self.engine, in_trial=True) as conn:
            conn.execute(upsert)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        """An epoch's report in one upsert after the same running check. Optuna's loads the trial
        and the step's row through the ORM first: four times the CPU of this, once an epoch of
        every trial (and, behind a storage proxy, in the one process serving all workers)."""
        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(intermediate_value)
        insert = _INSERTS[self.engine.dialect.name](trial_intermediate_values)
        upsert = insert.values(trial_id=trial_id, step=step, intermediate_value=stored, intermediate_value_type=kind)
        upsert = upsert.on_conflict_do_update(
            index_elements=[trial_intermediate_values.c.trial_id, trial_intermediate_values.c.step],
            set_={"intermediate_value": stored, "intermediate_value_type": kind},
        )
        with self.engine.begin() as conn:  # waits for the disk, as Optuna's commit does
            state = conn.execute(sa.select(trials.c.state).where(trials.c.trial_id == trial_id)).scalar_one_or_none()
            if state is None:
                raise KeyError(f"No trial with trial_id {trial_id} exists.")
            self.check_trial_is_updatable(trial_id, state)
            conn.execute(upsert)

    _reaping = False

    @contextlib.contextmanager
    def reaping(self) -> Iterator[None]:
        """Stale trials are looked for only inside this block (``heartbeats.reap``)."""
        self._reaping = True
        try:
            yield
        finally:
            self._reaping = False

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna looks for stale trials before every trial it runs: a read of every running trial
        with its heartbeat, four round trips. gapsweep's claim reaps once a heartbeat interval
        instead (a trial turns stale only after three), so outside ``reaping`` there is nothing to find."""
        return super()._get_stale_trial_ids(study_id) if self._reaping else []


class AdmittingStorage(LightHeartbeatStorage):
    """An RDB storage that creates a new trial (not a queued one) only inside ``admission``,
    which may refuse it. The hook sits on Optuna's private ``_create_new_trial``: its trial
    cache (``optuna.storages.get_storage``) creates trials through it, not the public method."""

    def admission(self, study_id: int) -> contextlib.AbstractContextManager[None]:
        """Held while a new trial of ``study_id`` is created; raises to refuse it."""
        return contextlib.nullcontext()

    def _create_new_trial(self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None) -> optuna.trial.FrozenTrial:
        if template_trial is not None:  # a queued trial (a retry, a start): admitted already
            return super()._create_new_trial(study_id, template_trial)
        with self.admission(study_id):
            return super()._create_new_trial(study_id)


def reaping(study: optuna.Study) -> contextlib.AbstractContextManager[None]:
    """The block in which ``optuna.storages.fail_stale_trials(study)`` finds the stale trials."""
    storage = _rdb(study._storage)
    return storage.reaping() if isinstance(storage, LightHeartbeatStorage) else contextlib.nullcontext()


def _rdb(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage:
    """The RDB storage under Optuna's per-process cache."""
    return getattr(storage, "_backend", storage)


def _upsert_user_attrs(conn: Connection, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """``attrs`` as JSON rows of Optuna's user-attribute table, replacing those of the same key."""
    insert = _INSERTS[conn.dialect.name](trial_user_attrs)
    upsert = insert.on_conflict_do_update(
        index_elements=[trial_user_attrs.c.trial_id, trial_user_attrs.c.key],
        set_={"value_json": insert.excluded.value_json},
    )
    conn.execute(upsert, [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()])


#: The trial system attribute a journal worker's heartbeat writes (a Unix time).
HEARTBEAT_ATTR = "gapsweep:heartbeat"


class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with heartbeats, which Optuna gives only its RDB storage.

    A heartbeat is a trial system attribute holding the worker's clock (one log line an
    interval); a running trial whose last one, or whose start, is older than ``grace_period``
    seconds is stale. The machines sharing a journal must keep their clocks in step (NTP), as
    they already must for the trials' own timestamps.
    """

    def __init__(
        self, backend: optuna.storages.journal.BaseJournalBackend, *, heartbeat_interval: int, grace_period: int,
        failed_trial_callback: Any,
    ) -> None:
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.failed_trial_callback = failed_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return [
            trial._trial_id for trial in running
            if now - float(trial.system_attrs.get(HEARTBEAT_ATTR, trial.datetime_start.timestamp())) > self.grace_period
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self.failed_trial_callback


#: The trial system attribute that carries many user attributes to a storage proxy in one
#: request; the proxy writes them as user attributes (``write_user_attrs``), never as itself.
USER_ATTRS_ATTR = "gapsweep:user_attrs"

#: What a storage proxy says when it refuses a new trial because the study's budget is taken
#: (``gapsweep.storage.proxy``); the worker's ``HeartbeatGrpcProxy`` raises ``BudgetTaken`` for it.
BUDGET_TAKEN = "gapsweep: the study's budget is taken"


class HeartbeatGrpcProxy(optuna.storages.GrpcStorageProxy, BaseHeartbeat):
    """Optuna's gRPC storage proxy client with heartbeats, which Optuna's proxy protocol lacks.

    A heartbeat travels as a trial system attribute (``HEARTBEAT_ATTR``, the worker's clock);
    the proxy writes it as the database's heartbeat row instead, and the proxy alone looks for
    stale trials, so this side never finds any.
    """

    def __init__(self, *, host: str, port: int, heartbeat_interval: int, failed_trial_callback: Any) -> None:
        super().__init__(host=host, port=port)
        self.heartbeat_interval = heartbeat_interval
        self.failed_trial_callback = failed_trial_callback

    def create_new_trial(self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None) -> int:
        try:
            return super().create_new_trial(study_id, template_trial)
        except KeyError as exc:  # the proxy answers a refusal as "not found", with its reason
            details = getattr(exc.__cause__, "details", lambda: "")()
            if BUDGET_TAKEN in (details or ""):
                raise BudgetTaken(details) from None
            raise

    def record_heartbeat(self, trial_id: int) -> None:
        """One beat; one lost while the proxy restarts is skipped (see ``LightHeartbeatStorage``)."""
        with contextlib.suppress(grpc.RpcError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return []

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self.failed_trial_callback
