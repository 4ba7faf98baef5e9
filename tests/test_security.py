"""Security defaults: TLS and password sources for PostgreSQL, masked URLs, and code imported
only from inside the worker's project folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gapsweep.cli import main
from gapsweep.errors import StorageError
from gapsweep.storage.engine import connect_existing, open_storage
from gapsweep.storage.url import mask, parse, resolve


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gapsweep: error: ") and err.count("\n") == 1, err
    return err


def test_passwords_are_masked_in_the_user_part_and_in_the_query():
    text = "postgresql://u:s3cret@h:5432/db?password=pw2&sslmode=require"
    assert mask(text) == "postgresql://u:***@h:5432/db?password=***&sslmode=require"
    assert mask(parse(text)) == "postgresql+psycopg://u:***@h:5432/db?password=***&sslmode=require"
    assert mask(parse("postgresql://u@h/db?sslmode=verify-full&PASSWORD=x&password=y")).count("***") == 2
    # TLS settings are kept, unchanged, on the way to libpq.
    kept = resolve("postgresql://u@h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem")
    assert parse(kept).query == {"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem"}


def test_sslmode_require_against_a_server_without_tls_is_one_masked_line(postgres_server, capsys):
    url = _with_query(postgres_server.replace("postgres@", "postgres:pw-in-user@"), "password=pw-in-query&sslmode=require")
    assert main(["studies", "--storage", url]) == 1
    err = _one_line_error(capsys)
    assert "SSL" in err and "sslmode=require" in err, err  # the driver's reason, and the setting that caused it
    assert "pw-in-user" not in err and "pw-in-query" not in err
    for open_ in (open_storage, connect_existing):
        with pytest.raises(StorageError, match="SSL was required") as raised:
            open_(url)
        assert "pw-in" not in str(raised.value) and "\n" not in str(raised.value)
    # verify-full with a CA file reaches libpq too: it asks the server for TLS before reading the file.
    with pytest.raises(StorageError, match="SSL"):
        connect_existing(_with_query(postgres_server, "sslmode=verify-full&sslrootcert=/no/such/ca.pem"))


def _password_libpq_used(url: str) -> str | None:
    engine = connect_existing(url)
    try:
        with engine.connect() as conn:
            return conn.connection.dbapi_connection.info.password
    finally:
        engine.dispose()


def test_a_url_without_password_takes_it_from_pgpassword_or_a_pgpass_file(postgres_url, tmp_path, monkeypatch):
    open_storage(postgres_url).engine.dispose()  # Optuna's tables, so connect_existing accepts it
    assert parse(postgres_url).password is None
    monkeypatch.setenv("PGPASSWORD", "from-environment")
    assert _password_libpq_used(postgres_url) == "from-environment"
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("127.0.0.1:5432:*:postgres:from-pgpass\n")
    pgpass.chmod(0o600)  # libpq ignores a password file others can read
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    assert _password_libpq_used(postgres_url) == "from-pgpass"
    monkeypatch.setenv("HOME", str(tmp_path))  # the default file, ~/.pgpass
    monkeypatch.delenv("PGPASSFILE")
    pgpass.rename(tmp_path / ".pgpass")
    assert _password_libpq_used(postgres_url) == "from-pgpass"
    assert os.environ.get("PGPASSWORD") is None
