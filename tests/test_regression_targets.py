"""Regression targets far from zero: trained standardized, stored losses on one scale, and models
that predict in the target's own units."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest

from gapsweep.cli import main
from gapsweep.errors import ConfigError
from gapsweep.storage import trial_keys
from gapsweep.storage.studies import CONFIG_ATTR, REFERENCE_ATTR
from gapsweep.sweeps.data.datasets import DataSpec, load
from gapsweep.sweeps.data.preprocessing import Preprocessing, model_info
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.run.launch import launch
from gapsweep.sweeps.trial.models import model_from_bytes, raw_input_model_bytes
from gapsweep.sweeps.trial.objective import ObjectiveSettings

#: Three epochs of 12 batches: a network fed prices in the hundreds cannot get near them.
SPACE = {
    "n_layers": {"type": "int", "low": 0, "high": 1},
    "units": {"type": "fixed", "value": 16},
    "learning_rate": {"type": "fixed", "value": 0.01},
    "epochs": {"type": "fixed", "value": 3},
    "batch_size": {"type": "fixed", "value": 16},
}


def _prices(path: Path, rows: int = 300, seed: int = 1) -> np.ndarray:
    """A CSV of an id, three features and ``price`` = 500 + 100·x1 − 50·x2 + noise; returns the prices."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    price = 500 + 100 * x[:, 0] - 50 * x[:, 1] + rng.normal(scale=15, size=rows)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "x1", "x2", "x3", "price"])
        writer.writerows([i, *(f"{v:.4f}" for v in row), f"{p:.2f}"] for i, (row, p) in enumerate(zip(x, price)))
    return price


def _stored(url: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=url)


def test_a_sweep_on_prices_learns_them_and_its_models_predict_prices(tmp_path, capsys):
    data, url = tmp_path / "my.csv", f"sqlite:///{tmp_path / 'r.db'}"
    _prices(data)
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    flags = ["--storage", url]
    assert main([
        "launch", "--data", str(data), "--target", "price", "--task", "regression", "--ignore", "id",
        "--space", str(space), "--trials", "2", "--jobs", "1", "--no-progress", "--study", "r", *flags,
    ]) == 0
    said = capsys.readouterr().out
    study = _stored(url, "r")
    reference = study.user_attrs[REFERENCE_ATTR]
    for trial in study.trials:  # every loss on the prior's scale: mean prediction ≈ 1
        attrs = trial.user_attrs
        assert attrs[trial_keys.PRIOR_LOSS] == pytest.approx(reference["prior_loss"], rel=1e-4)
        assert 0.5 < attrs[trial_keys.PRIOR_LOSS] < 2
        assert not attrs[trial_keys.CHANCE_LEVEL]
        assert attrs["val_loss"] < 0.3 * attrs[trial_keys.PRIOR_LOSS]
    assert reference["val_loss"] < 0.1 < reference["prior_loss"]
    assert "targets standardized: losses are in units of the training targets' variance" in said

    out, new_rows = tmp_path / "model.keras", tmp_path / "new.csv"
    truth = _prices(new_rows, rows=40, seed=7)
    assert main(["export", "r", "--out", str(out), *flags]) == 0
    model = keras.models.load_model(out)  # Keras alone
    rows = list(csv.DictReader(new_rows.open()))
    columns = {name: np.array([float(row[name]) for row in rows], dtype="float32") for name in ("x1", "x2", "x3")}
    predicted = model.predict(columns, verbose=0).ravel()
    assert np.sqrt(np.mean((predicted - truth) ** 2)) < 0.5 * truth.std()
    assert abs(predicted.mean() - truth.mean()) < 0.25 * truth.std()
    assert model_info(out)["target_mean"] == [pytest.approx(500, abs=30)]
    for how in (["--ensemble", "2"], ["--refit"]):  # averaged and retrained models end in the same layer
        other = tmp_path / f"{how[0][2:]}.keras"
        assert main(["export", "r", *how, "--out", str(other), *flags]) == 0
        again = keras.models.load_model(other).predict(columns, verbose=0).ravel()
        assert np.sqrt(np.mean((again - truth) ** 2)) < 0.5 * truth.std()

    written = tmp_path / "predictions.csv"
    assert main(["predict", "r", "--data", str(new_rows), "--out", str(written), *flags]) == 0
    printed = np.array([float(row["predicted"]) for row in csv.DictReader(written.open())])
    np.testing.assert_allclose(printed, predicted, rtol=1e-5)


def test_targets_round_trip_through_the_raw_input_model(tmp_path):
    """An inner model that outputs its standardized input gives back the raw value: the model's
    last layer undoes ``scale_target`` exactly, and loads in safe mode."""
    y = np.array([300.0, 450.0, 800.0, 610.0], dtype="float32")
    preprocessing = Preprocessing.fit(y[:, None], task="regression", classes=(), target=None, y=y)
    np.testing.assert_allclose(preprocessing.scale_target(y), preprocessing.apply(y[:, None])[:, 0], rtol=1e-6)
    inputs = keras.Input(shape=(1,))
    identity = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros")
    model = model_from_bytes(raw_input_model_bytes(keras.Model(inputs, identity(inputs)), preprocessing), compile=False)
    np.testing.assert_allclose(model.predict(y[:, None], verbose=0)[:, 0], y, rtol=1e-5)


def test_a_study_stored_before_targets_were_scaled_still_exports_in_its_units(tmp_path):
    """Its stored configuration has no ``scale_target``: it is read as unscaled (scale 1, offset
    0), so its ensembles judge and average the stored models as they were trained, and a resumed
    launch that would mix units is refused."""
    data, url = tmp_path / "my.csv", f"sqlite:///{tmp_path / 'old.db'}"
    _prices(data, rows=120)
    spec = DataSpec(str(data), target="price", ignore=("id",), scale_target=False)
    config = SweepConfig(
        study="old", space={**SPACE, "n_layers": {"type": "fixed", "value": 0}}, data=spec, trials=2, storage=url,
        pruner="none", objective=ObjectiveSettings(keep_models=2),
    )
    launch(config, progress=False)
    study = _stored(url, "old")
    stored = study.user_attrs[CONFIG_ATTR]
    study.set_user_attr(CONFIG_ATTR, {**stored, "data": {k: v for k, v in stored["data"].items() if k != "scale_target"}})
    assert load(spec).preprocessing.target_mean is None

    out = tmp_path / "ensemble.keras"
    assert main(["export", "old", "--ensemble", "2", "--out", str(out), "--storage", url]) == 0
    info = model_info(out)
    assert "target_mean" not in info
    model = keras.models.load_model(out)
    assert "gapsweep_target_units" not in [layer.name for layer in model.layers]
    with pytest.raises(ConfigError, match="data.scale_target = false"):
        launch(SweepConfig(study="old", space=config.space, data=DataSpec(str(data), target="price", ignore=("id",)),
                           trials=1, storage=url), progress=False)
