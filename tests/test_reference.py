"""Never lose to the simplest model: depth-0 trials, and the linear reference beside every study."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import optuna
import pytest

from gapsweep.api import best_trials, list_trials, study_reference
from gapsweep.cli import main
from gapsweep.storage.engine import open_storage
from gapsweep.storage.studies import REFERENCE_ATTR
from gapsweep.sweeps.analysis.export import export_best
from gapsweep.sweeps.analysis.report import build_report, render_html
from gapsweep.sweeps.data import losses
from gapsweep.sweeps.data.preprocessing import unwrap
from gapsweep.sweeps.data.datasets import DataSpec, load
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.run.launch import launch
from gapsweep.sweeps.run.reference import GRID, fit_reference, reference_test_losses, sentence
from gapsweep.sweeps.trial.objective import ObjectiveSettings


def test_the_reference_is_the_best_of_its_grid_on_the_val_rows():
    from sklearn.linear_model import LogisticRegression, Ridge
    from threadpoolctl import threadpool_limits

    wine = load(DataSpec("wine", train_fraction=0.4))
    found = fit_reference(wine)
    assert found is not None and found["model"] == "LogisticRegression"
    assert found["val_loss"] == min(row["val_loss"] for row in found["grid"])
    with threadpool_limits(limits=1):  # as the reference fits: BLAS threads change the last digits
        model = LogisticRegression(C=found["params"]["C"], max_iter=1000).fit(wine.x_train, wine.y_train)
    probabilities = model.predict_proba(wine.x_val)
    picked = probabilities.astype("float64")[np.arange(len(wine.y_val)), wine.y_val]
    hand = -np.mean(np.log(np.clip(picked, 1e-7, 1 - 1e-7)))  # Keras clips to [ε, 1 − ε]
    assert found["val_loss"] == pytest.approx(hand, rel=1e-6)  # float32 features: float32 probabilities
    assert (found["train_rows"], found["val_rows"]) == (len(wine.x_train), len(wine.x_val))

    diabetes = load(DataSpec("diabetes"))
    found = fit_reference(diabetes)
    assert found is not None and found["model"] == "Ridge" and [row["alpha"] for row in found["grid"]] == list(GRID)
    ridge = Ridge(alpha=found["params"]["alpha"]).fit(diabetes.x_train, diabetes.y_train)
    assert found["val_loss"] == pytest.approx(np.mean((ridge.predict(diabetes.x_val) - diabetes.y_val) ** 2))

    folds = fit_reference(diabetes, cv=3, seed=0)
    assert folds is not None and folds["cv"] == 3 and folds["val_rows"] == len(diabetes.x_train) + len(diabetes.x_val)
    assert folds["val_loss"] != found["val_loss"]


def test_no_reference_when_a_folds_training_rows_hold_one_class(tmp_path):
    """A class with one labelled row leaves some fold's training rows without it: nothing to fit."""
    path = tmp_path / "one_b.csv"
    path.write_text("x,c\n" + "".join(f"{i},{'b' if i == 6 else 'a'}\n" for i in range(7)))
    splits = load(DataSpec(str(path), target="c"))
    assert fit_reference(splits, cv=2, seed=0) is None


@pytest.mark.slow
def test_per_example_losses_match_keras_pure_loss_metric():
    from gapsweep.search_spaces.builder import build_model
    from gapsweep.sweeps.trial.runtime import fresh_session

    for spec in (DataSpec("wine", train_fraction=0.4), DataSpec("diabetes")):
        splits = load(spec)
        fresh_session(0)
        model = build_model({"n_layers": 0, "l2": 1e-2}, splits.task)
        model.fit(splits.x_train, splits.y_train, epochs=3, verbose=0)
        keras_value = model.evaluate(splits.x_val, splits.y_val, verbose=0, return_dict=True)["pure_loss"]
        mine = losses.per_example(splits.task, splits.y_val, model.predict(splits.x_val, verbose=0))
        assert mine.shape == (len(splits.y_val),)
        assert mine.mean() == pytest.approx(keras_value, rel=1e-5)


LINEAR_SPACE = {
    "l2": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "n_layers": {"type": "int", "low": 0, "high": 0},
    "units": {"type": "int", "low": 8, "high": 32, "when": "n_layers > 0"},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3, "when": "n_layers > 0"},
    "learning_rate": {"type": "float", "low": 1e-2, "high": 5e-2, "log": True},
    "epochs": 8,
    "batch_size": 32,
}


@pytest.mark.slow
def test_a_depth_zero_trial_builds_trains_and_exports(sqlite_url, tmp_path):
    import keras

    data = DataSpec("wine", train_fraction=0.4)
    launch(SweepConfig(study="lin", space=LINEAR_SPACE, data=data, trials=2, storage=sqlite_url, pruner="none"), progress=False)
    trials = list_trials("lin", sqlite_url, states=["complete"])
    assert len(trials) == 2
    for trial in trials:  # width and dropout were never suggested
        assert trial.params.keys() == {"l2", "n_layers", "learning_rate"} and trial.params["n_layers"] == 0
        assert trial.attrs["val_loss"] < 1.0
    for refit in (False, True):
        out = tmp_path / f"lin-{refit}.keras"
        export_best("lin", out, sqlite_url, refit=refit)
        model = unwrap(keras.models.load_model(out))  # the trained part, behind the raw-input layers
        dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        assert [layer.name for layer in dense] == ["output"]  # inputs straight to the output layer
        assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)


