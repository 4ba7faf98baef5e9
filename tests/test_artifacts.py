"""Best-model artifacts and cross-process queries, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from gapsweep.api import best_trials, list_trials
from gapsweep.errors import ConfigError, StorageError
from gapsweep.storage import artifacts
from gapsweep.storage.backend import SqlBackend
from gapsweep.storage.engine import open_storage
from gapsweep.storage.queries import Standing
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.data.datasets import DataSpec, load
from gapsweep.sweeps.run.launch import launch
from gapsweep.sweeps.analysis.export import load_best_model
from gapsweep.sweeps.trial.objective import ObjectiveSettings

GAPSWEEP = str(Path(sys.executable).parent / "gapsweep")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GAPSWEEP, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_sweep_is_queryable_from_another_process_and_its_best_model_exports(any_url, tiny_space, tmp_path):
    data = DataSpec("digits", train_fraction=0.3)
    config = SweepConfig(
        study="shared", space=tiny_space, data=data, trials=4, storage=any_url, pruner="none",
        objective=ObjectiveSettings(keep_models=2),
    )
    launch(config, progress=False)

    for args in (["studies"], ["best", "--study", "shared", "--top", "2"], ["trials", "--study", "shared"], ["show", "shared", "0"]):
        done = _cli(*args, "--storage", any_url, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)
    out = tmp_path / "best.keras"
    done = _cli("export", "shared", "--out", str(out), "--storage", any_url, "--json")
    assert done.returncode == 0, done.stderr
    exported = json.loads(done.stdout)
    best = best_trials("shared", any_url, k=1)[0]
    assert exported["trial"] == best.number and exported["score"] == pytest.approx(best.value)

    # Only the top 2 trials keep a model, and the exported one predicts raw (unstandardized) rows as recorded.
    engine = open_storage(any_url).engine
    assert len(artifacts.trial_numbers(engine, "shared", artifacts.MODEL)) == 2
    import keras

    model = keras.saving.load_model(out, safe_mode=True)
    splits = load(data)
    assert float(splits.raw_test.max()) == 16.0  # raw digits pixels, 0..16
    accuracy = float(np.mean(np.argmax(model.predict(splits.raw_test, verbose=0), axis=1) == splits.y_test))
    assert accuracy == pytest.approx(exported["test_accuracy"], abs=1e-6)
    again = load_best_model("shared", any_url)
    np.testing.assert_allclose(again.predict(splits.raw_test[:5], verbose=0), model.predict(splits.raw_test[:5], verbose=0), rtol=1e-6)


def test_schema_is_versioned_and_refuses_a_newer_one(any_url):
    engine = open_storage(any_url).engine
    artifacts.ensure_schema(engine)
    artifacts.ensure_schema(engine)  # idempotent
    assert artifacts.schema_version(engine) == artifacts.SCHEMA_VERSION
    with engine.begin() as conn:
        conn.execute(sa.update(artifacts.schema_table).values(version=artifacts.SCHEMA_VERSION + 1))
    with pytest.raises(StorageError, match="newer than this gapsweep"):
        artifacts.ensure_schema(engine)


def test_postgres_stores_models_and_val_losses_uncompressed_in_new_and_upgraded_tables(postgres_url):
    """Float weights do not compress: PostgreSQL's attempt cost 3-4x the write of a model."""
    engine = open_storage(postgres_url).engine
    storage_of = sa.text(
        "SELECT attrelid::regclass::text, attstorage FROM pg_attribute WHERE (attrelid, attname) IN "
        "(('gapsweep_artifacts'::regclass, 'data'), ('gapsweep_val_losses'::regclass, 'losses')) ORDER BY 1"
    )
    artifacts.ensure_schema(engine)
    with engine.connect() as conn:
        assert conn.execute(storage_of).all() == [("gapsweep_artifacts", "e"), ("gapsweep_val_losses", "e")]
    with engine.begin() as conn:  # as a version 3 database left them: PostgreSQL's default
        conn.execute(sa.text("ALTER TABLE gapsweep_artifacts ALTER COLUMN data SET STORAGE EXTENDED"))
        conn.execute(sa.text("ALTER TABLE gapsweep_val_losses ALTER COLUMN losses SET STORAGE EXTENDED"))
        conn.execute(sa.update(artifacts.schema_table).values(version=3))
    artifacts.ensure_schema(engine)
    with engine.connect() as conn:
        assert conn.execute(storage_of).all() == [("gapsweep_artifacts", "e"), ("gapsweep_val_losses", "e")]
    engine.dispose()


def test_artifacts_replace_copy_and_delete(any_url, sqlite_url):
    engine = open_storage(any_url).engine
    artifacts.ensure_schema(engine)
    artifacts.save(engine, "s", 1, artifacts.MODEL, b"one", meta={"score": 1.0})
    artifacts.save(engine, "s", 1, artifacts.MODEL, b"uno", meta={"score": 0.9})
    artifacts.save(engine, "s", 2, artifacts.MODEL, b"two")
    found = artifacts.load(engine, "s", 1, artifacts.MODEL)
    assert found is not None and found.data == b"uno" and found.meta == {"score": 0.9}
    target = open_storage(sqlite_url.replace("sweeps.db", "copy.db")).engine
    assert artifacts.copy(engine, target, "s") == 2
    assert artifacts.delete(engine, "s", kind=artifacts.MODEL, trial_numbers={1, 3}) == 1
    assert artifacts.trial_numbers(engine, "s", artifacts.MODEL) == [2]
    assert artifacts.trial_numbers(target, "s", artifacts.MODEL) == [1, 2]


