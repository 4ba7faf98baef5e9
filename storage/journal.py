"""Studies in an Optuna journal file, for machines that share a folder but no database server.

``journal:///sweeps.log`` (a path relative to the working folder, as ``sqlite:///`` writes one;
``journal:////shared/sweeps.log`` for an absolute one) keeps a study in Optuna's
``JournalFileBackend``: an append-only log that Optuna locks with a symlink, safe on NFS where
SQLite is not. Optuna reads the log as it is: its CLI (``optuna best-trial --study-name NAME
--storage sweeps.log``) and its Python API (``JournalStorage(JournalFileBackend("sweeps.log"))``).

Everything a worker records goes through Optuna's storage API (``backend.JournalBackend``): heartbeats as
trial system attributes (``optuna_tables.HeartbeatJournalStorage``); the index of kept models and
checkpoints and each trial's per-example val losses as study system attributes, whose bytes go to
the study's artifact store (for the default store, ``database``, a folder beside the log:
``sweeps.log.artifacts``); the claim lock is an ``flock`` on ``sweeps.log.claim-lock``. Commands that
read results get a SQL snapshot of the log (``snapshot``), so every query runs as on SQLite.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.engine import Engine

from gapsweep.errors import StorageError
from gapsweep.storage import artifacts, records, val_losses
from gapsweep.storage.artifact_store import CONFIG_KEY, DATABASE, canonical, open_store
from gapsweep.storage.optuna_tables import HEARTBEAT_ATTR, HeartbeatJournalStorage, studies, trial_heartbeats, trials
from gapsweep.storage.studies import CONFIG_ATTR, quiet_optuna
from gapsweep.storage.url import JOURNAL_SCHEME

def own_folder(path: Path) -> Path:
    """The folder beside a journal that holds the bytes of its studies' default store."""
    return Path(f"{path.resolve()}.artifacts")


def open_journal(path: Path, **heartbeats: Any) -> optuna.storages.JournalStorage:
    """The journal at ``path``, created on first use (its folder must exist); ``heartbeats``:
    ``heartbeat_interval``, ``grace_period``, ``failed_trial_callback`` for a worker."""
    if not path.parent.is_dir():
        raise StorageError(f"folder {path.parent} does not exist; create it or choose another {JOURNAL_SCHEME} path")
    if path.is_dir():
        raise StorageError(f"{path} is a folder; a journal storage names a file, e.g. {JOURNAL_SCHEME}{path / 'sweeps.log'}")
    try:
        backend = JournalFileBackend(str(path))
        if heartbeats:
            return HeartbeatJournalStorage(backend, **heartbeats)
        return optuna.storages.JournalStorage(backend)
    except ValueError:  # a line that is not JSON: another kind of file
        raise StorageError(f"{path} is not an Optuna journal file; point --storage at one, or at a new path") from None
    except OSError as exc:
        raise StorageError(f"cannot use journal {path}: {exc.strerror or exc}") from None


#: This process's snapshot of each journal, with the log's size and modification time when it
#: was made: one command reads a study several times (``best``: four), and the log only grows.
_snapshots: dict[Path, tuple[tuple[int, int], Engine]] = {}


def snapshot(path: Path, flag: str = "--storage") -> Engine:
    """A SQLite copy of every study in the journal, with gapsweep's tables rebuilt from its
    records, for the commands that read results: their SQL runs on it unchanged. The copy lives
    in a temporary folder removed with the engine; it is made again only once the log changed."""
    if not path.is_file():
        raise StorageError(f"no journal at {path}; launch a sweep first or pass {flag} URL")
    stat = path.stat()
    state = (stat.st_size, stat.st_mtime_ns)
    made = _snapshots.get(path.resolve())
    if made is not None and made[0] == state:
        return made[1]  # a disposed engine opens a fresh pool on its next use
    engine = _copy(path)
    _snapshots[path.resolve()] = (state, engine)
    return engine


def _copy(path: Path) -> Engine:
    source = open_journal(path)
    folder = tempfile.mkdtemp(prefix="gapsweep-journal-")
    target = optuna.storages.RDBStorage(f"sqlite:///{os.path.join(folder, 'snapshot.db')}")
    engine = target.engine
    weakref.finalize(engine, shutil.rmtree, folder, True)
    artifacts.ensure_schema(engine)
    for study in source.get_all_studies():
        with quiet_optuna():
            optuna.copy_study(from_study_name=study.study_name, from_storage=source, to_storage=target)
        _index(engine, study.study_name, source.get_study_system_attrs(study._study_id), study.user_attrs, path)
        running = source.get_all_trials(study._study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        beats = {t.number: t.system_attrs[HEARTBEAT_ATTR] for t in running if HEARTBEAT_ATTR in t.system_attrs}
        _heartbeats(engine, study.study_name, beats)
    return engine


def _heartbeats(engine: Engine, study: str, beats: dict[int, float]) -> None:
    """The running trials' last heartbeats, in the table where a database keeps them (UTC, as
    its server clock writes them), so ``studies`` tells live trials from stale ones."""
    if not beats:
        return
    with engine.begin() as conn:
        ids = dict(conn.execute(
            sa.select(trials.c.number, trials.c.trial_id).join(studies, studies.c.study_id == trials.c.study_id)
            .where(studies.c.study_name == study, trials.c.number.in_(beats))
        ).all())
        conn.execute(sa.insert(trial_heartbeats), [
            {"trial_id": ids[number], "heartbeat": datetime.fromtimestamp(beat, timezone.utc).replace(tzinfo=None)}
            for number, beat in beats.items()
        ])


def _index(engine: Engine, study: str, attrs: dict[str, Any], user_attrs: dict[str, Any], path: Path) -> None:
    """gapsweep's rows of one study in the snapshot: artifacts where the study's store has them
    (a default store's bytes are read into the rows, as a database keeps them), val losses."""
    own = canonical((user_attrs.get(CONFIG_ATTR) or {}).get(CONFIG_KEY)) == DATABASE
    store = open_store(f"file://{own_folder(path)}") if own else None
    rows = []
    for key, entry in attrs.items():
        named = records.artifact_of(key)
        if not entry or named is None:
            continue
        kind, number = named
        data = store.get(entry["location"]) if store is not None else None
        if store is not None and data is None:
            continue  # removed meanwhile
        rows.append(artifacts.record_row(study, number, kind, entry, data=data))
    artifacts.index_rows(engine, rows)
    for key, entry in attrs.items():
        number = records.val_losses_of(key)
        if entry and number is not None:
            val_losses.save(engine, study, number, entry["losses"], epoch=entry["epoch"])
