"""A study-wide lock held only while a worker checks the budget and claims its next trial.

Without it, two workers that both see "one trial left" would both start one and overshoot the
budget. PostgreSQL gets a session advisory lock keyed by the schema and study name; a SQLite file gets an
``flock`` on one lock file beside it, ``<database>.lock`` (SQLite has no row or advisory locks,
and it serializes writers anyway, so the studies of one file share it).

The lock is held for milliseconds; a holder that hangs must not stall every other worker for
ever, so waiting ends after ``$GAPSWEEP_LOCK_TIMEOUT_S`` (default 120 s) with a ``StorageError``
that names the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from gapsweep import env
from gapsweep.errors import StorageError

#: How often a SQLite waiter tries the lock file again.
_POLL_S = 0.02


#: The name of the lock held while a process creates or upgrades the tables.
SCHEMA_LOCK = "gapsweep: creating the database"


def schema_lock(engine: Engine, version_table: str) -> contextlib.AbstractContextManager[object]:
    """Held while tables are created or upgraded, so two first launches on a new database do
    not both run ``CREATE TABLE`` (one would fail on the other's half-made tables or version
    row): PostgreSQL's advisory lock, or the lock file beside a SQLite file (the one its trials
    are claimed under). A SQLite file whose ``version_table`` holds its row is made already, and
    a command on it writes no lock file; nor does one on an in-memory database or in a folder
    this process cannot write to."""
    if engine.dialect.name == "postgresql":
        return StudyLock(engine, SCHEMA_LOCK)
    database = engine.url.database
    if database in (None, "", ":memory:") or not os.access(Path(database).resolve().parent, os.W_OK) or _made(
        Path(database), version_table
    ):
        return contextlib.nullcontext()
    return StudyLock(engine, SCHEMA_LOCK)


def being_made(engine: Engine) -> bool:
    """Whether some process holds the schema lock now: it is creating (or upgrading) the
    database, where a database left half-made by a killed one has nobody holding it. When that
    cannot be told (e.g. a folder this process cannot write to), it counts as being made."""
    lock = StudyLock(engine, SCHEMA_LOCK)
    try:
        free = lock.try_acquire()
    except (OSError, SQLAlchemyError):
        return True
    lock.release()
    return not free


def _made(path: Path, version_table: str) -> bool:
    """Whether the SQLite file at ``path`` holds a row in ``version_table``, read without writing.
    A file that is no SQLite database counts as made: nothing will be created in it, and the
    caller names what it is."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)) as conn:
            return conn.execute(f'SELECT 1 FROM "{version_table}" LIMIT 1').fetchone() is not None
    except sqlite3.OperationalError:  # no such table yet (or locked while being made)
        return False
    except sqlite3.DatabaseError:
        return True


def _try_flock(handle: IO[bytes]) -> bool:
    """Take the exclusive lock on an open lock file if no other holds it; whether it was taken."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lock_timeout_s() -> float:
    """Seconds to wait for the study lock before giving up (``$GAPSWEEP_LOCK_TIMEOUT_S``)."""
    return env.number("GAPSWEEP_LOCK_TIMEOUT_S", 120, minimum=1, meaning="seconds to wait for the study lock")


def _key(study: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock`` derived from the study name."""
    return int.from_bytes(hashlib.sha256(study.encode()).digest()[:8], "big", signed=True)


def _advisory_key(conn: Connection, study: str) -> int:
    """The key of ``study``'s lock in the schema ``conn`` works in. Advisory locks are shared by
    the whole database: without the schema, a study in one schema would wait on the same name in
    another, and a database being made in one schema would look busy from all. The default
    schema keeps the bare name's key, so processes of earlier versions still exclude each other.
    The schema is asked once per pooled connection."""
    schema = conn.info.get("gapsweep_schema")
    if schema is None:
        schema = conn.info["gapsweep_schema"] = conn.execute(sa.text("SELECT current_schema()")).scalar() or "public"
    return _key(study if schema == "public" else f"{schema}:{study}")


def lock_file(engine: Engine) -> Path:
    """The one lock file of a SQLite database."""
    return Path(f"{engine.url.database or ':memory:'}.lock")