def test_parameter_range_filters(any_url):
    import optuna

    study = optuna.create_study(study_name="ranges", storage=open_storage(any_url))
    batch = optuna.distributions.CategoricalDistribution((128, 32, 64))  # stored as the choice's index
    colour = optuna.distributions.CategoricalDistribution(("red", "blue"))
    for units, size, value in ((8, 32, 0.3), (32, 64, 0.2), (64, 64, 0.1), (128, 128, 0.4)):
        study.enqueue_trial({"units": units, "batch_size": size, "colour": "red"})
        trial = study.ask({"units": optuna.distributions.IntDistribution(8, 128), "batch_size": batch, "colour": colour})
        study.tell(trial, value)
    assert [t.number for t in best_trials("ranges", any_url, k=5, params={"units": (16, 100)})] == [2, 1]
    assert [t.params["units"] for t in list_trials("ranges", any_url, params={"units": (None, 32)})] == [8, 32]
    # A categorical parameter is filtered by its values, not by Optuna's index of them.
    assert [t.number for t in best_trials("ranges", any_url, k=5, params={"batch_size": (64, 64)})] == [2, 1]
    assert [t.number for t in list_trials("ranges", any_url, params={"batch_size": (33, None)})] == [1, 2, 3]
    with pytest.raises(ConfigError, match="--param colour: a range needs numbers, but 'colour' is a choice among red, blue"):
        list_trials("ranges", any_url, params={"colour": (0, 1)})


@pytest.mark.slow
def test_a_model_kept_for_a_trial_still_running_survives_another_workers_offer(any_url, monkeypatch):
    """Two workers: trial 0's model is stored while it still runs (its value is written after);
    trial 1 finishing meanwhile must not drop it, or the study's best would have no model."""
    import optuna

    from gapsweep.search_spaces.builder import build_model
    from gapsweep.sweeps.trial.models import ModelKeeper

    splits = load(DataSpec("wine"))
    model = build_model({"n_layers": 0}, splits.task)
    storage = open_storage(any_url)
    artifacts.ensure_schema(storage.engine)
    study = optuna.create_study(study_name="race", storage=storage)
    first, second = study.ask(), study.ask()
    keeper = ModelKeeper(SqlBackend(storage), "race", keep=1)
    assert keeper.offer(Standing(False, 0.1, first.number), model, {}, splits.preprocessing)
    assert keeper.offer(Standing(False, 0.5, second.number), model, {}, splits.preprocessing)  # none complete yet
    assert artifacts.trial_numbers(storage.engine, "race", artifacts.MODEL) == [0, 1]
    study.tell(second, 0.5)
    # Trial 0 finishes while trial 2's model is being saved, after trial 2 asked whether it ranks.
    third = study.ask()
    save = artifacts.save

    def save_while_trial_0_finishes(*args: Any, **kwargs: Any) -> None:
        save(*args, **kwargs)
        study.tell(first, 0.1)

    monkeypatch.setattr(artifacts, "save", save_while_trial_0_finishes)
    assert keeper.offer(Standing(False, 0.3, third.number), model, {}, splits.preprocessing)
    monkeypatch.undo()
    assert 0 in artifacts.trial_numbers(storage.engine, "race", artifacts.MODEL)  # the study's best
    study.tell(third, 0.3)
    # Once all are ranked, the next model kept leaves only the top one.
    fourth = study.ask()
    assert keeper.offer(Standing(False, 0.05, fourth.number), model, {}, splits.preprocessing)
    assert artifacts.trial_numbers(storage.engine, "race", artifacts.MODEL) == [3]
    # A trial that breaks --max-gap ranks after every feasible one, however low its value.
    study.tell(fourth, 0.05)
    assert not keeper.offer(Standing(True, 0.01, study.ask().number), model, {}, splits.preprocessing)
    assert artifacts.trial_numbers(storage.engine, "race", artifacts.MODEL) == [3]
    # Two trials kept while both ran (neither could rank the other); once both have finished, the
    # trim a worker makes when it stops leaves the top one only.
    fifth, sixth = study.ask(), study.ask()
    assert keeper.offer(Standing(False, 0.02, fifth.number), model, {}, splits.preprocessing)
    assert keeper.offer(Standing(False, 0.03, sixth.number), model, {}, splits.preprocessing)
    assert artifacts.trial_numbers(storage.engine, "race", artifacts.MODEL) == [5, 6]
    study.tell(fifth, 0.02)
    study.tell(sixth, 0.03)
    keeper.trim()
    assert artifacts.trial_numbers(storage.engine, "race", artifacts.MODEL) == [5]
    storage.engine.dispose()


def test_the_keeper_refuses_a_trial_behind_its_last_ranking_without_a_query(sqlite_url):
    """Complete trials never leave a study, so a trial behind the last ranking's k-th best
    cannot make the top k: the keeper answers that without asking the database again."""
    import optuna
    import sqlalchemy as sa

    from gapsweep.sweeps.trial.models import ModelKeeper

    storage = open_storage(sqlite_url)
    study = optuna.create_study(study_name="bar", storage=storage)
    for value in (0.3, 0.1, 0.2):
        study.tell(study.ask(), value)
    keeper = ModelKeeper(SqlBackend(storage), "bar", keep=2)
    statements: list[str] = []
    sa.event.listen(storage.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assert keeper.qualifies(Standing(False, 0.15, 3)) and statements  # ranked: 0.1, 0.15 stay
    statements.clear()
    assert not keeper.qualifies(Standing(False, 0.25, 4)) and not statements  # behind 0.2: no query
    assert not keeper.qualifies(Standing(True, 0.01, 5)) and not statements  # infeasible ranks last
    assert keeper.qualifies(Standing(False, 0.12, 6)) and statements  # ahead of 0.2: asks again
    storage.engine.dispose()
