"""Workers as real processes on a real database: kills, restarts, dropped connections, memory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import optuna
import pytest
import sqlalchemy as sa

from gapsweep.api import list_studies, list_trials, migrate, reap_study
from gapsweep.storage import artifacts
from gapsweep.storage.engine import open_storage
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.data.datasets import DataSpec
from gapsweep.sweeps.run.launch import launch, prepare
from gapsweep.sweeps.trial.objective import ObjectiveSettings

pytestmark = pytest.mark.slow
GAPSWEEP = str(Path(sys.executable).parent / "gapsweep")
# Fast heartbeats, and a checkpoint after every epoch, so a kill mid-trial has one to resume.
ENV = {**os.environ, "GAPSWEEP_HEARTBEAT_S": "1", "GAPSWEEP_CHECKPOINT_S": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(autouse=True)
def fast_heartbeat(monkeypatch):
    monkeypatch.setenv("GAPSWEEP_HEARTBEAT_S", "1")
    monkeypatch.setenv("GAPSWEEP_CHECKPOINT_S", "0")


def _create(url: str, space: dict, trials: int, *, study: str = "shared", epochs: int = 6) -> SweepConfig:
    config = SweepConfig(
        study=study, space={**space, "epochs": {"type": "fixed", "value": epochs}},
        data=DataSpec("digits", train_fraction=0.3), trials=trials, storage=url, pruner="none",
        objective=ObjectiveSettings(patience=50, keep_models=1),
    )
    prepare(config).close()  # the study exists, with its configuration, and no trial yet
    return config


def _worker(url: str, *extra: str, study: str = "shared") -> subprocess.Popen:
    return subprocess.Popen(
        [GAPSWEEP, "worker", "--study", study, "--storage", url, "--no-progress", "--gpu", "none", *extra],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait(processes: list[subprocess.Popen], timeout: float = 400) -> list[str]:
    errors = []
    for process in processes:
        _, err = process.communicate(timeout=timeout)
        errors.append(err)
    return errors


def _states(url: str, study: str = "shared") -> list[str]:
    return [t.state for t in list_trials(study, url)]


def test_a_killed_worker_loses_no_trial_and_its_retry_resumes(postgres_url, tiny_space):
    budget = 5
    _create(postgres_url, tiny_space, budget, epochs=14)
    workers = [_worker(postgres_url) for _ in range(3)]
    engine = open_storage(postgres_url).engine
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline:
        # Kill the worker of a running trial once that trial has checkpointed two epochs.
        for number in artifacts.trial_numbers(engine, "shared", artifacts.CHECKPOINT):
            checkpoint = artifacts.load(engine, "shared", number, artifacts.CHECKPOINT)
            trial = next(t for t in list_trials("shared", postgres_url) if t.number == number)
            if checkpoint is not None and checkpoint.epoch >= 1 and trial.state == "RUNNING":
                victim = (number, int(trial.attrs["worker"].rsplit(":", 1)[1]), checkpoint.epoch)
                os.kill(victim[1], signal.SIGKILL)
                break
        time.sleep(0.2)
    assert victim is not None, "no trial reached a checkpoint in time"
    errors = _wait(workers)
    killed_number, killed_pid, killed_epoch = victim
    trials = list_trials("shared", postgres_url)
    states = [t.state for t in trials]
    assert states.count("COMPLETE") == budget, (states, errors)
    assert "RUNNING" not in states and "WAITING" not in states
    killed = next(t for t in trials if t.number == killed_number)
    assert killed.state == "FAIL"
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
    retry = retries[0]
    assert retry.params == killed.params
    assert retry.user_attrs["resumed_from_epoch"] >= killed_epoch
    assert len(retry.user_attrs["curve.val_loss"]) == retry.user_attrs["epochs_run"] == 14  # curves stay whole
    assert not artifacts.trial_numbers(engine, "shared", artifacts.CHECKPOINT)  # cleaned up
    assert list_studies(postgres_url)[0].counts["RUNNING"] == 0
    engine.dispose()


def test_stopped_workers_then_a_new_launch_reach_the_same_budget(sqlite_url, tiny_space):
    config = _create(sqlite_url, tiny_space, 4, epochs=4)
    worker = _worker(sqlite_url)
    deadline = time.monotonic() + 120
    while "COMPLETE" not in _states(sqlite_url) and time.monotonic() < deadline:
        time.sleep(0.3)
    worker.send_signal(signal.SIGTERM)  # finish the current trial, then exit
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 130, err  # as a stopped launch: the study may still need work
    assert "finishing the current trial" in err and "interrupted; start a worker on study 'shared' again to go on" in err
    after_stop = _states(sqlite_url)
    assert "RUNNING" not in after_stop and "FAIL" not in after_stop and 1 <= len(after_stop) < 4
    launch(config, progress=False)
    assert _states(sqlite_url) == ["COMPLETE"] * 4


def test_two_workers_share_one_sqlite_file(sqlite_url, tiny_space):
    _create(sqlite_url, tiny_space, 6, epochs=3)
    errors = _wait([_worker(sqlite_url), _worker(sqlite_url)])
    assert not any("database is locked" in err for err in errors), errors
    assert _states(sqlite_url) == ["COMPLETE"] * 6


@contextlib.contextmanager
def _droppable(postgres_server: str, tag: str) -> Iterator[tuple[str, Callable[[], int]]]:
    """A URL on a fresh schema whose connections carry an application name, and a function that
    makes the server drop every one of them (returning how many it dropped)."""
    app = f"gapsweep-{tag}-{os.getpid()}"
    schema = f"gs_{tag}_{os.getpid()}"
    admin = sa.create_engine(postgres_server)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE; CREATE SCHEMA "{schema}"'))

    def drop() -> int:
        with admin.begin() as conn:
            return conn.execute(
                sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :app"),
                {"app": app},
            ).scalar()

    try:
        yield f"{postgres_server}?options=-csearch_path%3D{schema}&application_name={app}", drop
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def test_workers_ride_out_dropped_postgres_connections(postgres_server, tiny_space):
    with _droppable(postgres_server, "drop") as (url, drop):
        _create(url, tiny_space, 5, epochs=4)
        workers = [_worker(url), _worker(url)]
        terminated = 0
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and any(w.poll() is None for w in workers):
            if "COMPLETE" in _states(url):
                terminated += drop()
                break
            time.sleep(0.3)
        errors = _wait(workers)
        assert terminated >= 1, "the workers had no open connection to drop"
        for worker, err in zip(workers, errors):
            assert worker.returncode == 0, err[-3000:]
        trials = list_trials("shared", url)
        states = [t.state for t in trials]
        assert states.count("COMPLETE") == 5 and "RUNNING" not in states, (states, errors)
        # Nothing lost: a trial the dropped connection failed was queued again with its parameters.
        study = optuna.load_study(study_name="shared", storage=url)
        for failed in (t for t in study.trials if t.state == optuna.trial.TrialState.FAIL and t.params):
            again = [
                t for t in study.trials
                if t.user_attrs.get("requeued_from") == failed.number or t.system_attrs.get("failed_trial") == failed.number
            ]
            # Every value the failed trial drew is kept; a trial the drop cut off while sampling
            # draws the rest anew.
            assert again and failed.params.items() <= again[0].params.items()


def test_a_connection_dropped_as_a_trial_ends_costs_that_trial_only(postgres_server, tiny_space, monkeypatch):
    """The server drops the worker's connections right after a trial's objective returns, so
    Optuna's own write of the result fails; Optuna then raises an ``AssertionError`` of its own
    over the database error. The sweep goes on, and the trial is retried, not lost."""
    from gapsweep.sweeps.trial.objective import Objective

    dropped: list[int] = []
    call = Objective.__call__
    with _droppable(postgres_server, "end") as (url, drop):

        def drop_after_first(self, trial):
            result = call(self, trial)
            if not dropped:
                dropped.append(drop())
            return result

        monkeypatch.setattr(Objective, "__call__", drop_after_first)
        config = _create(url, tiny_space, 3, epochs=2)
        launch(config, progress=False)
        assert dropped and dropped[0] >= 1, "the sweep had no open connection to drop"
        states = [t.state for t in list_trials("shared", url)]
        assert states.count("COMPLETE") == 3 and "RUNNING" not in states, states


def test_reap_clears_zombies_left_by_the_last_worker(sqlite_url, tiny_space):
    _create(sqlite_url, tiny_space, 3, epochs=30)
    worker = _worker(sqlite_url)
    deadline = time.monotonic() + 120
    while "RUNNING" not in _states(sqlite_url) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)  # a heartbeat or two
    worker.kill()
    worker.communicate(timeout=60)
    # Early stopping may have ended a trial before the kill: the one left running is the zombie.
    before = _states(sqlite_url)
    assert before.count("RUNNING") == 1 and set(before) <= {"COMPLETE", "RUNNING"}, before
    zombie = before.index("RUNNING")
    # Past the grace period (3 heartbeats of silence) the trial is a zombie; on a loaded machine the
    # last heartbeat may land late, so look for a while rather than once.
    deadline = time.monotonic() + 15
    while list_studies(sqlite_url)[0].counts["STALE"] == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert list_studies(sqlite_url)[0].counts["STALE"] == 1
    assert list_studies(sqlite_url)[0].counts["RUNNING"] == 0
    assert reap_study("shared", sqlite_url) == [zombie]
    assert _states(sqlite_url) == [*before[:zombie], "FAIL", "WAITING"]


def test_reap_clears_a_trial_whose_worker_died_before_its_first_heartbeat(any_url, tiny_space):
    _create(any_url, tiny_space, 2)
    optuna.load_study(study_name="shared", storage=any_url).ask()  # RUNNING, and never a heartbeat
    assert list_studies(any_url)[0].counts["RUNNING"] == 1
    time.sleep(3.5)  # past the grace period since the trial started
    assert list_studies(any_url)[0].counts["STALE"] == 1
    assert reap_study("shared", any_url) == [0]
    assert _states(any_url) == ["FAIL", "WAITING"]  # failed and queued again, as any zombie
    assert "its worker sent no heartbeat for over 3 s" in list_trials("shared", any_url)[0].attrs["fail_reason"]


def test_a_worker_keeps_its_memory_flat_by_replacing_itself(sqlite_url, tiny_space):
    _create(sqlite_url, tiny_space, 8, epochs=2)
    worker = _worker(sqlite_url, "--trials-per-process", "2")
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    status = Path(f"/proc/{worker.pid}/status")
    while worker.poll() is None:
        try:
            rss = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS"))
            samples.append((time.monotonic() - start, rss))
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            pass
        time.sleep(0.1)
    _, err = worker.communicate()
    assert worker.returncode == 0, err
    assert _states(sqlite_url) == ["COMPLETE"] * 8
    assert err.count(f"gapsweep worker {worker.pid}: study 'shared', training on CPU") == 4  # one process image per 2 trials
    third = samples[-1][0] / 3
    early = max(rss for t, rss in samples if t <= third)
    late = max(rss for t, rss in samples if t >= 2 * third)
    assert late < 1.25 * early, (early, late)


def test_migrate_moves_a_laptop_study_into_postgres(sqlite_url, postgres_url, tiny_space, tmp_path):
    config = SweepConfig(
        study="laptop", space=tiny_space, data=DataSpec("digits", train_fraction=0.3), trials=2,
        storage=sqlite_url, pruner="none",
    )
    launch(config, progress=False)
    (copied,) = migrate(sqlite_url, postgres_url)
    assert copied == {"study": "laptop", "trials": 2, "artifacts": 2}
    assert [t.value for t in list_trials("laptop", postgres_url)] == [t.value for t in list_trials("laptop", sqlite_url)]
    done = subprocess.run(
        [GAPSWEEP, "export", "laptop", "--out", str(tmp_path / "m.keras"), "--storage", postgres_url],
        capture_output=True, text=True, env=ENV, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # The study carries its configuration: a worker on the shared database continues it.
    launch(config.override(storage=postgres_url, trials=3), progress=False)
    assert len(list_trials("laptop", postgres_url)) == 3
    with pytest.raises(Exception, match="already exists"):
        migrate(sqlite_url, postgres_url)
