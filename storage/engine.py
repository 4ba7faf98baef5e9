"""SQLAlchemy engines and Optuna storages for SQLite and PostgreSQL, with readable failures.

SQLite gets WAL mode and a busy timeout, so several local workers and a reader can share a file.
PostgreSQL gets a ping before reusing a connection that sat idle (so a worker survives a
connection the server or the network dropped while it trained), and a small pool, so many
workers do not exhaust the server (none at all with ``$GAPSWEEP_PG_POOL=0``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import optuna
import sqlalchemy
import sqlalchemy.pool
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError

from gapsweep import env
from gapsweep.errors import EmptyDatabaseError, StorageError
from gapsweep.storage import optuna_tables
from gapsweep.storage.locks import being_made, schema_lock
from gapsweep.storage.url import MASK, journal_path, mask, parse, passwords

SQLITE_BUSY_TIMEOUT_S = 60


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds; ``$GAPSWEEP_HEARTBEAT_S`` sets the interval.

    A running trial whose last heartbeat is older than the grace period belongs to a dead worker.
    """
    interval = int(env.number("GAPSWEEP_HEARTBEAT_S", 10, minimum=1, whole=True, meaning="seconds between heartbeats"))
    return interval, 3 * interval


#: Idle PostgreSQL connections a process keeps open by default (``$GAPSWEEP_PG_POOL``).
DEFAULT_PG_POOL = 2


def pg_pool_size() -> int:
    """Idle PostgreSQL connections a process keeps between its queries (``$GAPSWEEP_PG_POOL``).

    The default keeps two, so the dozens of statements around a trial reuse them. ``0`` keeps
    none: each query connects and hangs up, so a worker that trains holds no connection at all,
    which lets many workers share a server's connection limit at the cost of one connection
    set-up per query (measured in ``benchmarks/workers.py``).
    """
    return int(env.number("GAPSWEEP_PG_POOL", DEFAULT_PG_POOL, minimum=0, whole=True, meaning="0: no idle connections"))


def engine_kwargs(url: URL) -> dict[str, Any]:
    """Connection settings shared by gapsweep's engines and the Optuna storage."""
    if url.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    pool = pg_pool_size()
    if pool == 0:
        return {"poolclass": sqlalchemy.pool.NullPool}
    # LIFO: the connection used last is reused, so the ones beyond a process's need stay idle
    # (and cheap), and the busy one is rarely idle long enough to need a ping.
    return {"pool_size": pool, "max_overflow": 3, "pool_recycle": 1800, "pool_use_lifo": True}


#: A pooled connection idle longer than this is pinged before it is used again.
IDLE_PING_S = 1.0


def ping_after_idle(engine: Engine) -> Engine:
    """Ping a pooled PostgreSQL connection before reuse only when it sat idle over ``IDLE_PING_S``.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: a round trip before each of the
    dozens of queries around a trial, most of them milliseconds after the last. A connection
    dropped while the worker trained is caught just the same by the first checkout after the
    epoch; one dropped within a second of its last use fails one query, whose trial is queued
    again. A failed ping makes the pool open a fresh connection (``DisconnectionError``).
    """
    if engine.dialect.name != "postgresql" or isinstance(engine.pool, sqlalchemy.pool.NullPool):
        return engine

    def checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return
        try:
            with contextlib.closing(dbapi_connection.cursor()) as cursor:
                cursor.execute("SELECT 1")
            dbapi_connection.rollback()  # end the transaction the ping opened: the connection is handed out idle
        except Exception as exc:  # any driver error: the connection is unusable
            raise DisconnectionError(str(exc)) from exc

    sqlalchemy.event.listen(engine, "checkin", checkin)
    sqlalchemy.event.listen(engine, "checkout", checkout)
    return engine


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL (None for another database or an in-memory one)."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _check_sqlite(path: Path, flag: str) -> None:
    """A SQLite file a sweep can create or write, or one line saying why not."""
    if not path.parent.exists():
        raise StorageError(f"folder {path.parent} does not exist; create it or choose another {flag} path")
    if path.is_dir():
        raise StorageError(f"{path} is a folder, not a database file; point {flag} at a file such as {path / 'gapsweep.db'}")
    # A sweep writes the file, its WAL beside it and a lock file: all need write access.
    if (path.exists() and not os.access(path, os.W_OK)) or not os.access(path.parent, os.W_OK):
        where = path if path.exists() and not os.access(path, os.W_OK) else path.parent
        raise StorageError(f"{where} is read-only; a sweep needs to write there (copy the database elsewhere or fix its permissions)")
    # A mistyped path must not add a sweep's tables to another application's database.
    if path.is_file() and path.stat().st_size:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)) as conn:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError:
            return  # not a SQLite file, or locked while being made: _use_wal names the first
        if tables and not tables & (optuna_tables.TABLE_NAMES | {"alembic_version"}):
            raise StorageError(
                f"{path} holds other tables ({', '.join(sorted(tables)[:5])}) and none of Optuna's: it is another "
                f"application's database; point {flag} at a new file"
            )


