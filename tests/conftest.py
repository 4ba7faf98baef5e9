"""Shared fixtures: real SQLite files, the real PostgreSQL server, and a small fast space."""

from __future__ import annotations

import os
import uuid
from typing import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.pop("GAPSWEEP_STORAGE", None)
# `gapsweep launch` trains one trial per core by default; the suite's launches (in-process main()
# calls and subprocesses alike) train one at a time unless a test passes --jobs.
os.environ["GAPSWEEP_JOBS"] = "1"

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("GAPSWEEP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

#: A space small enough that a trial on digits takes about a second.
TINY_SPACE = {
    "l2": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.4},
    "units": {"type": "int", "low": 8, "high": 32, "log": True},
    "n_layers": {"type": "int", "low": 1, "high": 2},
    "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "epochs": {"type": "fixed", "value": 6},
    "batch_size": {"type": "fixed", "value": 64},
}


@pytest.fixture
def tiny_space() -> dict:
    return {name: dict(spec) for name, spec in TINY_SPACE.items()}


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'sweeps.db'}"


def _postgres_available() -> str | None:
    try:
        engine = sa.create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means "not available"
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session", autouse=True)
def tensorflow_as_gapsweep_starts_it() -> None:
    """TensorFlow's thread pools are fixed by the first op a process runs, so the suite's process
    (each one, under ``pytest -n``) starts TensorFlow the way a gapsweep process does before any
    test runs an op of its own: which test comes first must not change what the others record."""
    from gapsweep.sweeps.trial.runtime import init_tensorflow

    init_tensorflow()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    reason = _postgres_available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required under CI but unreachable: {reason}")
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is not reachable ({reason}); set CI=1 to make this a failure")
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, so each test sees an empty database."""
    schema = f"gs_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{postgres_server}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request) -> str:
    """Runs a test once on a SQLite file and once on PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A local S3-compatible server (moto's, in a thread, on loopback): its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the S3 tests need moto's server under CI (pip install -e '.[dev]'): {exc}")
        pytest.skip(f"moto's S3 server is not installed ({exc}); pip install -e '.[dev]'")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_store(s3_server: str, monkeypatch) -> str:
    """``s3://BUCKET/models`` in a fresh bucket of the local server, with the AWS_* settings that
    boto3 (here and in worker subprocesses) reads set to reach it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "gapsweep")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "gapsweep-test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    bucket = f"gapsweep-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/models"
