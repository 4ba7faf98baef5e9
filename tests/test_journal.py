"""A study in an Optuna journal file: launch, workers, reads, kill -9 and migrate, with every
write through Optuna's storage API (no database server, no SQL file beside the log)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

from kill_resume import assert_resumed, backend_checkpoints, kill_at_first_checkpoint
from gapsweep.api import best_trials, list_studies, list_trials, migrate, select_trials
from gapsweep.cli import main
from gapsweep.storage.backend import JournalBackend
from gapsweep.storage.engine import connect_existing
from gapsweep.sweeps.analysis.export import export_best
from gapsweep.sweeps.data.datasets import DataSpec, load
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.run.launch import launch, prepare
from gapsweep.sweeps.trial.objective import ObjectiveSettings

GAPSWEEP = str(Path(sys.executable).parent / "gapsweep")


@pytest.fixture
def journal(tmp_path) -> tuple[str, Path]:
    path = tmp_path / "sweeps.log"
    return f"journal:///{path}", path


def _optuna_journal(path: Path) -> optuna.storages.JournalStorage:
    """The journal as Optuna's own API opens it."""
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _config(url: str, space: dict, *, study: str = "j", trials: int = 3, epochs: int = 4, keep: int = 2) -> SweepConfig:
    return SweepConfig(
        study=study, space={**space, "epochs": {"type": "fixed", "value": epochs}}, data=DataSpec("digits", train_fraction=0.3),
        trials=trials, storage=url, pruner="none", objective=ObjectiveSettings(patience=50, keep_models=keep),
    )


