"""Workers behind `gapsweep proxy` (Optuna's gRPC storage proxy over PostgreSQL): the budget is
exact however claims race, the proxy writes what a SQL worker would (heartbeat rows, user
attributes, val losses, the artifact index), and a killed worker's trial resumes from its
checkpoint in a shared folder."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import optuna
import pytest
import sqlalchemy as sa

from kill_resume import assert_resumed, backend_checkpoints, kill_at_first_checkpoint
from gapsweep.cli import main
from gapsweep.errors import BudgetTaken, StorageError
from gapsweep.storage import artifacts, val_losses
from gapsweep.storage.backend import ProxyBackend, open_backend
from gapsweep.storage.heartbeats import open_crash_safe_storage, quiet_experimental
from gapsweep.storage.optuna_tables import BUDGET_TAKEN, trial_heartbeats
from gapsweep.storage.proxy import ProxiedStorage
from gapsweep.storage.studies import CONFIG_ATTR
from gapsweep.sweeps.data.datasets import DataSpec
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.run.launch import _resample_if_shared, prepare, run_trials
from gapsweep.sweeps.trial.objective import ObjectiveSettings

pytestmark = pytest.mark.postgres

GAPSWEEP = str(Path(sys.executable).parent / "gapsweep")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "GAPSWEEP_HEARTBEAT_S": "1", "GAPSWEEP_CHECKPOINT_S": "0"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_proxy(url: str, port: int) -> subprocess.Popen:
    """`gapsweep proxy` in front of ``url`` at ``port`` (heartbeats every second), once it answers."""
    server = subprocess.Popen(
        [GAPSWEEP, "proxy", "--storage", url, "--host", "127.0.0.1", "--port", str(port)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    with quiet_experimental():
        client = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port)
    try:
        client.wait_server_ready(timeout=60)
    except Exception:
        server.kill()
        pytest.fail(f"the proxy did not start: {server.communicate()[1][-2000:]}")
    finally:
        client.close()
    return server


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[str]:
    """`gapsweep proxy` in front of a fresh schema: its grpc:// URL."""
    port = _free_port()
    server = _start_proxy(postgres_url, port)
    yield f"grpc://127.0.0.1:{port}"
    server.terminate()
    assert server.wait(timeout=30) != 0 and "Traceback" not in server.communicate()[1]


def _config(url: str, space: dict, shared: Path, *, trials: int, epochs: int, keep: int = 1) -> SweepConfig:
    return SweepConfig(
        study="p", space={**space, "epochs": {"type": "fixed", "value": epochs}}, data=DataSpec("digits", train_fraction=0.3),
        trials=trials, storage=url, pruner="none", objective=ObjectiveSettings(patience=50, keep_models=keep),
        artifacts=str(shared),
    )


def test_the_proxy_admits_new_trials_up_to_the_budget_however_many_claim_at_once(postgres_url):
    storage = open_crash_safe_storage(postgres_url, kind=ProxiedStorage)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "p")
    storage.set_study_user_attr(study_id, CONFIG_ATTR, {"trials": 5})
    served = optuna.storages.get_storage(storage)  # as the proxy serves it: through Optuna's trial cache
    start, created, refused = threading.Barrier(12), [], []

    def claim() -> None:
        start.wait()
        try:
            created.append(served.create_new_trial(study_id))
        except KeyError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=claim) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == 5 and len(refused) == 7 and all(BUDGET_TAKEN in reason for reason in refused)
    # A queued trial (a retry, an enqueued start) is run whatever the budget.
    queued = optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING)
    assert served.create_new_trial(study_id, queued) not in created
    storage.engine.dispose()


