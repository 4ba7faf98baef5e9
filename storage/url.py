"""Storage URLs: the SQLite default, driver normalization, and masking of passwords.

Any URL that reaches a message, a log or ``--json`` goes through ``mask`` first. A password may
sit in the user part (``user:pw@host``) or in the query (``?password=pw``, a libpq keyword that
SQLAlchemy passes to psycopg); both are masked. Other query parameters (``sslmode``,
``sslrootcert``, ``options``...) reach libpq unchanged, and a URL without a password lets libpq
take it from ``$PGPASSWORD`` or ``~/.pgpass``, so none needs to appear on a command line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from gapsweep.errors import StorageError

DEFAULT_URL = "sqlite:///gapsweep.db"
#: An Optuna journal file (``gapsweep.storage.journal``): ``journal:///sweeps.log``.
JOURNAL_SCHEME = "journal:///"
#: Optuna's gRPC storage proxy in front of a database (``gapsweep.storage.proxy``): ``grpc://host:13000``.
PROXY_SCHEME = "grpc://"
#: ``user:password@`` after a scheme, or at the start of a URL written without one (``bob:pw@host``),
#: up to the last ``@`` before the path (a password may hold an unencoded ``@``); not
#: ``scheme://…@`` (a path with an ``@`` in it).
_USERINFO = re.compile(r"((?:^|://)[^:/@\s]*:)(?!//)[^/\s]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#\s]*", re.IGNORECASE)
MASK = "***"
_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")
#: Other names of the same PostgreSQL database: the short form (Heroku, libpq) that SQLAlchemy
#: dropped, and psycopg 2's, which Optuna's documentation writes; gapsweep reaches it with psycopg 3.
_POSTGRES_ALIASES = ("postgres", "postgresql+psycopg2")


def as_text(url: str | os.PathLike[str] | None) -> str | None:
    """``url`` as URL text: a ``pathlib.Path`` names a SQLite file, as ``sqlite:///`` and its path do."""
    return f"sqlite:///{os.fspath(url)}" if isinstance(url, os.PathLike) else url


def parse(url: str | os.PathLike[str] | None) -> URL:
    """The storage URL to use, with PostgreSQL bound to psycopg 3 (the driver gapsweep ships).

    Without ``url``: ``$GAPSWEEP_STORAGE``, then the SQLite file ``gapsweep.db`` in the current folder.
    """
    url = as_text(url)
    if url is not None and not isinstance(url, str):
        raise StorageError(
            "storage must be a database URL such as sqlite:///gapsweep.db, or a pathlib.Path of a SQLite file, "
            f"got {type(url).__name__} {url!r}"
        )
    if url is not None and not url.strip():
        raise StorageError("storage (--storage) is empty; give a database URL such as sqlite:///gapsweep.db, or leave it out")
    text = chosen(url)
    if text.startswith(JOURNAL_SCHEME):
        raise StorageError(
            f"'{mask_text(text)}' is a journal file: launch, worker and the commands that read results take it; "
            "for this one, copy the study into a database first (gapsweep migrate --from JOURNAL --to sqlite:///x.db)"
        )
    if text.startswith(PROXY_SCHEME):
        raise StorageError(
            f"'{mask_text(text)}' is a storage proxy: launch and worker run trials through it; "
            "read results from the database it serves (--storage postgresql://user@host/dbname)"
        )
    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number, a broken [IPv6] host
        raise StorageError(
            f"'{mask_text(text)}' is not a database URL; use sqlite:///path.db or "
            "postgresql://user@host:5432/dbname (the password in PGPASSWORD or ~/.pgpass)"
        ) from None
    if "@" in (parsed.host or ""):
        raise StorageError(
            f"'{mask_text(text)}': the user or password holds an '@'; write it as %40 (postgresql://user:p%40ss@host/db), "
            "or keep the password out of the URL (PGPASSWORD or ~/.pgpass)"
        )
    if parsed.drivername in _POSTGRES_ALIASES:
        parsed = parsed.set(drivername="postgresql")
    if parsed.drivername not in _SCHEMES:
        raise StorageError(
            f"unsupported database driver '{parsed.drivername}' in {mask(parsed)}; "
            "use sqlite:///path.db or postgresql://user@host/dbname"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite" and parsed.database in (None, "", ":memory:"):
        # An in-memory database is gone when the command ends, and each connection (the heartbeat
        # thread's, a worker's) would see a different, empty one.
        raise StorageError(
            f"{mask_text(text)} names no file (SQLite keeps such a database in memory, lost when the command ends); "
            "name a file: sqlite:///gapsweep.db"
        )
    return parsed


def journal_path(url: str | os.PathLike[str] | None) -> Path | None:
    """The log file a ``journal:///`` URL names (None for a database URL); see ``gapsweep.storage.journal``."""
    text = chosen(as_text(url))
    if not isinstance(text, str) or not text.startswith(JOURNAL_SCHEME):
        return None  # not a journal (``parse`` names a value that is no URL at all)
    path = text[len(JOURNAL_SCHEME):]
    if not path or path.endswith("/"):
        raise StorageError(f"'{text}' names no file; write journal:///sweeps.log (or journal:////shared/sweeps.log)")
    return Path(path)


def proxy_address(url: str | os.PathLike[str] | None) -> tuple[str, int] | None:
    """The host and port a ``grpc://`` URL names (None for another URL); see ``gapsweep.storage.proxy``."""
    text = chosen(as_text(url))
    if not isinstance(text, str) or not text.startswith(PROXY_SCHEME):
        return None
    host, _, port = text[len(PROXY_SCHEME):].rstrip("/").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StorageError(f"'{mask_text(text)}' names no proxy; write grpc://host:port (gapsweep proxy listens on 13000)")
    return host, int(port)


def chosen(url: str | None) -> str:
    """The storage URL text in force: ``url``, else ``$GAPSWEEP_STORAGE``, else the SQLite default."""
    return url or os.environ.get("GAPSWEEP_STORAGE") or DEFAULT_URL


def resolve(url: str | None) -> str:
    """``url`` (or the default) as a string SQLAlchemy and Optuna accept, password intact."""
    return parse(url).render_as_string(hide_password=False)


def mask(url: URL | str) -> str:
    """The URL with every password (user part or ``password=`` query) replaced by ``***``."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=True)
    return mask_text(text)


def mask_text(text: str) -> str:
    """Mask the passwords in any URL-like text, even one SQLAlchemy cannot parse."""
    return _QUERY_PASSWORD.sub(rf"\1{MASK}", _USERINFO.sub(rf"\1{MASK}@", text))


def passwords(url: URL) -> list[str]:
    """The passwords ``url`` carries (user part and ``password=`` query), to scrub from messages."""
    query = url.query.get("password")
    found = [url.password, *((query,) if isinstance(query, str) else (query or ()))]
    return [str(value) for value in found if value]