class StudyLock:
    """Re-entrant-free mutex across processes and machines; ``release`` may be called twice.

    ``place``: the database, or the lock file itself (a journal storage's, beside its log).
    """

    def __init__(self, place: Engine | Path, study: str) -> None:
        self.engine = place if isinstance(place, Engine) else None
        self.path = place if isinstance(place, Path) else lock_file(place)
        self.study = study
        self._conn: Connection | None = None
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        timeout = lock_timeout_s()
        if self._advisory:
            self._acquire_advisory(timeout)
        else:
            self._acquire_file(timeout)

    def try_acquire(self) -> bool:
        """Take the lock if it is free now, without waiting; whether it was taken."""
        if self._advisory:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if self._try_advisory(conn):
                self._conn = conn
                return True
            conn.close()
            return False
        handle = open(self.path, "a+b")  # noqa: SIM115 - held open until release
        if not _try_flock(handle):
            handle.close()
            return False
        self._file = handle
        return True

    @property
    def _advisory(self) -> bool:
        return self.engine is not None and self.engine.dialect.name == "postgresql"

    def _try_advisory(self, conn: Connection) -> bool:
        return bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": _advisory_key(conn, self.study)}).scalar())

    def _acquire_advisory(self, timeout: float) -> None:
        """One round trip when the lock is free (``pg_try_advisory_lock``, outside a transaction);
        otherwise wait for it, at most ``timeout`` (the session's ``lock_timeout``, reset after)."""
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            if not self._try_advisory(conn):
                # PostgreSQL takes at most 2**31 - 1 ms, and 0 for no limit (an infinite timeout).
                limit = 0 if math.isinf(timeout) else min(int(timeout * 1000), 2**31 - 1)
                conn.execute(sa.text(f"SET lock_timeout = '{limit}ms'"))
                try:
                    conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _advisory_key(conn, self.study)})
                finally:
                    conn.execute(sa.text("RESET lock_timeout"))
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # not a lock timeout
                conn.close()
                raise
            holder = self._advisory_holder(conn)
            conn.close()
            raise StorageError(
                f"study '{self.study}' stayed locked for {timeout:g} s by {holder}: a worker hangs while claiming a trial; "
                "stop that worker (or SELECT pg_terminate_backend(pid)) and launch again, or raise $GAPSWEEP_LOCK_TIMEOUT_S"
            ) from None
        self._conn = conn

    def _advisory_holder(self, conn: Connection) -> str:
        unsigned = _advisory_key(conn, self.study) & 0xFFFFFFFFFFFFFFFF
        row = conn.execute(
            sa.text(
                "SELECT l.pid, a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
                "JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.classid = :high AND l.objid = :low AND l.objsubid = 1"
            ),
            {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF},
        ).first()
        conn.rollback()
        if row is None:
            return "another session (gone by now)"
        client = f" from {row.client_addr}" if row.client_addr else ""
        app = f" ({row.application_name})" if row.application_name else ""
        return f"PostgreSQL backend pid {row.pid}{app}{client}, connected since {row.backend_start:%Y-%m-%d %H:%M:%S}"

    def _acquire_file(self, timeout: float) -> None:
        path = self.path
        handle = open(path, "a+b")  # noqa: SIM115 - held open until release
        deadline = time.monotonic() + timeout
        while not _try_flock(handle):
            if time.monotonic() >= deadline:
                handle.seek(0)
                holder = handle.read().decode(errors="replace").strip() or "an unknown process"
                handle.close()
                raise StorageError(
                    f"study '{self.study}' stayed locked for {timeout:g} s by {holder} (lock file {path}): "
                    "a worker hangs while claiming a trial; stop it and launch again, or raise $GAPSWEEP_LOCK_TIMEOUT_S"
                ) from None
            time.sleep(_POLL_S)
        handle.truncate(0)
        handle.write(f"process {os.getpid()} on {socket.gethostname()} (study '{self.study}')".encode())
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _advisory_key(self._conn, self.study)})
            except SQLAlchemyError:
                # The connection is gone (e.g. terminated by the server), and with its session
                # the server already dropped the lock: nothing is left to release.
                self._conn.invalidate()
            finally:
                self._conn.close()
                self._conn = None
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "StudyLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