def _bump(url: str, study: str, **changes: float) -> None:
    """Overwrite stored reference values, as a stand-in no fit would produce."""
    loaded = optuna.load_study(study_name=study, storage=open_storage(url))
    loaded.set_user_attr(REFERENCE_ATTR, {**loaded.user_attrs[REFERENCE_ATTR], **changes})


@pytest.mark.slow
def test_the_reference_is_stored_once_and_shown_beside_the_pick(any_url, tiny_space, tmp_path, capsys):
    data = DataSpec("wine", train_fraction=0.4)
    config = SweepConfig(study="ref", space=tiny_space, data=data, trials=2, storage=any_url, pruner="none",
                         objective=ObjectiveSettings(keep_models=0))
    launch(config, progress=False)
    stored = study_reference("ref", any_url)
    assert stored == fit_reference(load(data))  # computed from the study's own rows

    # A resumed study keeps its reference: a value no fit would give survives the relaunch.
    _bump(any_url, "ref", val_loss=123.0)
    launch(replace(config, trials=3), progress=False)
    assert study_reference("ref", any_url)["val_loss"] == 123.0
    assert len(list_trials("ref", any_url)) == 3

    pick = best_trials("ref", any_url, 1)[0]
    assert main(["best", "--study", "ref", "--storage", any_url, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["trials"][0]
    assert row["reference"] == {
        "model": "LogisticRegression", "params": stored["params"], "val_loss": 123.0,
        "trial_val_loss": pick.attrs["val_loss"], "comparable": True, "beaten": True,
    }
    # The trials' mean predictor scores what the reference's does: both use cross-entropy.
    assert pick.attrs["prior_loss"] == pytest.approx(stored["prior_loss"], rel=1e-4)
    assert main(["show", "ref", str(pick.number), "--storage", any_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reference"]["beaten"] is True
    assert main(["best", "--study", "ref", "--storage", any_url]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"trial {pick.number}: val loss {pick.attrs['val_loss']:.4f}, lower")

    # A reference the sweep did not beat is said plainly, in the text, the JSON and the report.
    _bump(any_url, "ref", val_loss=1e-6)
    said = "The sweep did not beat the linear reference"
    assert main(["best", "--study", "ref", "--storage", any_url]) == 0
    assert said in capsys.readouterr().out
    assert main(["best", "--study", "ref", "--storage", any_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"][0]["reference"]["beaten"] is False
    page = render_html(build_report("ref", any_url))
    assert '<p id="reference" class="warn">' in page and said.lower() in page.lower()

    # Trials scored with another loss (a hypermodel compiled with MAE, say) are not compared.
    _bump(any_url, "ref", prior_loss=stored["prior_loss"] * 3)
    assert main(["best", "--study", "ref", "--storage", any_url]) == 0
    assert "is scored with another loss" in capsys.readouterr().out
    assert main(["best", "--study", "ref", "--storage", any_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"][0]["reference"]["comparable"] is False

    # The reference's own test losses, per example, for benchmarks that compare picks on test rows.
    test = reference_test_losses("ref", any_url)
    splits = load(data)
    assert test.shape == (len(splits.x_test),) and np.all(np.isfinite(test)) and test.mean() > 0


def test_the_linear_start_is_the_reference_in_the_spaces_own_terms():
    from gapsweep.search_spaces.loader import load_space
    from gapsweep.sweeps.run.reference import LINEAR_LEARNING_RATE, linear_start

    mlp = load_space("mlp")
    logistic = {"model": "LogisticRegression", "params": {"C": 0.5}}
    # C·Σloss + ½‖w‖² over 100 rows is mean loss + ‖w‖²/(2·C·100): l2 = 0.01.
    start = linear_start(logistic, mlp, 100)
    assert start == {
        "n_layers": 0, "l2": pytest.approx(0.01), "learning_rate": LINEAR_LEARNING_RATE,
        "epochs": mlp.params["epochs"].high,
    }
    ridge = linear_start({"model": "Ridge", "params": {"alpha": 1e-9}}, mlp, 100)
    assert ridge is not None and ridge["l2"] == mlp.params["l2"].low  # clipped into the space
    # Spaces that cannot train a linear model get no linear start.
    assert linear_start(logistic, load_space("cnn"), 100) is None
    deep = load_space({**LINEAR_SPACE, "n_layers": {"type": "int", "low": 1, "high": 3}})
    assert linear_start(logistic, deep, 100) is None
    # A fixed parameter is not Optuna's to set; a value the space cannot take is left to the sampler.
    fixed = load_space({**LINEAR_SPACE, "learning_rate": {"type": "categorical", "choices": [0.0005, 0.01]}})
    assert linear_start(logistic, fixed, 100) == {"n_layers": 0, "l2": pytest.approx(0.01)}


@pytest.mark.slow
def test_a_new_study_tries_the_linear_reference_first(any_url, tiny_space, tmp_path):
    data = DataSpec("wine", train_fraction=0.4)
    space = {**tiny_space, "n_layers": {"type": "int", "low": 0, "high": 2}}
    config = SweepConfig(study="start", space=space, data=data, trials=2, storage=any_url, pruner="none",
                         objective=ObjectiveSettings(keep_models=0))
    launch(config, progress=False)
    first = next(t for t in list_trials("start", any_url) if t.number == 0)
    assert first.params["n_layers"] == 0 and first.attrs["linear_start"] is True
    # It starts from the reference's fit, so its val loss is the reference's, fine-tuned.
    assert first.state == "COMPLETE"
    assert first.attrs["val_loss"] == pytest.approx(study_reference("start", any_url)["val_loss"], rel=0.05)
    # Refit on train + val rows starts from the same weights, so it stays a sound linear model.
    import keras

    export_best("start", tmp_path / "lin.keras", any_url, trial=0, refit=True)
    splits = load(data)
    refit = losses.per_example(splits.task, splits.y_test, keras.models.load_model(tmp_path / "lin.keras").predict(splits.raw_test, verbose=0))
    assert refit.mean() < 1.2 * reference_test_losses("start", any_url).mean()
    # A resume queues nothing more; a study launched without it samples its first trial.
    launch(replace(config, trials=3), progress=False)
    assert sum(bool(t.attrs.get("linear_start")) for t in list_trials("start", any_url)) == 1
    launch(replace(config, study="plain", linear_start=False), progress=False)
    assert not any(t.attrs.get("linear_start") for t in list_trials("plain", any_url))


@pytest.mark.slow
def test_the_linear_weights_make_the_builders_depth_zero_model_the_reference():
    from gapsweep.search_spaces.builder import build_model
    from gapsweep.sweeps.run.reference import _fit, _predict, linear_weights
    from gapsweep.sweeps.trial.trainer import start_from

    for spec in (DataSpec("wine", train_fraction=0.4), DataSpec("breast_cancer"), DataSpec("diabetes")):
        splits = load(spec)
        reference = fit_reference(splits)
        model = build_model({"n_layers": 0, "l2": 1e-3}, splits.task)
        start_from(model, linear_weights(splits, reference))
        (strength,) = reference["params"].values()
        expected = _predict(_fit(splits, strength), splits, splits.x_test)
        np.testing.assert_allclose(model.predict(splits.x_test, verbose=0), expected.reshape(len(expected), -1), rtol=1e-3, atol=1e-4)
    deep = build_model({"n_layers": 1, "units": 8}, splits.task)
    with pytest.raises(ValueError, match="depth-0"):
        start_from(deep, linear_weights(splits, reference))


def test_a_cross_validated_linear_start_starts_each_fold_from_the_reference_fitted_on_its_rows(sqlite_url, tiny_space):
    """Under cv every fold of the linear start begins from the reference fitted on the fold's own
    training rows (never on rows it holds out), so its first epoch is already near the
    reference's val loss rather than an untrained model's; rerun, verify and refit start it
    from the reference fitted on the rows they train on, as without cv."""
    from gapsweep.storage.queries import TrialRecord
    from gapsweep.sweeps.analysis.reproduce import initial_weights

    data = DataSpec("wine", train_fraction=0.4)
    space = {**tiny_space, "n_layers": {"type": "int", "low": 0, "high": 2}}
    config = SweepConfig(study="cv", space=space, data=data, trials=1, storage=sqlite_url, pruner="none",
                         objective=ObjectiveSettings(cv=2, keep_models=0))
    launch(config, progress=False)
    (first,) = list_trials("cv", sqlite_url)
    assert first.attrs["linear_start"] is True
    reference = study_reference("cv", sqlite_url)["val_loss"]
    for fold in (0, 1):
        assert first.attrs[f"curve.fold{fold}.val_loss"][0] < 3 * reference + 0.1  # untrained: about ln 3 = 1.1
    splits = load(data)
    record = TrialRecord(number=0, state="COMPLETE", value=0.1, params={"n_layers": 0}, attrs={"linear_start": True})
    assert initial_weights(config, record, splits) is not None
    other = TrialRecord(number=1, state="COMPLETE", value=0.2, params={"n_layers": 0})
    assert initial_weights(config, other, splits) is None  # not the linear start


def test_the_reference_sentence_names_the_linear_start_when_it_is_the_pick():
    reference = {"model": "Ridge", "params": {"alpha": 1.0}, "val_loss": 0.5}
    assert sentence(reference, 3, 0.4).endswith("trial 3: val loss 0.4000, lower")
    assert "The sweep did not beat the linear reference" in sentence(reference, 3, 0.6)
    line = sentence(reference, 0, 0.6, linear_start=True)
    assert "trial 0 (the linear start: no hidden layer, trained by Keras): val loss 0.6000. The sweep did not beat" in line
    # A trial the user chose (show N, a filtered best) is compared alone: no verdict on the sweep.
    assert sentence(reference, 3, 0.6, whole_sweep=False).endswith("trial 3: val loss 0.6000, higher")