@pytest.mark.slow
def test_a_sweep_on_a_journal_file_keeps_the_budget_and_answers_every_reading_command(journal, tiny_space, tmp_path, capsys):
    url, path = journal
    launch(_config(url, tiny_space, trials=3), progress=False)

    # Optuna alone reads what gapsweep wrote, and agrees on the best trial.
    study = optuna.load_study(study_name="j", storage=_optuna_journal(path))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    (summary,) = list_studies(url)
    assert summary.counts["COMPLETE"] == 3 and summary.counts["RUNNING"] == 0
    best = best_trials("j", url, k=1)[0]
    assert best.number == study.best_trial.number and best.value == pytest.approx(study.best_value)
    optuna_cli = subprocess.run(
        [str(Path(sys.executable).parent / "optuna"), "best-trial", "--study-name", "j", "--storage", str(path), "-f", "json"],
        capture_output=True, text=True, timeout=120,
    )
    assert optuna_cli.returncode == 0 and json.loads(optuna_cli.stdout)["number"] == best.number, optuna_cli.stderr
    assert len(list_trials("j", url)) == 3
    # The per-example val losses went in with each trial: the paired rule has what it compares.
    assert select_trials("j", url) is not None

    # The two best models sit in the folder beside the log, and the best one works on raw rows.
    kept = sorted((tmp_path / "sweeps.log.artifacts").iterdir())
    assert len(kept) == 2 and all(p.suffix == ".keras" for p in kept)
    out = tmp_path / "best.keras"
    exported = export_best("j", out, storage=url)
    assert exported.trials == [best.number]
    splits = load(DataSpec("digits", train_fraction=0.3))
    model = keras.models.load_model(out)
    assert model.predict(splits.raw_test[:5], verbose=0).shape == (5, 10)

    assert main(["show", "j", str(best.number), "--storage", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["curves"]["val_loss"]
    assert main(["reap", "--study", "j", "--storage", url]) == 0  # nothing stale: nothing failed
    assert [t.state.name for t in optuna.load_study(study_name="j", storage=_optuna_journal(path)).trials] == ["COMPLETE"] * 3
    # Reading never leaves a file behind the log's own.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "sweeps.log", "sweeps.log.artifacts", "sweeps.log.claim-lock"]

    # Into a database, models and val losses included, for the commands a journal does not serve.
    target = f"sqlite:///{tmp_path / 'moved.db'}"
    assert migrate(url, target) == [{"study": "j", "trials": 3, "artifacts": 2}]
    assert best_trials("j", target, k=1)[0].number == best.number and select_trials("j", target) is not None
    export_best("j", tmp_path / "moved.keras", storage=target)
    assert main(["report", "--study", "j", "--storage", url, "--out", str(tmp_path / "r.html")]) == 1
    assert "is a journal file" in capsys.readouterr().err

    # Deleted from the journal: the study, then its models' bytes beside the log.
    assert main(["delete", "j", "--storage", url, "--yes"]) == 0
    assert "deleted study 'j' and 2 stored model(s)" in capsys.readouterr().out
    assert list_studies(url) == [] and not list((tmp_path / "sweeps.log.artifacts").iterdir())
    assert best_trials("j", target, k=1)[0].number == best.number  # the copy keeps its own


@pytest.mark.slow
def test_a_journal_study_keeps_its_models_in_the_store_it_names(journal, tiny_space, tmp_path):
    url, _ = journal
    shared = tmp_path / "shared"
    shared.mkdir()
    config = dataclasses.replace(_config(url, tiny_space, trials=2, epochs=2, keep=1), artifacts=str(shared))
    launch(config, progress=False)
    (kept,) = shared.iterdir()
    assert kept.suffix == ".keras" and not list((tmp_path / "sweeps.log.artifacts").iterdir())
    export_best("j", tmp_path / "best.keras", storage=url)  # read through the snapshot's index
    assert keras.models.load_model(tmp_path / "best.keras") is not None
    assert main(["delete", "j", "--storage", url, "--yes"]) == 0 and not list(shared.iterdir())


@pytest.mark.slow
def test_two_workers_on_one_journal_spend_the_budget_exactly(journal, tiny_space):
    url, path = journal
    prepare(_config(url, tiny_space, trials=6, epochs=3, keep=1)).close()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    workers = [
        subprocess.Popen(
            [GAPSWEEP, "worker", "--study", "j", "--storage", url, "--no-progress", "--gpu", "none"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    errors = [worker.communicate(timeout=400)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], errors
    trials = optuna.load_study(study_name="j", storage=_optuna_journal(path)).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    workers_seen = {t.user_attrs["worker"] for t in trials}
    assert len(workers_seen) == 2, "both workers trained"


@pytest.mark.slow
def test_a_worker_killed_mid_trial_on_a_journal_resumes_from_its_checkpoint(journal, tiny_space, monkeypatch):
    monkeypatch.setenv("GAPSWEEP_HEARTBEAT_S", "1")
    url, path = journal
    prepare(_config(url, tiny_space, study="crash", trials=2, epochs=10, keep=1)).close()
    env = {**os.environ, "GAPSWEEP_HEARTBEAT_S": "1", "GAPSWEEP_CHECKPOINT_S": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    argv = [GAPSWEEP, "worker", "--study", "crash", "--storage", url, "--no-progress", "--gpu", "none"]
    backend = JournalBackend(path, heartbeat_interval=1, grace_period=3)
    checkpoints = backend_checkpoints(backend, "crash")
    worker = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = kill_at_first_checkpoint(worker, checkpoints, timeout_s=240)
    _, err = worker.communicate(timeout=60)
    assert killed is not None, f"no trial reached a checkpoint in time: {err[-2000:]}"
    assert [t.state.name for t in optuna.load_study(study_name="crash", storage=_optuna_journal(path)).trials] == ["RUNNING"]
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_resumed(_optuna_journal(path), checkpoints, "crash", killed, epochs=10)


def test_create_only_on_a_journal_gives_the_worker_command_and_mistakes_are_one_line(tmp_path, capsys):
    url = f"journal:///{tmp_path / 'sweeps.log'}"
    assert main(["launch", "--data", "wine", "--study", "j", "--storage", url, "--trials", "1", "--create-only"]) == 0
    assert capsys.readouterr().out.strip() == f"study 'j' is ready: start workers with gapsweep worker --study j --storage {url}"
    assert optuna.load_study(study_name="j", storage=_optuna_journal(tmp_path / "sweeps.log")).user_attrs["gapsweep.config"]

    url = f"journal:///{tmp_path / 'nowhere' / 'sweeps.log'}"
    assert main(["launch", "--data", "digits", "--study", "j", "--storage", url, "--trials", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"folder {tmp_path / 'nowhere'} does not exist" in err
    assert main(["best", "--study", "j", "--storage", f"journal:///{tmp_path / 'none.log'}"]) == 1
    assert f"no journal at {tmp_path / 'none.log'}" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a journal\nat all\n")
    assert main(["best", "--study", "j", "--storage", f"journal:///{tmp_path / 'notes.txt'}"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"gapsweep: error: {tmp_path / 'notes.txt'} is not an Optuna journal file; point --storage at one, or at a new path"
    )


def test_studies_tells_a_live_trial_on_a_journal_from_a_stale_one(tmp_path):
    """Heartbeats live in the journal as trial attributes; ``studies`` reads them as it reads a
    database's heartbeat table."""
    url, path = f"journal:///{tmp_path / 'sweeps.log'}", tmp_path / "sweeps.log"
    backend = JournalBackend(path, heartbeat_interval=10, grace_period=30)
    study = optuna.create_study(study_name="beats", storage=backend.storage)
    live, silent = study.ask(), study.ask()
    backend.storage.record_heartbeat(live._trial_id)
    backend.storage.set_trial_system_attr(silent._trial_id, "gapsweep:heartbeat", time.time() - 600)
    (summary,) = list_studies(url)
    assert (summary.counts["RUNNING"], summary.counts["STALE"]) == (1, 1)
    assert backend.storage._get_stale_trial_ids(study._study_id) == [silent._trial_id]


def test_a_journal_is_copied_once_per_state_of_its_log(tmp_path):
    """A command reads a study several times; the snapshot is made again only once the log grew."""
    url, path = f"journal:///{tmp_path / 'sweeps.log'}", tmp_path / "sweeps.log"
    optuna.create_study(study_name="one", storage=_optuna_journal(path))
    first = connect_existing(url)
    first.dispose()  # as every reader does when it is done
    assert connect_existing(url) is first and [s.name for s in list_studies(url)] == ["one"]
    optuna.create_study(study_name="two", storage=_optuna_journal(path))
    assert connect_existing(url) is not first and [s.name for s in list_studies(url)] == ["one", "two"]

