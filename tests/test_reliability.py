"""What a user can trust a sweep with: runaway sweeps stop, studies refuse other data, a hung
lock holder is named instead of waited on for ever, concurrent launches never train the same
parameters twice, and an interrupted launch says so in its exit code."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy as sa

from fake_trials import add_mixed_trials
from kill_resume import assert_resumed, kill_at_first_checkpoint, sql_checkpoints
from gapsweep.api import delete_study, get_study_config, list_studies, list_trials
from gapsweep.cli import main
from gapsweep.errors import ConfigError, StorageError
from gapsweep.storage import artifacts, val_losses
from gapsweep.storage.engine import open_storage
from gapsweep.storage.locks import StudyLock, lock_file
from gapsweep.storage.studies import CONFIG_ATTR
from gapsweep.sweeps.data import datasets
from gapsweep.sweeps.data.datasets import DataSpec
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.run.launch import _pruner, load_hypermodel
from gapsweep.sweeps.trial.objective import ObjectiveSettings
from sweep_files import SWEEP

GAPSWEEP = str(Path(sys.executable).parent / "gapsweep")
ENV = {**os.environ, "GAPSWEEP_HEARTBEAT_S": "1", "GAPSWEEP_CHECKPOINT_S": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}

DIVERGING = """study = "runaway"
trials = 50
max_failures = 3
pruner = "none"
sampler = "random"
[space]
learning_rate = {type = "float", low = 1e5, high = 1e6, log = true}
optimizer = "sgd"
activation = "linear"
epochs = 2
units = 8
[data]
source = "wine"
"""



@pytest.mark.slow
def test_a_sweep_whose_every_trial_diverges_stops_after_max_failures(tmp_path, capsys):
    (tmp_path / "d.toml").write_text(DIVERGING)
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    code = main(["launch", str(tmp_path / "d.toml"), "--storage", url, "--no-progress"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 1
    assert [t.state for t in list_trials("runaway", url)] == ["FAIL"] * 3  # not 50, not for ever
    assert all(line.startswith("gapsweep: trial ") and " failed: loss became non-finite" in line for line in lines[:3]), err
    assert len(lines) == 4 and lines[3].startswith("gapsweep: error: every trial failed (3 of 3)"), err
    assert "lower the learning rate" in lines[3] and str(tmp_path / "sweeps.log") in lines[3]
    assert "Traceback" not in out + err
    assert "Traceback" in (tmp_path / "sweeps.log").read_text()  # Optuna's tracebacks went to the log


@pytest.mark.slow
def test_a_loss_that_explodes_without_turning_nan_fails_the_trial():
    """A regressor whose output starts at 1e9: its loss (~1e18) is finite, and absurd."""
    from gapsweep.search_spaces.builder import build_model
    from gapsweep.search_spaces.hypermodel import FitSettings
    from gapsweep.sweeps.data import datasets
    from gapsweep.sweeps.trial.runtime import fresh_session
    from gapsweep.sweeps.trial.trainer import TrainingDiverged, explosion_limit, train

    splits = datasets.load(DataSpec("diabetes"))
    limit = explosion_limit(splits)
    assert limit == pytest.approx(1e6 * float(np.var(splits.y_train)))
    fresh_session(0)
    model = build_model({"units": 8, "n_layers": 1, "learning_rate": 1e-9}, splits.task)
    kernel, bias = model.get_layer("output").get_weights()
    model.get_layer("output").set_weights([kernel, bias + 1e9])
    with pytest.raises(TrainingDiverged, match="loss exploded at epoch 0"):
        train(model, FitSettings(epochs=2, batch_size=64), splits, scoring=1.0, patience=5, seed=0)


def test_a_classifier_limit_follows_its_classes():
    from gapsweep.sweeps.data import datasets
    from gapsweep.sweeps.trial.trainer import explosion_limit

    digits = datasets.load(DataSpec("digits", train_fraction=0.3))
    assert explosion_limit(digits) == pytest.approx(1e6 * np.log(10))


def test_resuming_with_other_data_is_refused_and_old_studies_are_accepted(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(SWEEP)
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    sweep = str(tmp_path / "s.toml")
    assert main(["launch", sweep, "--storage", url, "--create-only"]) == 0
    fingerprint = get_study_config("s", url)["data_fingerprint"]
    assert main(["launch", sweep, "--storage", url, "--create-only", "--data", "wine"]) == 1
    assert "was started on other data" in capsys.readouterr().err
    assert get_study_config("s", url)["data"]["source"] == "digits"
    # A study stored before gapsweep kept fingerprints is resumed, and gets one.
    study = optuna.load_study(study_name="s", storage=url)
    old = {k: v for k, v in study.user_attrs[CONFIG_ATTR].items() if k not in ("data_fingerprint", "test_fingerprint")}
    study.set_user_attr(CONFIG_ATTR, old)
    assert main(["launch", sweep, "--storage", url, "--create-only"]) == 0
    assert get_study_config("s", url)["data_fingerprint"] == fingerprint


def test_resuming_with_other_test_rows_is_refused(sqlite_url):
    """Kept models carry test metrics: a resume on other test rows would mix two test sets."""
    from gapsweep.sweeps.run.launch import prepare

    x, y = datasets._digits({})
    train, val = (x[:600], y[:600]), (x[600:900], y[600:900])
    space = {"units": {"type": "int", "low": 8, "high": 16}, "epochs": 2}
    config = SweepConfig(study="t", space=space, trials=1, storage=sqlite_url, data=DataSpec((train, val, (x[900:], y[900:]))))
    prepare(config).close()
    again = SweepConfig(study="t", space=space, trials=1, storage=sqlite_url, data=DataSpec((train, val, (x[900:910], y[900:910]))))
    with pytest.raises(ConfigError, match="was started with other test rows"):
        prepare(again)
    prepare(config).close()  # the same rows again: resumed


def test_a_changed_objective_needs_the_explicit_flag(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(SWEEP)
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    sweep = str(tmp_path / "s.toml")
    assert main(["launch", sweep, "--storage", url, "--create-only"]) == 0
    assert main(["launch", sweep, "--storage", url, "--create-only", "--gap-penalty", "3"]) == 1
    assert "gap_penalty 1.0 -> 3.0" in capsys.readouterr().err
    assert get_study_config("s", url)["objective"]["gap_penalty"] == 1.0
    assert main(["launch", sweep, "--storage", url, "--create-only", "--gap-penalty", "3", "--allow-objective-change"]) == 0
    assert get_study_config("s", url)["objective"]["gap_penalty"] == 3.0
    # The stored configuration (with its fingerprint) still starts workers.
    from gapsweep.sweeps.run.config import stored_sweep

    assert stored_sweep("s", url).objective.gap_penalty == 3.0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_hung_lock_holder_is_named_instead_of_waited_on(backend, request, monkeypatch):
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    monkeypatch.setenv("GAPSWEEP_LOCK_TIMEOUT_S", "1")
    storage = open_storage(url)
    holder, waiter = StudyLock(storage.engine, "s"), StudyLock(storage.engine, "s")
    holder.acquire()  # and never lets go, like a hung worker
    start = time.monotonic()
    try:
        with pytest.raises(StorageError, match="stayed locked for 1 s by") as caught:
            waiter.acquire()
    finally:
        holder.release()
    assert time.monotonic() - start < 10
    assert ("PostgreSQL backend pid" if backend == "postgres" else f"process {os.getpid()}") in str(caught.value)
    waiter.acquire()  # free again once the holder lets go
    waiter.release()
    other = StudyLock(storage.engine, "another study")
    other.acquire()
    other.release()
    if backend == "sqlite":  # one lock file per database, not one per study
        assert sorted(p.name for p in lock_file(storage.engine).parent.glob("*.lock")) == [lock_file(storage.engine).name]
    storage.engine.dispose()


def test_a_study_lock_in_one_postgresql_schema_leaves_the_same_name_in_another_free(postgres_url, postgres_server):
    other_schema = f"gs_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{other_schema}"'))
    here = sa.create_engine(postgres_url)
    there = sa.create_engine(f"{postgres_server}?options=-csearch_path%3D{other_schema}")
    public = sa.create_engine(postgres_server)
    name = f"lock-{uuid.uuid4().hex[:8]}"  # no other test's study in the default schema
    try:
        holder = StudyLock(here, name)
        holder.acquire()
        try:
            assert not StudyLock(here, name).try_acquire()  # the same schema: taken
            elsewhere = StudyLock(there, name)
            assert elsewhere.try_acquire()  # another schema's study of the same name: free
            elsewhere.release()
        finally:
            holder.release()
        bare = StudyLock(public, name)
        bare.acquire()  # the default schema keeps the key of the bare name
        try:
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            with public.connect() as conn:
                assert not conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
        finally:
            bare.release()
    finally:
        for engine in (here, there, public):
            engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{other_schema}" CASCADE'))
        admin.dispose()


@pytest.mark.parametrize("timeout", ["inf", "10000000"])
def test_a_lock_timeout_beyond_postgresql_s_limit_waits_instead_of_failing(postgres_url, monkeypatch, timeout):
    import threading

    monkeypatch.setenv("GAPSWEEP_LOCK_TIMEOUT_S", timeout)
    storage = open_storage(postgres_url)
    holder, waiter = StudyLock(storage.engine, "s"), StudyLock(storage.engine, "s")
    holder.acquire()
    threading.Timer(0.5, holder.release).start()
    waiter.acquire()  # waits for the holder, however long the timeout
    waiter.release()
    storage.engine.dispose()


def test_delete_removes_the_study_and_its_stored_models_only(sqlite_url, capsys):
    storage = open_storage(sqlite_url)
    artifacts.ensure_schema(storage.engine)
    for name in ("gone", "kept"):
        add_mixed_trials(optuna.create_study(study_name=name, storage=storage))
        artifacts.save(storage.engine, name, 0, artifacts.MODEL, b"model")
        artifacts.save(storage.engine, name, 1, artifacts.CHECKPOINT, b"state", epoch=2)
        val_losses.save(storage.engine, name, 0, [0.5, 0.25])
    assert main(["delete", "gone", "--yes", "--storage", sqlite_url]) == 0
    assert "deleted study 'gone' and 2 stored model(s)/checkpoint(s)" in capsys.readouterr().out
    assert [s.name for s in list_studies(sqlite_url)] == ["kept"]
    assert artifacts.trial_numbers(storage.engine, "gone", artifacts.MODEL) == []
    assert artifacts.trial_numbers(storage.engine, "gone", artifacts.CHECKPOINT) == []
    assert artifacts.trial_numbers(storage.engine, "kept", artifacts.MODEL) == [0]
    assert val_losses.load(storage.engine, "gone") == {} and val_losses.load(storage.engine, "kept") == {0: [0.5, 0.25]}
    # A new study of the old name starts clean: no checkpoint of the deleted one to resume from.
    optuna.create_study(study_name="gone", storage=storage)
    assert artifacts.load(storage.engine, "gone", 1, artifacts.CHECKPOINT) is None
    assert delete_study("gone", sqlite_url) == 0
    storage.engine.dispose()


def test_infinite_objective_values_read_back_as_infinite(sqlite_url):
    study = optuna.create_study(study_name="inf", storage=sqlite_url)
    study.add_trial(optuna.trial.create_trial(value=float("inf")))
    study.add_trial(optuna.trial.create_trial(value=1.5))
    assert [t.value for t in list_trials("inf", sqlite_url)] == [float("inf"), 1.5]


def test_cross_validation_prunes_by_folds_not_epochs(tiny_space):
    config = SweepConfig(
        space=tiny_space, pruner="hyperband", data=DataSpec("digits"), objective=ObjectiveSettings(cv=3)
    )
    pruner = _pruner(config, load_hypermodel(config, datasets.load(config.data)))
    assert pruner._max_resource == 3  # one step per fold; the space trains 6 epochs


@pytest.mark.slow
def test_two_launches_on_one_study_never_train_the_same_parameters(sqlite_url):
    """Both open the study before either claims a trial (so both start from the same seed), then
    take turns claiming, as two `launch` processes started together do."""
    from gapsweep.sweeps.run.launch import prepare, run_trials

    config = SweepConfig(
        study="twice", sampler="random", pruner="none", trials=6, storage=sqlite_url,
        space={"units": {"type": "int", "low": 8, "high": 64}, "l2": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}, "epochs": 2},
        data=DataSpec("wine"),
    )
    first, second = prepare(config), prepare(config)
    try:
        for _ in range(3):
            assert run_trials(first, max_trials=1, progress=False) == 1
            assert run_trials(second, max_trials=1, progress=False) == 1
    finally:
        first.close()
        second.close()
    trials = list_trials("twice", sqlite_url)
    assert [t.state for t in trials] == ["COMPLETE"] * 6
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6


def _running(url: str, study: str) -> bool:
    """Whether a trial of ``study`` is running with its parameters drawn (so training started)."""
    try:
        return any(t.state == "RUNNING" and t.params for t in list_trials(study, url))
    except Exception:  # the database or study does not exist yet
        return False


@pytest.mark.slow
def test_one_ctrl_c_in_the_python_api_lets_the_trial_finish_then_raises(tmp_path):
    """A notebook's "interrupt kernel" is one SIGINT: as in the CLI, the trial in flight finishes
    and is stored, then ``launch`` raises ``KeyboardInterrupt``."""
    url = f"sqlite:///{tmp_path / 'api.db'}"
    script = (
        "import gapsweep\n"
        "config = gapsweep.SweepConfig(study='api', space={'units': {'type': 'int', 'low': 16, 'high': 32}, "
        "'epochs': {'type': 'fixed', 'value': 200}}, data='wine', trials=20, pruner='none', "
        f"objective=gapsweep.ObjectiveSettings(patience=100000), storage={url!r})\n"
        "try:\n    gapsweep.launch(config, progress=False)\nexcept KeyboardInterrupt:\n    print('interrupted')\n"
    )
    run = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _running(url, "api") and time.monotonic() < deadline:
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=300)
    assert out.strip() == "interrupted" and "finishing the current trial" in err, err[-2000:]
    assert [t.state for t in list_trials("api", url)] == ["COMPLETE"]


@pytest.mark.slow
@pytest.mark.parametrize("signals", [1, 2])
def test_an_interrupted_launch_exits_130_without_a_traceback(tmp_path, signals):
    sweep = tmp_path / "s.toml"
    # Stopped at once, the trial must not be able to finish between the two signals on a busy
    # machine: it trains for far longer than the test waits.
    epochs = 200 if signals == 1 else 20000
    sweep.write_text(
        f'study = "stop"\ntrials = 20\npruner = "none"\n[space]\nunits = {{type = "int", low = 16, high = 32}}\n'
        f'epochs = {epochs}\n[data]\nsource = "wine"\n[objective]\npatience = 100000\n'
    )
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    run = subprocess.Popen([GAPSWEEP, "launch", str(sweep), "--storage", url, "--no-progress"], env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _running(url, "stop") and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(signals):
        run.send_signal(signal.SIGINT)
        time.sleep(0.5)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    states = [t.state for t in list_trials("stop", url)]
    if signals == 1:  # the trial in flight finished
        assert states == ["COMPLETE"]
    else:  # stopped at once: the trial failed, and its parameters wait for the next launch
        assert "SIGINT again: stopping now; the running trial is queued again" in err
        assert states == ["FAIL", "WAITING"]
        failed, queued = optuna.load_study(study_name="stop", storage=url).trials
        assert queued.system_attrs["fixed_params"] == failed.params and queued.user_attrs["requeued_from"] == failed.number
        assert failed.user_attrs["fail_reason"].startswith("interrupted: stopped at once")  # shown by show/trials


@pytest.mark.slow
def test_a_launch_killed_mid_trial_on_sqlite_loses_nothing_when_launched_again(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        'study = "crash"\ntrials = 2\npruner = "none"\n[space]\nunits = {type = "int", low = 8, high = 32}\n'
        'epochs = 12\n[data]\nsource = "digits"\ntrain_fraction = 0.3\n[objective]\npatience = 50\n'
    )
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    argv = [GAPSWEEP, "launch", str(sweep), "--storage", url, "--no-progress"]
    run = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    engine = sa.create_engine(url)
    killed = kill_at_first_checkpoint(run, sql_checkpoints(engine, "crash"), timeout_s=180)
    run.communicate(timeout=60)
    assert killed is not None, "no trial reached a checkpoint in time"
    assert [t.state for t in list_trials("crash", url)] == ["RUNNING"]
    again = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_resumed(url, sql_checkpoints(engine, "crash"), "crash", killed, epochs=12)
    engine.dispose()


def test_two_first_launches_racing_on_a_new_study_create_it_and_queue_its_starts_once(any_url, tiny_space):
    """Two processes (here threads, each with its own connections and lock handles) preparing the
    same new study at once: the database's tables are made once and the linear start is queued once."""
    import threading

    from gapsweep.sweeps.run.launch import prepare

    space = {**tiny_space, "n_layers": {"type": "int", "low": 0, "high": 2}}
    config = SweepConfig(study="race", space=space, data=DataSpec("wine"), trials=4, storage=any_url)
    barrier, errors = threading.Barrier(2), []

    def first_launch() -> None:
        barrier.wait()
        try:
            prepare(config).close()
        except Exception as exc:  # reported below, with the thread's own message
            errors.append(exc)

    threads = [threading.Thread(target=first_launch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    trials = optuna.load_study(study_name="race", storage=any_url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.WAITING]
    assert trials[0].user_attrs.get("linear_start") is True
