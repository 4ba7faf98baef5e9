"""What every benchmark needs to run: its flags, the machine's facts, clean processes and databases.

Keras/TensorFlow keep piling up Python objects in a long-lived process and later trials slow down
(stack facts), so each timed sweep runs in a freshly spawned process that imports TensorFlow
before its clock starts.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import multiprocessing
import os
import platform
import subprocess
import tempfile
import time
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sqlalchemy as sa

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs"
PG_URL = os.environ.get("GAPSWEEP_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

#: The space of quick runs: two-layer nets at most, 6 epochs, so a trial takes about a second.
QUICK_SPACE: dict[str, dict[str, Any]] = {
    "l2": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.4},
    "units": {"type": "int", "low": 8, "high": 32, "log": True},
    "n_layers": {"type": "int", "low": 1, "high": 2},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "epochs": {"type": "fixed", "value": 6},
    "batch_size": {"type": "fixed", "value": 64},
}

_VERSIONED = ("optuna", "tensorflow-cpu", "keras", "keras-tuner", "sqlalchemy", "numpy")


@dataclass(frozen=True)
class Options:
    """The flags every benchmark takes."""

    quick: bool
    out: Path


def parse_args(description: str, argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a CI-sized smoke run (well under two minutes)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT,
        help="folder for benchmarks.md and benchmarks/NAME.{json,png} (default: the repo's docs/)",
    )
    args = parser.parse_args(argv)
    return Options(quick=args.quick, out=args.out)


def machine() -> dict[str, Any]:
    """Where the figures came from: cores, CPU model, date, versions and the load at this moment."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in _VERSIONED:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "commit": _commit(),
    }


def finish(facts: dict[str, Any], started: float) -> None:
    """Add the run's length (from ``time.monotonic()`` at ``started``) and the load at its end."""
    facts["run_minutes"] = round((time.monotonic() - started) / 60, 1)
    facts["loadavg_1m_end"] = round(os.getloadavg()[0], 2)


def _commit() -> str:
    """HEAD's short hash, marked ``+changes`` when the code under test has uncommitted edits."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "gapsweep", "sweeps", "storage", "search_spaces")
    return f"{head}+changes" if dirty else head


def in_fresh_process(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a new spawned interpreter; its return value comes back pickled."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def in_fresh_processes(fn: Callable[..., T], calls: list[tuple[Any, ...]], workers: int) -> list[T]:
    """``fn(*call)`` for every call, ``workers`` at a time, each in its own spawned interpreter.

    Only for work whose clock does not matter: parallel processes share the cores.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, max_tasks_per_child=1) as pool:
        return list(pool.map(fn, *zip(*calls)))


def quiet_optuna() -> None:
    """Optuna's per-trial log lines off, as gapsweep's CLI has them; experimental notes too."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)


def prepare_process() -> None:
    """Quiet Optuna, import TensorFlow and fix its threads as gapsweep does, so no clock pays the import."""
    from gapsweep.sweeps.trial.runtime import init_tensorflow

    quiet_optuna()
    init_tensorflow()
    import keras

    keras.backend.clear_session()


def postgres_reason() -> str | None:
    """Why the benchmark PostgreSQL server cannot be used, or None when it can."""
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.SQLAlchemyError as exc:
        return str(exc).strip().splitlines()[0]
    finally:
        engine.dispose()
    return None


def postgres_version() -> str:
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("show server_version")).scalar())
    finally:
        engine.dispose()


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards: an empty database per run."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def sqlite_file() -> Iterator[str]:
    """A URL for a new SQLite file in a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="gapsweep-bench-") as folder:
        yield f"sqlite:///{Path(folder) / 'bench.db'}"
