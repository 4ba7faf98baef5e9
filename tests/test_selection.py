"""The paired one-standard-error rule, the per-example val losses it reads (SQLite and
PostgreSQL), and `best` naming Optuna's best trial with the paired view beside it."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
import sqlalchemy as sa

from gapsweep.api import best_trial, best_trials, migrate, select_trials
from gapsweep.cli import main
from gapsweep.errors import ConfigError
from gapsweep.storage import artifacts, val_losses
from gapsweep.storage.engine import open_storage
from gapsweep.storage.queries import TrialRecord
from gapsweep.sweeps.analysis.selection import paired_difference, paired_select

N = 400


def _losses() -> dict[int, np.ndarray]:
    """Hand-made per-example losses on N shared val rows.

    0: the lowest val loss, with a large gap.
    1: 0.004 worse on average with noise of sd 0.2 around trial 0's rows: within the paired SE
       (0.01), so tied; its gap is small, so the rule picks it.
    2: 0.03 worse on every row: a tiny shift next to either trial's own SE (~0.03), but the paired
       SE is ~0 (the rows move together), so it is clearly worse and not tied.
    3: lower val loss than all, but chance-level (no better than the prior): never picked.
    """
    rng = np.random.default_rng(0)
    base = rng.gamma(2.0, 0.25, size=N)
    noise = rng.normal(0.0, 0.2, size=N)
    noise -= noise.mean()
    return {0: base, 1: base + 0.004 + noise, 2: base + 0.03, 3: base - 0.1}


GAPS = {0: 0.30, 1: 0.05, 2: 0.0, 3: 0.0}


def _records() -> list[TrialRecord]:
    losses = _losses()
    return [
        TrialRecord(
            number, "COMPLETE", float(losses[number].mean()), {},
            {"val_loss": float(losses[number].mean()), "gap": GAPS[number], "chance_level": number == 3},
        )
        for number in losses
    ]


def test_the_paired_rule_on_hand_made_losses():
    losses = _losses()
    selection = paired_select(_records(), losses)
    assert selection is not None
    assert selection.val_min.number == 0  # trial 3 is chance-level, so it does not count
    assert selection.tied == [0, 1] and selection.pick.number == 1
    assert selection.n_rows == N
    assert selection.se == pytest.approx(losses[0].std(ddof=1) / np.sqrt(N))
    # Trial 2's shift is within either trial's own SE but far outside the paired one.
    mean, se = paired_difference(losses[2], losses[0])
    assert mean == pytest.approx(0.03) and se < 1e-6
    assert 0.03 < 2 * selection.se
    mean, se = selection.differences[1]
    assert 0 < mean <= se
    view = selection.to_dict()
    assert (view["val_min_trial"], view["n_tied"], view["paired_pick"]) == (0, 2, 1)


def test_the_paired_rule_needs_stored_losses():
    assert paired_select(_records(), {}) is None
    assert paired_select(_records()[3:], {3: _losses()[3]}) is None  # only a chance-level trial


def _study_with_losses(url: str) -> optuna.Study:
    """Trials 0-3 told their bounded-style scores (trial 2's the lowest), losses stored."""
    storage = open_storage(url)
    artifacts.ensure_schema(storage.engine)
    study = optuna.create_study(study_name="paired", storage=storage)
    values = {0: 0.52, 1: 0.53, 2: 0.51, 3: 9.0}
    for number, losses in _losses().items():
        trial = study.ask()
        for key, value in _records()[number].attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, values[number])
        val_losses.save(storage.engine, "paired", trial.number, losses.tolist(), epoch=3)
    return study


def test_per_example_losses_are_stored_read_back_and_migrated(any_url, tmp_path):
    study = _study_with_losses(any_url)
    engine = open_storage(any_url).engine
    stored = val_losses.load(engine, "paired")
    assert sorted(stored) == [0, 1, 2, 3]
    np.testing.assert_allclose(stored[1], _losses()[1], rtol=1e-6)  # float32 on disk
    assert sorted(val_losses.load(engine, "paired", [1, 3])) == [1, 3]
    val_losses.save(engine, "paired", 1, [0.5, 0.25], epoch=0)  # replaced, not duplicated
    assert val_losses.load(engine, "paired", [1]) == {1: [0.5, 0.25]}
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    migrate(any_url, target)
    copied = val_losses.load(open_storage(target).engine, "paired")
    assert sorted(copied) == [0, 1, 2, 3] and copied[1] == [0.5, 0.25]
    assert study.best_trial.number == 2


def test_an_older_database_gets_the_table_on_upgrade(sqlite_url):
    engine = open_storage(sqlite_url).engine
    artifacts.ensure_schema(engine)
    with engine.begin() as conn:  # a version-1 database: no per-example loss table yet
        conn.execute(sa.text("DROP TABLE gapsweep_val_losses"))
        conn.execute(sa.update(artifacts.schema_table).values(version=1))
    assert val_losses.load(engine, "s") == {}
    artifacts.ensure_schema(engine)
    assert artifacts.schema_version(engine) == artifacts.SCHEMA_VERSION and sa.inspect(engine).has_table("gapsweep_val_losses")
    val_losses.save(engine, "s", 0, [1.0])
    assert val_losses.load(engine, "s") == {0: [1.0]}


def test_best_names_optunas_best_and_shows_the_paired_view(any_url, capsys):
    study = _study_with_losses(any_url)
    # Default: Optuna's best trial (lowest stored score), the paired view beside it.
    assert best_trial("paired", any_url).number == study.best_trial.number == 2
    assert best_trials("paired", any_url)[0].number == study.best_trial.number
    assert main(["best", "--study", "paired", "--storage", any_url, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["trials"][0]["number"] == study.best_trial.number
    assert payload["selection"]["val_min_trial"] == 0 and payload["selection"]["paired_pick"] == 1
    assert payload["selection"]["n_tied"] == 2 and payload["selection"]["se"] > 0
    assert main(["best", "--study", "paired", "--storage", any_url]) == 0
    out = capsys.readouterr().out
    assert "lowest val loss: trial 0" in out and "1 other trial(s) tied" in out and "paired pick" in out
    # --rule paired and its Python twin return the paired pick.
    assert best_trial("paired", any_url, rule="paired").number == select_trials("paired", any_url).pick.number == 1
    assert main(["best", "--study", "paired", "--storage", any_url, "--rule", "paired", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [row["number"] for row in payload["trials"]] == [1]


def test_rule_paired_without_stored_losses_says_what_to_do(sqlite_url, capsys):
    study = optuna.create_study(study_name="old", storage=open_storage(sqlite_url))
    study.add_trial(optuna.trial.create_trial(value=0.5))
    with pytest.raises(ConfigError, match="use --rule score"):
        best_trial("old", sqlite_url, rule="paired")
    assert main(["best", "--study", "old", "--storage", sqlite_url, "--rule", "paired"]) == 1
    assert "use --rule score" in capsys.readouterr().err
    assert main(["best", "--study", "old", "--storage", sqlite_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["selection"] is None
