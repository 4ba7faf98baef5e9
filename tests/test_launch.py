"""End-to-end sweeps on a real SQLite file: pruning, persistence, seeds, failures, Optuna's CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from gapsweep.api import best_trials, get_study_config, list_trials
from gapsweep.errors import ConfigError
from gapsweep.storage.studies import CONFIG_ATTR
from gapsweep.cli import main
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.data.datasets import DataSpec
from gapsweep.sweeps.run.launch import launch

pytestmark = pytest.mark.slow


def _config(tiny_space, url, **changes) -> SweepConfig:
    base = SweepConfig(
        study="e2e",
        space=tiny_space,
        data=DataSpec("digits", train_fraction=0.3),
        trials=3,
        storage=url,
        seed=0,
    )
    return base.override(**changes)


def test_ten_trial_sweep_prunes_stores_and_answers_queries(tiny_space, sqlite_url, capsys):
    study = launch(_config(tiny_space, sqlite_url, trials=10, pruner="median"), progress=False)
    states = [t.state for t in study.trials]
    assert len(states) == 10
    assert states.count(optuna.trial.TrialState.PRUNED) >= 1
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 3

    assert main(["best", "--study", "e2e", "--storage", sqlite_url, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    best = payload["trials"][0]
    assert best["number"] == study.best_trial.number
    assert best["score"] == pytest.approx(study.best_value)
    # The bounded default: val + min(λ·gap, κ·SE), with every part recorded.
    assert best["gap"] == pytest.approx(max(0.0, best["val_loss"] - best["train_loss"]))
    assert best["raw_penalty"] == pytest.approx(1.0 * best["gap"])
    assert best["applied_penalty"] == pytest.approx(min(best["raw_penalty"], best["kappa"] * best["val_se"]))
    assert best["score"] == pytest.approx(best["val_loss"] + best["applied_penalty"])
    assert best["score_kind"] == "bounded" and best["kappa"] == 0.5 and best["val_se"] > 0
    assert best["prior_loss"] > best["val_loss"] and best["chance_level"] is False
    # Beside it, the noise-aware view: the val-min trial, its SE, the tie and the paired pick.
    selection = payload["selection"]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert selection["val_min_trial"] == min(complete, key=lambda t: t.user_attrs["val_loss"]).number
    assert 1 <= selection["n_tied"] <= len(complete) and selection["paired_pick"] in selection["tied_trials"]
    assert selection["se"] > 0 and selection["n_rows"] == 359
    assert set(best["params"]) == set(tiny_space)
    assert best["params"]["epochs"] == 6  # fixed values are reported with the searched ones

    record = best_trials("e2e", sqlite_url, k=1)[0]
    curves = record.to_dict()["curves"]
    assert len(curves["train_loss"]) == len(curves["val_loss"]) == record.attrs["epochs_run"]
    assert curves["val_loss"][record.attrs["best_epoch"]] == pytest.approx(record.attrs["val_loss"])


def test_optuna_cli_reads_a_gapsweep_database(tiny_space, sqlite_url):
    study = launch(_config(tiny_space, sqlite_url, trials=2), progress=False)
    optuna_cli = shutil.which("optuna", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert optuna_cli, "Optuna's CLI is installed with optuna"
    done = subprocess.run(
        [optuna_cli, "best-trial", "--study-name", "e2e", "--storage", sqlite_url, "-f", "json"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["number"] == study.best_trial.number
    # gapsweep best names the same trial as Optuna's best-trial.
    assert best_trials("e2e", sqlite_url, k=1)[0].number == study.best_trial.number


def test_a_study_persists_across_launches(tiny_space, sqlite_url):
    launch(_config(tiny_space, sqlite_url, trials=2), progress=False)
    study = launch(_config(tiny_space, sqlite_url, trials=4), progress=False)
    trials = list_trials("e2e", sqlite_url)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4  # resumed sampler draws anew
    assert study.user_attrs[CONFIG_ATTR]["data"]["source"] == "digits"
    assert "storage" not in study.user_attrs[CONFIG_ATTR]
    # The budget is the study's: launching again with the same total trains nothing more.
    launch(_config(tiny_space, sqlite_url, trials=4), progress=False)
    assert len(list_trials("e2e", sqlite_url)) == 4


def _space_file(folder: Path, space: dict) -> Path:
    """``space`` as a TOML file, for the command line."""
    path = folder / "space.toml"
    path.write_text("".join(
        f"[{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in spec.items()) for name, spec in space.items()
    ))
    return path


def test_a_study_launched_from_flags_resumes_from_its_name_alone(tiny_space, sqlite_url, tmp_path, capsys):
    """`launch --study NAME --trials N` continues the study as it was launched: the space, data
    and objective come from the database, and a flag given again still overrides."""
    space = _space_file(tmp_path, tiny_space)
    flags = ["--storage", sqlite_url, "--no-progress", "--study", "flags"]
    assert main(["launch", "--data", "wine", "--space", str(space), "--trials", "1", "--gap-penalty", "0.5", *flags]) == 0
    assert main(["launch", "--trials", "2", *flags]) == 0, capsys.readouterr().err
    trials = list_trials("flags", sqlite_url)
    assert len(trials) == 2 and trials[1].state == "COMPLETE"
    config = get_study_config("flags", sqlite_url)
    assert config["data"]["source"] == "wine" and config["objective"]["gap_penalty"] == 0.5 and config["trials"] == 2
    # A budget already spent: nothing runs, and a line says why.
    assert main(["launch", "--trials", "1", *flags]) == 0
    assert "has spent its budget of 1 complete or pruned trial(s); nothing to run" in capsys.readouterr().err
    assert len(list_trials("flags", sqlite_url)) == 2
    # A flag given again is checked against the study as before.
    assert main(["launch", "--data", "digits", "--trials", "3", *flags]) == 1
    assert "started on other data" in capsys.readouterr().err
    # A name that is no study here, with nothing chosen, is most likely a typo: a note says so.
    assert main(["launch", "--trials", "1", "--create-only", *flags[:-1], "flgs"]) == 0
    err = capsys.readouterr().err
    assert "gapsweep: note: no study named 'flgs' in this database (studies: flags); starting a new study 'flgs'" in err


def test_a_launch_ended_by_its_timeout_says_so(tiny_space, sqlite_url, tmp_path, capsys):
    space = _space_file(tmp_path, tiny_space)
    argv = ["launch", "--data", "wine", "--space", str(space), "--study", "t", "--trials", "5", "--timeout", "0.01"]
    assert main([*argv, "--storage", sqlite_url, "--no-progress"]) == 0
    assert "gapsweep: the timeout (0.01 s) ended this launch at" in capsys.readouterr().err


def test_resuming_with_another_space_is_refused(tiny_space, sqlite_url):
    launch(_config(tiny_space, sqlite_url, trials=1), progress=False)
    other = {**tiny_space, "units": {"type": "int", "low": 8, "high": 64}}
    with pytest.raises(ConfigError, match="different search space"):
        launch(_config(other, sqlite_url, trials=2), progress=False)
    assert len(list_trials("e2e", sqlite_url)) == 1


def test_the_same_seed_samples_the_same_parameters(tiny_space, sqlite_url):
    first = launch(_config(tiny_space, sqlite_url, study="a", trials=3, seed=7), progress=False)
    second = launch(_config(tiny_space, sqlite_url, study="b", trials=3, seed=7), progress=False)
    third = launch(_config(tiny_space, sqlite_url, study="c", trials=3, seed=8), progress=False)
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert [t.params for t in first.trials] != [t.params for t in third.trials]


def test_a_nan_loss_fails_that_trial_and_the_sweep_goes_on(sqlite_url):
    space = {"learning_rate": {"type": "float", "low": 1e-3, "high": 1e6, "log": True}, "optimizer": "sgd", "epochs": 3, "units": 16}
    study = optuna.create_study(study_name="nan", storage=sqlite_url)
    study.enqueue_trial({"learning_rate": 1e6})
    # Every trial after the diverging one is enqueued too: a sampled rate from this range could diverge.
    study.enqueue_trial({"learning_rate": 1e-2})
    study.enqueue_trial({"learning_rate": 3e-3})
    config = SweepConfig(study="nan", space=space, data=DataSpec("digits"), trials=2, storage=sqlite_url, pruner="none")
    launch(config, progress=False)
    diverged, *healthy = list_trials("nan", sqlite_url)
    assert diverged.state == "FAIL" and "non-finite" in diverged.attrs["fail_reason"]
    # A failed trial does not use up the budget: two trials still complete.
    assert [t.state for t in healthy] == ["COMPLETE", "COMPLETE"]


def test_progress_shows_the_budget_counts_and_best_score_only_when_asked(tiny_space, sqlite_url, capsys):
    launch(_config(tiny_space, sqlite_url, trials=2), progress=True)
    shown = capsys.readouterr().err
    assert "trials" in shown and "2/2" in shown and "pruned=0" in shown and "failed=0" in shown and "best=" in shown
    launch(_config(tiny_space, sqlite_url, study="quiet", trials=1), progress=None)  # stderr is no terminal here
    assert "1/1" not in capsys.readouterr().err


def test_a_python_config_that_names_two_things_to_search_or_a_dict_objective_is_refused_when_made():
    with pytest.raises(ConfigError, match="either a space or a hypermodel; give SweepConfig one of space= and hypermodel="):
        SweepConfig(space={"units": {"type": "fixed", "value": 3}}, hypermodel="models.py:build")
    with pytest.raises(ConfigError, match="objective must be an ObjectiveSettings \\(e.g. ObjectiveSettings\\(gap_penalty=2\\)\\), got dict"):
        SweepConfig(objective={"gap_penalty": 2})  # type: ignore[arg-type]
    assert SweepConfig(hypermodel="models.py:build").hypermodel == "models.py:build"  # the default space stands aside