def _use_wal(path: Path, flag: str) -> None:
    """WAL lets readers run beside a writer; the mode persists in the file once set. Switched
    under the schema lock: two processes switching a new file at once get "database is locked"."""
    with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as conn:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:  # e.g. "attempt to write a readonly database"
            raise StorageError(f"cannot write {path} ({exc}); check its permissions or choose another {flag} path") from None
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{path} is not a SQLite database ({exc}); point {flag} at another file") from None


def describe_failure(url: URL, exc: BaseException) -> StorageError:
    """One line naming the (masked) URL and the driver's reason, password scrubbed."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for password in passwords(url):
        reason = reason.replace(password, MASK)
    return StorageError(f"cannot use database {mask(url)}: {reason}")


def open_storage(
    url_text: str | None, *, flag: str = "--storage",
    kind: type[optuna_tables.LightHeartbeatStorage] = optuna_tables.LightHeartbeatStorage, **storage_kwargs: Any,
) -> optuna.storages.RDBStorage:
    """An Optuna ``RDBStorage`` (of class ``kind``); creates the schema on first use (Optuna's,
    left intact). ``flag``: the option that named the URL, for messages."""
    url = parse(url_text)
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite(path, flag)
    try:
        with _schema_lock(url):
            if path is not None:
                _use_wal(path, flag)
            storage = kind(
                url.render_as_string(hide_password=False), engine_kwargs=engine_kwargs(url), **storage_kwargs
            )
    except (SQLAlchemyError, RuntimeError, ValueError) as exc:
        raise describe_failure(url, exc) from None
    ping_after_idle(storage.engine)
    return storage


@contextlib.contextmanager
def _schema_lock(url: URL) -> Iterator[None]:
    """``locks.schema_lock`` while Optuna creates (or checks) its tables."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with schema_lock(engine, "alembic_version"):  # Optuna's version row, written last
            yield
    finally:
        engine.dispose()


def connect_existing(url_text: str | None, *, flag: str = "--storage") -> Engine:
    """An engine for reading a database that must already hold Optuna's schema.

    Unlike ``open_storage`` this never creates a file or a table: asking for results from a
    database that does not exist is a mistake to report, not a reason to write one. A journal
    file is read through a SQL snapshot of it (``gapsweep.storage.journal``).
    """
    journal = journal_path(url_text)
    if journal is not None:
        from gapsweep.storage.journal import snapshot  # the journal module builds on this one

        return snapshot(journal, flag)
    url = parse(url_text)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise StorageError(f"no database at {path}; launch a sweep first or pass {flag} URL")
    engine = ping_after_idle(sqlalchemy.create_engine(url, **engine_kwargs(url)))
    try:
        with engine.connect() as conn:
            tables = set(sqlalchemy.inspect(conn).get_table_names())
    except SQLAlchemyError as exc:
        engine.dispose()
        raise describe_failure(url, exc) from None
    if tables & optuna_tables.TABLE_NAMES and "alembic_version" not in tables:  # Optuna writes its version last
        made_now = being_made(engine)
        engine.dispose()
        if made_now:
            raise StorageError(f"{mask(url)} is being created by another process right now; run again in a moment")
        raise StorageError(
            f"{mask(url)} was left half-made (a launch stopped while creating its tables): launch a sweep on it "
            "again to finish it"
        )
    if not {"studies", "trials", "version_info"} <= tables:
        engine.dispose()
        if not tables:
            raise EmptyDatabaseError(
                f"{mask(url)} holds no studies yet (no tables at all); launch a sweep there first or pass {flag} URL"
            )
        raise StorageError(f"{mask(url)} is not a gapsweep/Optuna database (no Optuna tables in it)")
    try:
        with engine.connect() as conn:
            optuna_tables.check_schema(conn)
    except StorageError:
        engine.dispose()
        raise
    return engine


@contextlib.contextmanager
def reading(url_text: str | None) -> Iterator[Engine]:
    """``connect_existing`` as a context that closes the pool when the query is done."""
    engine = connect_existing(url_text)
    try:
        yield engine
    finally:
        engine.dispose()
