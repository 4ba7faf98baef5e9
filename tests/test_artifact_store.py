"""Models and checkpoints in an artifact store outside the database (a shared folder, or a bucket
of a local S3-compatible server), on a real SQLite file and real PostgreSQL: the bytes live in the
store, the table keeps the index, export and delete find them, a killed worker's retry resumes
from a checkpoint in the store, and a store that cannot be written stops a launch in one line
before any trial runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy as sa

from gapsweep.api import best_trials, delete_study, get_study_config, list_studies, list_trials, migrate
from gapsweep.cli import main
from gapsweep.errors import ConfigError, StorageError
from gapsweep.storage import artifacts
from gapsweep.storage.artifact_store import canonical, open_store
from gapsweep.storage.backend import SqlBackend
from gapsweep.storage.engine import open_storage
from gapsweep.sweeps.data.datasets import DataSpec, load
from gapsweep.sweeps.run.config import SweepConfig, load_sweep_file
from gapsweep.sweeps.run.launch import launch, prepare
from gapsweep.sweeps.trial.checkpoints import CheckpointStore, TrainingState
from gapsweep.sweeps.trial.objective import ObjectiveSettings
from kill_resume import assert_resumed, kill_at_first_checkpoint, sql_checkpoints
from sweep_files import SWEEP

GAPSWEEP = str(Path(sys.executable).parent / "gapsweep")


def _files(folder: Path, suffix: str = "") -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(suffix))


def _rows(engine: sa.Engine, study: str) -> list[sa.Row]:
    table = artifacts.artifacts_table
    with engine.connect() as conn:
        return conn.execute(
            sa.select(table.c.trial_number, table.c.kind, table.c.location, table.c.size, sa.func.length(table.c.data))
            .where(table.c.study_name == study)
        ).all()


def test_store_urls_are_checked_without_touching_the_store(tmp_path):
    assert canonical(None) == canonical("") == canonical("database") == "database"
    assert canonical(str(tmp_path)) == canonical(f"file://{tmp_path}/") == f"file://{tmp_path}"
    assert canonical("s3://models/gapsweep/") == "s3://models/gapsweep"
    spaced = tmp_path / "my models"  # a folder name with a space is stored as itself, however written
    assert canonical(str(spaced)) == canonical(spaced.as_uri()) == canonical(f"file://{spaced}") == f"file://{spaced}"
    for bad, says in [
        ("file://shared/folder", "absolute folder"),
        ("s3://key:secret@bucket/x", "AWS_ACCESS_KEY_ID"),
        ("s3:///prefix", "names no bucket"),
        ("gs://bucket", "unknown artifact store"),
    ]:
        with pytest.raises(ConfigError, match=says):
            canonical(bad)
    sweep = tmp_path / "s.toml"
    sweep.write_text(f'artifacts = "{tmp_path}"\n' + SWEEP)
    assert load_sweep_file(sweep).artifacts == f"file://{tmp_path}"


def test_a_folder_store_holds_the_bytes_and_the_table_the_index(any_url, tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    store = open_store(f"file://{folder}")
    engine = open_storage(any_url).engine
    artifacts.ensure_schema(engine)
    artifacts.save(engine, "s", 1, artifacts.MODEL, b"one", meta={"score": 1.0}, store=store)
    artifacts.save(engine, "s", 1, artifacts.MODEL, b"uno!", meta={"score": 0.9}, store=store)  # replaces
    artifacts.save(engine, "s", 2, artifacts.CHECKPOINT, b"state", epoch=3, store=store)
    (model,) = [p for p in folder.iterdir() if "-1-model-" in p.name]
    assert model.read_bytes() == b"uno!" and len(_files(folder)) == 2  # the replaced bytes are gone
    rows = {(row.trial_number, row.kind): row for row in _rows(engine, "s")}
    assert rows[(1, "model")].location == model.name and rows[(1, "model")].size == 4
    assert all(row[4] == 0 for row in rows.values())  # no blob bytes in the database
    found = artifacts.load(engine, "s", 1, artifacts.MODEL, store=store)
    assert found is not None and found.data == b"uno!" and found.meta == {"score": 0.9}
    assert artifacts.delete(engine, "s", kind=artifacts.CHECKPOINT, trial_numbers=[2], store=store) == 1
    assert _files(folder) == [model.name]
    model.unlink()  # bytes removed behind gapsweep's back: one line, not a traceback
    with pytest.raises(StorageError, match="has no .*-1-model-.*, which trial 1.s model points at"):
        artifacts.load(engine, "s", 1, artifacts.MODEL, store=store)
    engine.dispose()


def test_a_checkpoint_cut_short_never_becomes_the_latest(sqlite_url, tmp_path):
    """A worker killed while writing leaves bytes that no row points at: the retry resumes from
    the last whole checkpoint, never from the partial file."""
    store = open_store(str(tmp_path))
    storage = open_storage(sqlite_url)
    engine = storage.engine
    artifacts.ensure_schema(engine)
    checkpoints = CheckpointStore(SqlBackend(storage), "s", 0, interval=0.0, store=store)
    state = TrainingState(epoch=2, curves={"val_loss": [0.9, 0.8, 0.7]}, best=0.7, best_epoch=2, wait=0, model=b"weights")
    checkpoints.save(state)
    store.put("s-0-checkpoint", b"\x00half a checkpo")  # the next write, cut off before its row
    resumed = CheckpointStore(SqlBackend(storage), "s", 1, retries_of=[0], store=store).latest()
    assert resumed is not None and resumed.epoch == 2 and resumed.model == b"weights"
    engine.dispose()


def test_an_unwritable_store_stops_the_launch_in_one_line_before_anything_runs(tmp_path, capsys, monkeypatch):
    for name, value in {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)  # an S3 endpoint where nothing listens
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP)
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for store, says in [
        (f"file://{tmp_path / 'not-mounted'}", "is not a folder on this machine; create it, or mount the shared folder"),
        (f"file://{a_file}", "is not a folder on this machine"),
        ("file:///sys", "cannot write to artifact store file:///sys: [Errno 13] Permission denied"),
        ("s3://gapsweep/models", 'cannot write to artifact store s3://gapsweep/models: Could not connect to the endpoint URL: "http://127.0.0.1:9/'),
    ]:
        assert main(["launch", str(sweep), "--storage", url, "--artifacts", store, "--no-progress"]) == 1
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and says in err and "Traceback" not in err, err
    monkeypatch.setitem(sys.modules, "boto3", None)  # a machine without the s3 extra
    assert main(["launch", str(sweep), "--storage", url, "--artifacts", "s3://gapsweep", "--no-progress"]) == 1
    assert capsys.readouterr().err == "gapsweep: error: artifact store s3://gapsweep needs boto3: pip install 'gapsweep[s3]'\n"
    assert not (tmp_path / "sweeps.db").exists() or list_studies(url) == []  # no study, no trial


def test_a_study_keeps_its_store_and_refuses_another_on_resume(sqlite_url, tmp_path, tiny_space):
    config = SweepConfig(study="kept", space=tiny_space, data=DataSpec("wine"), storage=sqlite_url, artifacts=str(tmp_path))
    prepare(config).close()
    assert get_study_config("kept", sqlite_url)["artifacts"] == f"file://{tmp_path}"
    with pytest.raises(ConfigError, match=f"keeps its models and checkpoints in file://{tmp_path}; resume it with --artifacts"):
        prepare(SweepConfig(study="kept", space=tiny_space, data=DataSpec("wine"), storage=sqlite_url))


def _listing(store: str) -> list[str]:
    """The ids a store holds: file names in a folder, keys in a bucket."""
    if store.startswith("file://"):
        return sorted(p.name for p in Path(store[len("file://"):]).iterdir())
    import boto3

    bucket, _, prefix = store[len("s3://"):].partition("/")
    return sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


@pytest.fixture(params=[("sqlite", "folder"), ("postgres", "folder"), ("postgres", "s3")], ids="-".join)
def url_and_store(request, tmp_path) -> tuple[str, str]:
    """A database and an artifact store outside it: a shared folder, or a bucket of a local
    S3-compatible server."""
    backend, kind = request.param
    url = request.getfixturevalue(f"{backend}_url")
    if kind == "s3":
        return url, request.getfixturevalue("s3_store")
    (tmp_path / "shared").mkdir()
    return url, f"file://{tmp_path / 'shared'}"


@pytest.mark.slow
def test_a_sweep_keeps_its_models_in_the_store_and_export_and_delete_find_them(url_and_store, tiny_space, tmp_path):
    url, store = url_and_store
    config = SweepConfig(
        study="kept", space={**tiny_space, "epochs": {"type": "fixed", "value": 2}}, data=DataSpec("digits", train_fraction=0.3),
        trials=3, storage=url, pruner="none", objective=ObjectiveSettings(keep_models=2), artifacts=store,
    )
    launch(config, progress=False)
    engine = open_storage(url).engine
    rows = _rows(engine, "kept")
    assert sorted(row.kind for row in rows) == ["model", "model"]  # the top 2; the checkpoints are cleared
    assert sorted(row.location for row in rows) == _listing(store) and all(row.location.endswith(".keras") for row in rows)
    for row in rows:  # the bytes are in the store, the table only points at them
        assert row[4] == 0 and row.size > 1000
        assert len(artifacts.load(engine, "kept", row.trial_number, artifacts.MODEL).data) == row.size
    out = tmp_path / "best.keras"
    done = subprocess.run(
        [GAPSWEEP, "export", "kept", "--out", str(out), "--storage", url, "--json"], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["trial"] == best_trials("kept", url)[0].number
    import keras

    raw_rows = load(config.data).raw_test[:3]
    assert keras.saving.load_model(out, safe_mode=True).predict(raw_rows, verbose=0).shape == (3, 10)
    np.savez(tmp_path / "new.npz", x=raw_rows)
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", "kept", "--data", str(tmp_path / "new.npz"), "--out", str(predictions), "--storage", url]) == 0
    assert len(predictions.read_text().splitlines()) == 1 + 3  # the stored model, read from the store
    assert delete_study("kept", url) == 2
    assert _listing(store) == [] and _rows(engine, "kept") == []
    engine.dispose()


def _env() -> dict[str, str]:
    """The environment of a gapsweep subprocess: this one's (with the AWS_* settings a test set),
    fast heartbeats, and a checkpoint after every epoch, so a kill mid-trial has one to resume."""
    return {**os.environ, "GAPSWEEP_HEARTBEAT_S": "1", "GAPSWEEP_CHECKPOINT_S": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _worker(url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [GAPSWEEP, "worker", "--study", "crash", "--storage", url, "--no-progress", "--gpu", "none"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
def test_a_worker_killed_mid_trial_resumes_from_its_checkpoint_in_the_store(url_and_store, tiny_space, monkeypatch):
    monkeypatch.setenv("GAPSWEEP_HEARTBEAT_S", "1")
    url, store = url_and_store
    config = SweepConfig(
        study="crash", space={**tiny_space, "epochs": {"type": "fixed", "value": 10}}, data=DataSpec("digits", train_fraction=0.3),
        trials=2, storage=url, pruner="none", objective=ObjectiveSettings(patience=50, keep_models=1), artifacts=store,
    )
    prepare(config).close()
    worker = _worker(url)
    engine = open_storage(url).engine
    killed = kill_at_first_checkpoint(worker, sql_checkpoints(engine, "crash"), timeout_s=240)
    _, err = worker.communicate(timeout=60)
    assert killed is not None, f"no trial reached a checkpoint in time: {err[-2000:]}"
    assert killed.location in _listing(store) and [t.state for t in list_trials("crash", url)] == ["RUNNING"]
    again = _worker(url)
    _, err = again.communicate(timeout=400)
    assert again.returncode == 0, err[-2000:]
    assert_resumed(url, sql_checkpoints(engine, "crash"), "crash", killed, epochs=10)
    (model,) = _rows(engine, "crash")  # what the index still holds: the kept model, no checkpoint
    listing = _listing(store)
    assert model.kind == "model" and model.location in listing
    # Besides it, at most the one checkpoint write the kill cut off before its row was committed:
    # bytes no row points at, so never resumed from (docs/workers.md).
    left = [name for name in listing if name != model.location]
    assert len(left) <= 1 and all(f"crash-{killed.trial_number}-checkpoint-" in name for name in left)
    engine.dispose()


def test_migrate_copies_a_folder_studys_models_into_their_own_files(sqlite_url, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    store = open_store(str(folder))
    source = open_storage(sqlite_url)
    optuna.create_study(study_name="m", storage=source).set_user_attr("gapsweep.config", {"artifacts": store.url})
    artifacts.ensure_schema(source.engine)
    artifacts.save(source.engine, "m", 0, artifacts.MODEL, b"model bytes", meta={"score": 1.0})  # the study's store
    target_url = sqlite_url.replace("sweeps.db", "target.db")
    assert migrate(sqlite_url, target_url)[0]["artifacts"] == 1
    target = open_storage(target_url).engine
    assert len(_files(folder)) == 2  # the copy has bytes of its own
    assert delete_study("m", sqlite_url) == 1 and len(_files(folder)) == 1
    copied = artifacts.load(target, "m", 0, artifacts.MODEL)
    assert copied is not None and copied.data == b"model bytes" and copied.location == _files(folder)[0]
    source.engine.dispose()
    target.dispose()


def test_a_version_2_database_is_read_as_it_is_and_upgraded_on_launch(any_url):
    """Before version 3 every model sat in its row: ``export`` reads such a database untouched,
    and the first launch adds ``location`` and ``size`` (filled in for the rows already there)."""
    engine = open_storage(any_url).engine
    artifacts.ensure_schema(engine)
    artifacts.save(engine, "old", 0, artifacts.MODEL, b"an old model", meta={"score": 1.0})
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE gapsweep_artifacts DROP COLUMN location"))
        conn.execute(sa.text("ALTER TABLE gapsweep_artifacts DROP COLUMN size"))
        conn.execute(sa.update(artifacts.schema_table).values(version=2))
    engine.dispose()  # a fresh pool: no cached idea of the table's columns
    engine = open_storage(any_url).engine
    found = artifacts.load(engine, "old", 0, artifacts.MODEL)
    assert found is not None and found.data == b"an old model" and found.location is None
    artifacts.ensure_schema(engine)
    assert artifacts.schema_version(engine) == artifacts.SCHEMA_VERSION == 4
    ((number, kind, location, size, in_row),) = _rows(engine, "old")
    assert (number, kind, location, size, in_row) == (0, "model", None, len(b"an old model"), len(b"an old model"))
    engine.dispose()
