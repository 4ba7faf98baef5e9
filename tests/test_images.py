"""Images: digits as 8×8×1, the built-in cnn space, and KerasTuner image hypermodels, unflattened."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gapsweep.cli import main
from gapsweep.sweeps.data.datasets import DataSpec, load
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.run.launch import launch
from gapsweep.sweeps.trial.objective import ObjectiveSettings

PROJECT = Path(__file__).resolve().parents[1]
TINY_CNN = {
    "conv_blocks": {"type": "int", "low": 1, "high": 2},
    "filters": {"type": "int", "low": 4, "high": 8},
    "units": {"type": "fixed", "value": 16},
    "n_layers": {"type": "fixed", "value": 1},
    "learning_rate": {"type": "float", "low": 3e-3, "high": 1e-2, "log": True},
    "epochs": {"type": "fixed", "value": 4},
    "batch_size": {"type": "fixed", "value": 64},
}


def test_arrays_keep_their_shape():
    images = load(DataSpec("digits-images"))
    assert images.x_train.shape[1:] == (8, 8, 1) and images.task.input_shape == (8, 8, 1)
    assert images.task.n_features == 64 and images.raw_test.shape[1:] == (8, 8, 1)
    assert float(images.raw_test.max()) == 16.0  # raw pixels; the trainer sees them standardized
    assert load(DataSpec("digits")).task.shape == (64,)


def test_the_cnn_space_refuses_a_table_before_anything_is_written(tmp_path: Path, capsys):
    db = tmp_path / "s.db"
    assert main(["launch", "--study", "c", "--space", "cnn", "--data", "wine", "--storage", f"sqlite:///{db}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "conv_blocks needs image data" in err and "(13,)" in err and "\n" not in err
    assert not db.exists()


@pytest.mark.slow
def test_a_cnn_sweep_on_digit_images_prunes_exports_and_predicts_raw_images(sqlite_url, tmp_path, capsys):
    import keras

    data = DataSpec("digits-images", train_fraction=0.3)
    launch(
        SweepConfig(study="cnn", space=TINY_CNN, data=data, trials=5, storage=sqlite_url, pruner="median",
                    objective=ObjectiveSettings(keep_models=1)),
        progress=False,
    )
    from gapsweep.api import list_trials

    assert {t.state for t in list_trials("cnn", sqlite_url)} <= {"COMPLETE", "PRUNED"}
    out = tmp_path / "cnn.keras"
    capsys.readouterr()
    assert main(["export", "cnn", "--out", str(out), "--storage", sqlite_url, "--json"]) == 0
    recorded = json.loads(capsys.readouterr().out)
    model = keras.models.load_model(out)
    assert any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers[-1].layers)
    splits = load(data)
    accuracy = float(np.mean(np.argmax(model.predict(splits.raw_test, verbose=0), axis=1) == splits.y_test))
    assert accuracy == pytest.approx(recorded["test_accuracy"], abs=1e-6) and accuracy > 0.5
    np.savez(tmp_path / "new.npz", x=splits.raw_test[:7])
    assert main(["predict", "--model", str(out), "--data", str(tmp_path / "new.npz"), "--out", str(tmp_path / "p.csv")]) == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["predicted", "p_0", "p_1"] and len(lines) == 8


@pytest.mark.slow
def test_a_keras_tuner_conv2d_hypermodel_gets_unflattened_images(sqlite_url):
    study = launch(
        SweepConfig(
            study="kt-images", hypermodel=f"{PROJECT / 'examples' / 'keras_tuner_models.py'}:build_image_model",
            code_dir=str(PROJECT), max_epochs=2, data=DataSpec("digits-images", train_fraction=0.3),
            trials=2, pruner="none", storage=sqlite_url,
        ),
        progress=False,
    )
    assert all(t.state.name == "COMPLETE" for t in study.trials) and len(study.trials) == 2
    from gapsweep.sweeps.analysis.export import load_best_model

    assert load_best_model("kt-images", sqlite_url).input_shape == (None, 8, 8, 1)