@pytest.mark.slow
def test_two_workers_behind_the_proxy_spend_the_budget_and_leave_what_a_database_worker_leaves(
    proxy, postgres_url, tiny_space, tmp_path, capsys
):
    shared = tmp_path / "shared"
    shared.mkdir()
    prepare(_config(postgres_url, tiny_space, shared, trials=5, epochs=3)).close()
    argv = [GAPSWEEP, "worker", "--study", "p", "--storage", proxy, "--no-progress", "--gpu", "none"]
    workers = [subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [worker.communicate(timeout=400)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], errors

    trials = optuna.load_study(study_name="p", storage=postgres_url).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both workers trained"
    assert all("score" in t.user_attrs and "curve.val_loss" in t.user_attrs for t in trials)  # sent in one request
    assert not any(key.startswith("gapsweep:") for t in trials for key in t.system_attrs)  # written as rows instead
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        beats = conn.execute(sa.select(sa.func.count()).select_from(trial_heartbeats)).scalar()
    assert beats == 5  # each trial's heartbeat as the database's row
    assert set(val_losses.load(engine, "p")) == {t.number for t in trials}
    (kept,) = artifacts.trial_numbers(engine, "p", artifacts.MODEL)  # keep_models = 1, indexed for readers
    assert artifacts.load(engine, "p", kept, artifacts.MODEL).data[:2] == b"PK"
    assert [path.suffix for path in shared.iterdir()] == [".keras"]
    engine.dispose()

    # The database's own readers see the study as any other; the budget is spent for every claim.
    assert main(["best", "--study", "p", "--storage", postgres_url]) == 0
    assert "paired pick" in capsys.readouterr().out
    backend = open_backend(proxy)
    with pytest.raises(BudgetTaken):
        backend.storage.create_new_trial(backend.storage.get_study_id_from_name("p"))
    backend.close()


def test_a_worker_behind_the_proxy_counts_the_study_only_before_its_first_claim_and_after_a_refusal(
    proxy, postgres_url, tiny_space, tmp_path
):
    # Each count reads every running trial back through the proxy; the proxy admits claims itself.
    shared = tmp_path / "shared"
    shared.mkdir()
    config = _config(postgres_url, tiny_space, shared, trials=3, epochs=1, keep=0)
    prepare(config).close()
    sweep = prepare(config.override(storage=proxy))
    counted = []
    state_counts = sweep.backend.state_counts
    sweep.backend.state_counts = lambda study: counted.append(study) or state_counts(study)
    try:
        assert run_trials(sweep, progress=False, log_file=tmp_path / "log") == 3
    finally:
        sweep.close()
    assert len(counted) == 2  # the first claim's count, and the count after the budget refused the fourth
    trials = optuna.load_study(study_name="p", storage=postgres_url).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3


@pytest.mark.slow
def test_a_worker_killed_mid_trial_behind_the_proxy_resumes_from_its_checkpoint(proxy, postgres_url, tiny_space, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    prepare(_config(postgres_url, tiny_space, shared, trials=2, epochs=10)).close()
    argv = [GAPSWEEP, "worker", "--study", "p", "--storage", proxy, "--no-progress", "--gpu", "none"]
    backend = ProxyBackend(*proxy.removeprefix("grpc://").split(":"), heartbeat_interval=1)
    checkpoints = backend_checkpoints(backend, "p")
    worker = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = kill_at_first_checkpoint(worker, checkpoints, timeout_s=240)
    _, err = worker.communicate(timeout=60)
    assert killed is not None, f"no trial reached a checkpoint in time: {err[-2000:]}"
    assert (shared / killed.location).is_file()  # the checkpoint's bytes are in the shared folder
    again = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_resumed(postgres_url, checkpoints, "p", killed, epochs=10)
    backend.close()


def test_a_proxy_study_keeps_no_bytes_in_the_database_and_readers_are_sent_to_it(proxy, tiny_space, tmp_path, capsys):
    config = dataclasses.replace(_config(proxy, tiny_space, tmp_path, trials=1, epochs=1), artifacts="database")
    with pytest.raises(StorageError, match="store every worker reaches.*--artifacts file:///shared"):
        prepare(config)
    assert main(["best", "--study", "p", "--storage", proxy]) == 1
    err = capsys.readouterr().err
    assert "is a storage proxy" in err and "--storage postgresql://" in err and "Traceback" not in err
    assert main(["reap", "--study", "p", "--storage", proxy]) == 1
    assert "a storage proxy reaps its studies itself" in capsys.readouterr().err


def test_no_proxy_at_the_address_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr("gapsweep.storage.backend.PROXY_WAIT_S", 1.0)
    assert main(["worker", "--study", "p", "--storage", f"grpc://127.0.0.1:{_free_port()}", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no storage proxy answers at grpc://127.0.0.1:" in err and "gapsweep proxy --storage" in err
    assert main(["worker", "--study", "p", "--storage", "grpc://proxyhost", "--no-progress"]) == 1
    assert "names no proxy; write grpc://host:port" in capsys.readouterr().err


def test_jobs_behind_a_proxy_draw_apart_where_jobs_that_take_turns_draw_by_position():
    counts = {state.name: 0 for state in optuna.trial.TrialState} | {"COMPLETE": 4}
    config = SweepConfig(sampler="random", seed=7)

    def first_draw(job: int, salt: str, claims_in_turn: bool) -> float:
        sweep = SimpleNamespace(
            job=job, salt=salt, config=config, trials_seen=0, study=SimpleNamespace(sampler=None),
            backend=SimpleNamespace(claims_in_turn=claims_in_turn),
        )
        _resample_if_shared(sweep, counts)
        return sweep.study.sampler._rng.rng.random()

    # Claims under the study lock: the study's size at a claim is the claim's own, whichever job makes it.
    assert first_draw(1, "host:1", claims_in_turn=True) == first_draw(2, "host:2", claims_in_turn=True)
    # Behind a proxy two jobs may claim at the same size: each mixes in its own identity.
    assert first_draw(1, "host:1", claims_in_turn=False) != first_draw(2, "host:2", claims_in_turn=False)


@pytest.mark.slow
def test_a_worker_rides_out_a_proxy_killed_and_restarted_mid_sweep(postgres_url, tiny_space, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    prepare(_config(postgres_url, tiny_space, shared, trials=8, epochs=3)).close()
    port = _free_port()
    server = _start_proxy(postgres_url, port)
    argv = [GAPSWEEP, "worker", "--study", "p", "--storage", f"grpc://127.0.0.1:{port}", "--no-progress", "--gpu", "none"]
    worker = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    study = optuna.load_study(study_name="p", storage=postgres_url)
    deadline = time.monotonic() + 240
    while len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    server.kill()  # kill -9 of the proxy mid-sweep, then a restart on the same port
    server.wait()
    time.sleep(2)
    server = _start_proxy(postgres_url, port)
    try:
        _, err = worker.communicate(timeout=400)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert worker.returncode == 0 and "Traceback" not in err, err[-3000:]
    trials = study.get_trials()
    spent = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(spent) == 8 and not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    for failed in (t for t in trials if t.state.name == "FAIL"):  # the trial the outage cut off is run again
        assert any(t.system_attrs.get("failed_trial") == failed.number or t.params == failed.params for t in spent)
