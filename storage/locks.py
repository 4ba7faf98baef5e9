"""A study-wide lock held only while a worker checks the budget and claims its next trial.

Without it, two workers that both see "one trial left" would both start one and overshoot the
budget. PostgreSQL gets a session advisory lock keyed by the study name; a SQLite file gets an
``flock`` on a lock file beside it (SQLite has no row or advisory locks).
"""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError


def _key(study: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock`` derived from the study name."""
    return int.from_bytes(hashlib.sha256(study.encode()).digest()[:8], "big", signed=True)


class StudyLock:
    """Re-entrant-free mutex across processes and machines; ``release`` may be called twice."""

    def __init__(self, engine: Engine, study: str) -> None:
        self.engine = engine
        self.study = study
        self._conn: Connection | None = None
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        if self.engine.dialect.name == "postgresql":
            self._conn = self.engine.connect()
            self._conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _key(self.study)})
            self._conn.commit()
            return
        database = self.engine.url.database or ":memory:"
        path = Path(f"{database}.{hashlib.sha256(self.study.encode()).hexdigest()[:12]}.lock")
        self._file = open(path, "ab")  # noqa: SIM115 - held open until release
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _key(self.study)})
                self._conn.commit()
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


