"""KerasTuner hypermodels under gapsweep: hp sampled by Optuna, unsupported features as one line,
and the documentation-style examples run as stored, resumable studies on digits."""

from __future__ import annotations

import math

import json
import statistics
from pathlib import Path
from typing import Any, Callable

import keras
import keras_tuner as kt
import numpy as np
import optuna
import pytest

from gapsweep.api import best_trials, list_trials
from gapsweep.errors import ConfigError, DataError, SpaceError
from gapsweep.search_spaces.builder import TaskSpec
from gapsweep.search_spaces.keras_tuner import TrialHyperParameters, importable_ref, load
from gapsweep.search_spaces.loader import python_object
from gapsweep.storage.studies import CONFIG_ATTR
from gapsweep.cli import main
from gapsweep.sweeps.run.config import SweepConfig, load_sweep_file
from gapsweep.sweeps.data.datasets import DataSpec
from gapsweep.sweeps.run.launch import launch

PROJECT = Path(__file__).resolve().parents[1]
EXAMPLES = PROJECT / "examples" / "keras_tuner_models.py"
DIGITS = TaskSpec(n_features=64, task="classification", n_classes=10)


def _ask(seed: int = 0) -> optuna.trial.Trial:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()


def _example(name: str) -> Any:
    return python_object(f"{EXAMPLES}:{name}", "hypermodel")


def declare_everything(hp: Any) -> None:
    """Every kind of declaration a KerasTuner build function makes, without building a model."""
    hp.Int("int_step", 3, 20, step=4)
    hp.Int("int_log", 1, 1000, sampling="log")
    hp.Int("int_log_step", 2, 40, step=2, sampling="log")
    hp.Float("float_step", 0.0, 0.55, step=0.1)
    hp.Float("float_log", 1e-5, 1e-1, sampling="log")
    hp.Float("float_log_step", 0.001, 10, step=10, sampling="log")
    activation = hp.Choice("activation", ["relu", "tanh"])
    hp.Fixed("fixed", 7)
    model_type = hp.Choice("model_type", ["deep", "wide"])
    with hp.conditional_scope("model_type", ["deep"]):
        if model_type == "deep":
            for i in range(hp.Int("num_layers", 1, 3)):
                with hp.conditional_scope("num_layers", list(range(i + 1, 4))):
                    hp.Int(f"units_{i}", 8, 64, step=8)
    with hp.conditional_scope("model_type", ["wide"]):
        hp.Int("wide_units", 64, 256)  # runs in every trial, as in KerasTuner: None when inactive
    if hp.Boolean("dropout"):
        hp.Float("dropout_rate", 0.1, 0.5, parent_name="dropout", parent_values=[True])
    with hp.name_scope("block"):
        hp.Int("depth", 1, 2)
    assert hp.Choice("activation", ["relu", "tanh"]) == activation  # declared again in a loop: one value


@pytest.fixture(scope="module")
def sampled() -> list[dict[str, Any]]:
    """300 random trials of ``declare_everything``: params, hp.values, distributions, fixed values."""
    rows: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        hp = TrialHyperParameters(trial)
        declare_everything(hp)
        rows.append(
            {"params": trial.params, "values": dict(hp.values), "dists": trial.distributions, "fixed": dict(hp.fixed)}
        )
        return 0.0

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=300)
    return rows


def test_sampled_values_respect_every_bound_step_and_scale(sampled):
    column = lambda name: [row["params"][name] for row in sampled]  # noqa: E731
    assert set(column("int_step")) == {3, 7, 11, 15, 19}  # KerasTuner's values for 3..20 step 4
    assert set(column("int_log_step")) == {2, 4, 8, 16, 32}  # log with a step multiplies
    assert {round(v, 9) for v in column("float_step")} == {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}
    assert {round(v, 12) for v in column("float_log_step")} == {0.001, 0.01, 0.1, 1.0, 10.0}
    assert all(1 <= v <= 1000 and isinstance(v, int) for v in column("int_log"))
    assert all(1e-5 <= v <= 1e-1 for v in column("float_log"))
    assert set(column("activation")) == {"relu", "tanh"} and set(column("dropout")) == {False, True}
    # Log sampling: Optuna is told so, and the median sits near the geometric middle, not the linear one.
    first = sampled[0]["dists"]
    assert first["int_log"].log and first["float_log"].log and not first["int_step"].log
    assert statistics.median(column("int_log")) < 150  # linear would give ~500
    assert statistics.median(column("float_log")) < 1e-2  # linear would give ~0.05
    assert all(row["params"]["block/depth"] in (1, 2) for row in sampled)  # name_scope prefixes the name


def test_conditional_parameters_appear_only_when_their_parent_allows(sampled):
    deep = [row for row in sampled if row["params"]["model_type"] == "deep"]
    assert 0 < len(deep) < len(sampled)
    for row in sampled:
        params = row["params"]
        layers = params.get("num_layers", 0)
        assert ("num_layers" in params) == (params["model_type"] == "deep")
        for i in range(3):
            assert (f"units_{i}" in params) == (i < layers)
            if i < layers:
                assert params[f"units_{i}"] in range(8, 65, 8)
        assert ("wide_units" in params) == (params["model_type"] == "wide")
        assert ("dropout_rate" in params) == params["dropout"]
        assert 0.1 <= params.get("dropout_rate", 0.1) <= 0.5
        # hp.values is KerasTuner's: the active values, the Fixed one included; it is recorded apart.
        assert row["values"] == {**params, "fixed": 7}
        assert row["fixed"] == {"fixed": 7} and "fixed" not in params
    assert {row["params"]["num_layers"] for row in deep} == {1, 2, 3}


def test_without_a_trial_hp_answers_kerastuners_defaults():
    hp = TrialHyperParameters(None)
    assert hp.Int("units", 16, 128, step=16) == 16
    assert hp.Int("layers", 1, 4, default=3) == 3
    assert hp.Float("lr", 1e-4, 1e-2, sampling="log") == pytest.approx(1e-4)
    assert hp.Choice("activation", ["relu", "tanh"]) == "relu"
    assert hp.Choice("optimizer", ["adam", "sgd"], default="sgd") == "sgd"
    assert hp.Boolean("dropout") is False
    with hp.conditional_scope("dropout", [True]):
        assert hp.Float("rate", 0.1, 0.5) is None
    assert hp.values == {
        "units": 16, "layers": 3, "lr": pytest.approx(1e-4), "activation": "relu", "optimizer": "sgd", "dropout": False,
    }
    assert "rate" not in hp and hp["units"] == 16


def _inactive_get(hp: Any) -> None:
    kind = hp.Choice("kind", ["a", "b"])
    with hp.conditional_scope("kind", ["b" if kind == "a" else "a"]):
        hp.Int("n", 1, 2)
    hp.get("n")


def _float_parent(hp: Any) -> None:
    hp.Float("rate", 0.0, 1.0)
    with hp.conditional_scope("rate", [0.5]):
        hp.Int("n", 1, 2)


def _impossible_parent_value(hp: Any) -> None:
    hp.Choice("model_type", ["mlp", "cnn"])
    with hp.conditional_scope("model_type", ["rnn"]):
        hp.Int("n", 1, 2)


def _undeclared_parent(hp: Any) -> None:
    with hp.conditional_scope("model_type", ["mlp"]):
        hp.Int("n", 1, 2)


def _twice(hp: Any) -> None:
    hp.Int("units", 1, 4)
    hp.Int("units", 8, 16)


@pytest.mark.parametrize(
    ("declare", "fragment"),
    [
        (lambda hp: hp.Int("units", 8, 64, sampling="reverse_log"), "sampling='reverse_log') is not supported"),
        (lambda hp: hp.Float("lr", 1e-4, 1e-2, sampling="reverse_log"), "sampling='reverse_log') is not supported"),
        (lambda hp: hp.merge(kt.HyperParameters()), "hp.merge is a KerasTuner feature gapsweep does not support"),
        (lambda hp: hp.copy(), "hp.copy is a KerasTuner feature"),
        (lambda hp: hp.get("units"), "no hyperparameter named 'units'"),
        (_inactive_get, "'n' is inactive in this trial"),
        (_float_parent, "on a Float parent is not supported"),
        (_impossible_parent_value, "['rnn'] can never be a value of 'model_type'"),
        (_undeclared_parent, "no hyperparameter named 'model_type' is declared before the scope"),
        (_twice, "declared twice in one trial with different settings"),
        (lambda hp: hp.Int("units", 64, 8), "min_value 64 is greater than the max_value 8"),
        (lambda hp: hp.Choice("mixed", [1, "a"]), "only one type of value"),
        (lambda hp: hp.Float("lr", 0.0, 1.0, sampling="log"), "does not support negative values"),
    ],
)
def test_unsupported_or_wrong_hp_use_is_one_space_error(declare: Callable[[Any], Any], fragment: str):
    with pytest.raises(SpaceError) as error:
        declare(TrialHyperParameters(_ask()))
    assert fragment in str(error.value) and "\n" not in str(error.value)


def tiny_build(hp: Any) -> keras.Model:
    """A module-level build function (workers can import it) with a small compiled model."""
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(hp.Int("units", 4, 8), activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


class Tiny(kt.HyperModel):
    def build(self, hp: Any) -> keras.Model:
        return tiny_build(hp)


class TunesBatchAndEpochs(Tiny):
    def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        batch_size, epochs = hp.Int("batch_size", 16, 64, step=16), hp.Int("epochs", 2, 8)
        return model.fit(*args, batch_size=batch_size, epochs=epochs, verbose=0, **kwargs)


class Evaluates(Tiny):
    def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        model.fit(*args, **kwargs)
        return model.evaluate(*args)


class AddsCallbacks(Tiny):
    def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        return model.fit(*args, callbacks=[keras.callbacks.EarlyStopping(patience=2)], **kwargs)


class SplitsItsOwnValidation(Tiny):
    def fit(self, hp: Any, model: Any, x: Any, y: Any, **kwargs: Any) -> Any:
        return model.fit(x, y, validation_split=0.2)


class TunesPreprocessing(Tiny):
    """KerasTuner's documentation example for tuning the data pipeline in fit."""

    def fit(self, hp: Any, model: Any, x: Any, y: Any, **kwargs: Any) -> Any:
        if hp.Boolean("normalize"):
            x = keras.layers.Normalization()(x)
        return model.fit(x, y, shuffle=hp.Boolean("shuffle"), **kwargs)


class ChangesTheData(Tiny):
    def fit(self, hp: Any, model: Any, x: Any, y: Any, **kwargs: Any) -> Any:
        return model.fit(np.asarray(x), y, **kwargs)


class FitsTwice(Tiny):
    def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        model.fit(*args, epochs=1, **kwargs)
        return model.fit(*args, **kwargs)


class OwnObjective(Tiny):
    def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        return min(model.fit(*args, **kwargs).history["val_loss"])


def _uncompiled(hp: Any) -> keras.Model:
    return keras.Sequential([keras.layers.Dense(hp.Int("units", 4, 8))])


@pytest.mark.slow  # builds and evaluates a Keras model
@pytest.mark.parametrize(
    ("hypermodel", "fragment"),
    [
        (kt.HyperParameters(), "predefined KerasTuner HyperParameters space"),
        (42, "must be a build function build(hp) returning a compiled keras.Model, or a KerasTuner HyperModel; got int"),
        (Tiny(tunable=False), "HyperModel(tunable=False) is not supported"),
        (_uncompiled, "returned a model that is not compiled"),
        (lambda hp: "a model", "build(hp) must return a keras.Model, got str"),
        (Evaluates(), "HyperModel.fit uses model.evaluate"),
        (AddsCallbacks(), "model.fit(callbacks=...), which gapsweep does not support"),
        (SplitsItsOwnValidation(), "model.fit(validation_split=...)"),
        (TunesPreprocessing(), "model.fit(shuffle=...)"),
        (ChangesTheData(), "changes the x it passes to model.fit"),
        (FitsTwice(), "called model.fit 2 times"),
        (OwnObjective(), "reads the History that model.fit returns (.history)"),
    ],
)
def test_unsupported_hypermodels_fail_at_the_check_with_one_line(hypermodel: Any, fragment: str):
    with pytest.raises(SpaceError) as error:
        load(hypermodel, max_epochs=4).check(np.zeros((4, 64), "float32"), np.zeros(4, "int64"), DIGITS)
    assert fragment in str(error.value) and "\n" not in str(error.value)


DIGITS = TaskSpec(n_features=64, task="classification", n_classes=10)


@pytest.mark.parametrize("name", ["build_model", "build_conditional_model", "MyHyperModel"])
def test_the_examples_pass_the_check_though_their_models_know_no_output_shape_before_a_call(name: str):
    """Sequential models without an Input are built by their first call: the width check asks one row."""
    from gapsweep.sweeps.data.datasets import load as load_data

    digits = load_data(DataSpec("digits"))
    load(_example(name), max_epochs=3).check(digits.x_train[:16], digits.y_train[:16], digits.task)


@pytest.mark.parametrize(
    "task, fragment",
    [
        (TaskSpec(n_features=64, task="classification", n_classes=12), "10 output unit(s), but the data is a classification with 12 classes that needs 12 (one per class)"),
        (TaskSpec(n_features=64, task="regression", n_outputs=1), "10 output unit(s), but the data is a regression that needs 1 (one per target)"),
    ],
)
def test_a_hypermodel_whose_outputs_do_not_fit_the_task_is_refused_before_any_trial(task: TaskSpec, fragment: str):
    """A few check rows may not hold the classes a too narrow output misses: the width is checked itself."""
    with pytest.raises(DataError) as error:
        load(tiny_build, max_epochs=4).check(np.zeros((4, 64), "float32"), np.zeros(4, "int64"), task)
    assert fragment in str(error.value) and "\n" not in str(error.value)
    load(tiny_build, max_epochs=4).check(np.zeros((4, 64), "float32"), np.zeros(4, "int64"), DIGITS)  # fits


def test_a_kerastuner_tuner_is_refused_with_a_pointer_to_its_hypermodel(tmp_path: Path):
    tuner = kt.RandomSearch(tiny_build, objective="val_loss", max_trials=1, directory=str(tmp_path), project_name="p")
    with pytest.raises(SpaceError, match="is a KerasTuner RandomSearch: gapsweep runs an Optuna study instead"):
        load(tuner, max_epochs=4)
    with pytest.raises(SpaceError, match="is a KerasTuner Oracle"):
        load(kt.Oracle(objective="val_loss", max_trials=1), max_epochs=4)


def test_a_fit_override_sets_the_trials_batch_size_and_epochs_capped_by_max_epochs():
    adapter = load(TunesBatchAndEpochs(), max_epochs=5)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        _, fit = adapter.build(trial, DIGITS)
        assert fit.batch_size == trial.params["batch_size"] in (16, 32, 48, 64)
        assert fit.epochs == min(trial.params["epochs"], 5)
        seen.add(fit.epochs)
        study.tell(trial, 0.0)
    assert 5 in seen and min(seen) < 5
    _, plain = load(tiny_build, max_epochs=7).build(_ask(), DIGITS)
    assert (plain.epochs, plain.batch_size) == (7, 32)


def test_the_documentation_style_examples_sample_within_their_declarations():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    conditional = load(_example("build_conditional_model"), max_epochs=4)
    plain = load(_example("build_model"), max_epochs=4)
    subclass = load(_example("MyHyperModel"), max_epochs=4)
    kinds = set()
    for _ in range(24):
        trial = study.ask()
        conditional.build(trial, DIGITS)
        params = trial.params
        kinds.add(params["model_type"])
        if params["model_type"] == "deep":
            assert {f"units_{i}" for i in range(params["num_layers"])} == {k for k in params if k.startswith("units_")}
            assert all(params[f"units_{i}"] in (16, 32, 48, 64) for i in range(params["num_layers"]))
            assert not {"wide_units", "dropout", "dropout_rate"} & set(params)
        else:
            assert params["wide_units"] in (32, 64, 128, 256) and "num_layers" not in params
            assert ("dropout_rate" in params) == params["dropout"]
        assert 1e-4 <= params["learning_rate"] <= 1e-2
        study.tell(trial, 0.0)
    assert kinds == {"deep", "wide"}
    trial = _ask(3)
    model, fit = plain.build(trial, DIGITS)
    assert model.compiled and trial.params["units"] in range(16, 129, 16) and 1e-6 <= trial.params["l2"] <= 1e-2
    trial = _ask(4)
    _, fit = subclass.build(trial, DIGITS)
    assert fit.batch_size == trial.params["batch_size"] in (16, 32, 64) and fit.epochs == 4


def test_a_study_stores_where_workers_find_its_hypermodel(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent.parent)  # the project folder: paths are stored relative to it
    relative = load("examples/keras_tuner_models.py:build_model", max_epochs=3)
    assert relative.describe() == {"hypermodel": "examples/keras_tuner_models.py:build_model"}
    assert load(f"{EXAMPLES}:build_model", max_epochs=3).describe() == relative.describe()
    assert importable_ref(tiny_build) == "tests/test_keras_tuner.py:tiny_build"
    assert importable_ref(_example("build_model")) == "examples/keras_tuner_models.py:build_model"
    unreachable = importable_ref(Tiny())  # an instance no module-level name holds
    assert unreachable.startswith("<Tiny is not") and "workers cannot import it" in unreachable
    with pytest.raises(ConfigError, match="this study's hypermodel cannot be imported here \\(Tiny is not a module-level name of a .py file\\), and a worker, a refit"):
        SweepConfig.from_dict({"hypermodel": unreachable})  # what a worker, a refit or rerun would read back
    with pytest.raises(SpaceError, match="file not found"):
        load("missing.py:build_model", max_epochs=3)
    monkeypatch.chdir(tmp_path)  # a module outside the project folder: launch runs it, workers cannot
    outside = importable_ref(_example("build_model"))
    assert outside.startswith("<build_model is defined in") and "outside the project folder" in outside
    with pytest.raises(ConfigError, match="leads outside the project folder"):
        load(f"{EXAMPLES}:build_model", max_epochs=3)


def binary_build(hp: Any) -> keras.Model:
    """Keras' usual binary classifier: one sigmoid unit and binary cross-entropy on 0/1 labels."""
    model = keras.Sequential(
        [keras.Input((30,)), keras.layers.Dense(hp.Int("units", 4, 8), activation="relu"), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def test_a_one_unit_sigmoid_classifier_trains_and_is_scored(sqlite_url):
    launch(SweepConfig(study="binary", hypermodel=binary_build, max_epochs=2, data=DataSpec("breast_cancer"), trials=1,
                       storage=sqlite_url, pruner="none"), progress=False)
    (trial,) = list_trials("binary", sqlite_url)
    assert trial.state == "COMPLETE" and 0 < trial.attrs["val_loss"] < 5 and 0 <= trial.attrs["val_accuracy"] <= 1


def test_a_build_function_of_the_running_script_is_never_stored_for_workers_to_import(tmp_path: Path):
    """Importing the script would run it again (a launch(jobs=2) in it started jobs without end)."""
    import subprocess
    import sys

    script = tmp_path / "sweep.py"
    script.write_text(
        "import keras\n"
        "from gapsweep import DataSpec, SweepConfig, launch\n"
        "def build(hp):\n"
        "    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation='softmax')])\n"
        "    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy')\n"
        "    return model\n"
        f"launch(SweepConfig(study='s', hypermodel=build, max_epochs=2, data=DataSpec('digits'), trials=2,\n"
        f"                   storage='sqlite:///{tmp_path / 's.db'}'), jobs=2)\n"
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "ConfigError: jobs=2 starts job processes that import the hypermodel, but build is defined in the script being run" in done.stderr
    assert not (tmp_path / "s.db").exists()


def test_sweep_config_reads_stores_and_checks_a_hypermodel(tmp_path: Path):
    sweep = tmp_path / "sweeps" / "kt.toml"
    sweep.parent.mkdir()
    (sweep.parent / "models").mkdir()
    (sweep.parent / "models" / "kt.py").write_text("def build_model(hp):\n    pass\n")
    sweep.write_text('study = "kt"\nhypermodel = "models/kt.py:build_model"\nmax_epochs = 6\n')
    config = load_sweep_file(sweep)
    assert config.hypermodel == "models/kt.py:build_model" and config.code_dir == str(sweep.parent)
    assert config.code().file == sweep.parent / "models" / "kt.py"  # relative to the file, not the current folder
    stored = config.to_dict()
    assert stored["space"] is None and stored["max_epochs"] == 6 and "code_dir" not in stored
    restored = SweepConfig.from_dict(json.loads(json.dumps(stored)))  # a worker's round trip
    assert restored.override(code_dir=str(sweep.parent)) == config
    sweep.write_text('study = "kt"\nhypermodel = "../models.py:build_model"\n')
    with pytest.raises(ConfigError, match="leads outside the project folder"):
        load_sweep_file(sweep).code()  # the sweep file's folder is the project folder
    sweep.write_text('study = "kt"\nhypermodel = "models/kt.py:build_model"\ncode_dir = "/"\n')
    with pytest.raises(ConfigError, match="unknown sweep setting.*code_dir"):
        load_sweep_file(sweep)  # each machine names its own project folder
    sweep.write_text('study = "kt"\nspace = "mlp"\nhypermodel = "models.py:build_model"\n')
    with pytest.raises(ConfigError, match="either a space or a hypermodel"):
        load_sweep_file(sweep)
    with pytest.raises(ConfigError, match="max_epochs must be a whole number >= 1"):
        SweepConfig(hypermodel="m.py:f", max_epochs=0)
    with pytest.raises(ConfigError, match="hypermodel must be 'path/to/module.py:NAME'"):
        SweepConfig(hypermodel="build_model")


def _fails(argv: list[str], capsys, fragment: str) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("gapsweep: error: ") and "\n" not in err, err
    assert fragment in err, err


@pytest.mark.slow  # builds and evaluates a Keras model
def test_cli_hypermodel_mistakes_are_one_line_and_write_nothing(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "out.db"
    url = f"sqlite:///{db}"
    models = tmp_path / "models.py"
    models.write_text(
        "import keras\n\n"
        "def reverse(hp):\n"
        "    hp.Int('units', 8, 64, sampling='reverse_log')\n\n"
        "def merges(hp):\n"
        "    hp.merge(None)\n\n"
        "def uncompiled(hp):\n"
        "    return keras.Sequential([keras.layers.Dense(hp.Int('units', 4, 8))])\n\n"
        "def compiled(inputs, classes):\n"
        "    model = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(classes, activation='softmax')])\n"
        "    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy')\n"
        "    return model\n\n"
        "def for_mnist(hp):\n"
        "    return compiled(784, 10)\n\n"
        "def three_classes(hp):\n"
        "    return compiled(64, 3)\n\n"
        "def raises(hp):\n"
        "    raise ValueError('my bug in build')\n\n"
        "def two_args(hp, extra):\n"
        "    return compiled(64, 10)\n"
    )
    (tmp_path / "broken.py").write_text("def build(hp)\n    return None\n")
    (tmp_path / "imports.py").write_text("import nonexistent_module_xyz\n")
    _fails(["launch", "--hypermodel", "models.py:reverse", "--storage", url], capsys, "sampling='reverse_log') is not")
    _fails(["launch", "--hypermodel", "models.py:merges", "--storage", url], capsys, "hp.merge is a KerasTuner feature")
    _fails(["launch", "--hypermodel", "models.py:uncompiled", "--storage", url], capsys, "not compiled")
    # A model written for other data: named before anything is written, not in every trial's traceback.
    _fails(["launch", "--hypermodel", "models.py:for_mnist", "--storage", url], capsys, "expected axis -1 of input shape to have value 784")
    _fails(["launch", "--hypermodel", "models.py:three_classes", "--storage", url], capsys,
           "has 3 output unit(s), but the data is a classification with 10 classes that needs 10 (one per class)")
    _fails(["launch", "--hypermodel", "models.py:raises", "--storage", url], capsys,
           "models.py:raises: build(hp) raised ValueError: my bug in build (models.py line 24) with KerasTuner's default values")
    _fails(["launch", "--hypermodel", "models.py:two_args", "--storage", url], capsys,
           "build(hp) raised TypeError: two_args() missing 1 required positional argument: 'extra'")
    _fails(["launch", "--hypermodel", "broken.py:build", "--storage", url], capsys, "broken.py line 1: SyntaxError: expected ':'")
    _fails(["launch", "--hypermodel", "imports.py:build", "--storage", url], capsys,
           "raised ModuleNotFoundError: No module named 'nonexistent_module_xyz'")
    _fails(["launch", "--hypermodel", "models.py:missing", "--storage", url], capsys, "has no attribute 'missing'")
    _fails(["launch", "--hypermodel", "nowhere.py:build", "--storage", url], capsys, f"file not found: {tmp_path.resolve()}/nowhere.py")
    _fails(["launch", "--hypermodel", "../models.py:build", "--storage", url], capsys, "leads outside the project folder")
    _fails(["launch", "--hypermodel", "models", "--storage", url], capsys, "hypermodel must be 'path/to/module.py:NAME'")
    _fails(["launch", "--hypermodel", "models.py:reverse", "--space", "mlp", "--storage", url], capsys, "give one of them")
    _fails(["launch", "--hypermodel", "models.py:reverse", "--max-epochs", "0", "--storage", url], capsys, "max_epochs")
    assert not db.exists()


@pytest.mark.slow
def test_a_plain_build_function_runs_as_a_stored_queryable_study(sqlite_url):
    config = SweepConfig(
        study="kt-plain", hypermodel=f"{EXAMPLES}:build_model", code_dir=str(PROJECT), max_epochs=3, data=DataSpec("digits", train_fraction=0.3),
        trials=3, pruner="none", storage=sqlite_url,
    )
    study = launch(config, progress=False)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert study.user_attrs[CONFIG_ATTR]["hypermodel"] == "examples/keras_tuner_models.py:build_model"
    best = best_trials("kt-plain", sqlite_url, k=3)
    assert len(best) == 3 and best[0].number == study.best_trial.number
    for record in best:
        params = record.params
        assert set(params) <= {"units", "activation", "l2", "dropout", "lr"} and {"units", "lr"} <= set(params)
        assert params["units"] in range(16, 129, 16) and params["activation"] in ("relu", "tanh")
        assert 1e-6 <= params["l2"] <= 1e-2 and 1e-4 <= params["lr"] <= 1e-2
        attrs = record.attrs
        assert attrs["epochs_run"] <= 3 and len(attrs["curve.val_loss"]) == attrs["epochs_run"]
        # The bounded default, with the SE and the prior measured through the user's own compiled loss.
        assert attrs["raw_penalty"] == pytest.approx(max(0.0, attrs["val_loss"] - attrs["train_loss"]))
        assert attrs["applied_penalty"] == pytest.approx(min(attrs["raw_penalty"], attrs["kappa"] * attrs["val_se"]))
        assert attrs["score"] == pytest.approx(attrs["val_loss"] + attrs["applied_penalty"])
        assert attrs["prior_loss"] == pytest.approx(math.log(10), rel=0.05) and attrs["chance_level"] is False
    # The same study resumes to a larger budget; another hypermodel under its name is refused.
    launch(config.override(trials=4), progress=False)
    assert len(list_trials("kt-plain", sqlite_url)) == 4
    with pytest.raises(ConfigError, match="different hypermodel"):
        launch(config.override(hypermodel=f"{EXAMPLES}:build_conditional_model", trials=5), progress=False)
    with pytest.raises(ConfigError, match="different search space"):
        launch(SweepConfig(study="kt-plain", space="mlp", trials=5, storage=sqlite_url), progress=False)


@pytest.mark.slow
def test_conditional_layers_run_with_median_pruning_and_record_only_active_params(sqlite_url):
    study = launch(
        SweepConfig(
            study="kt-conditional", hypermodel=f"{EXAMPLES}:build_conditional_model", code_dir=str(PROJECT), max_epochs=4,
            data=DataSpec("digits", train_fraction=0.3), trials=4, pruner="median", seed=0,
            storage=sqlite_url,
        ),
        progress=False,
    )
    trials = list_trials("kt-conditional", sqlite_url)
    assert len(trials) == 4 and all(t.state in ("COMPLETE", "PRUNED") for t in trials)
    assert {t.params["model_type"] for t in trials} == {"deep", "wide"}
    for record in trials:
        params = record.params
        if params["model_type"] == "deep":
            assert {k for k in params if k.startswith("units_")} == {f"units_{i}" for i in range(params["num_layers"])}
            assert "wide_units" not in params
        else:
            assert params["wide_units"] in (32, 64, 128, 256) and "num_layers" not in params
    assert best_trials("kt-conditional", sqlite_url)[0].number == study.best_trial.number


@pytest.mark.slow
def test_a_hypermodel_subclass_with_a_custom_fit_tunes_the_batch_size(sqlite_url, monkeypatch):
    monkeypatch.chdir(PROJECT)  # an object's module is stored relative to the current folder
    hypermodel = _example("MyHyperModel")  # the class itself; gapsweep instantiates it
    study = launch(
        SweepConfig(
            study="kt-fit", hypermodel=hypermodel, max_epochs=3, data=DataSpec("digits", train_fraction=0.3),
            trials=3, pruner="none", sampler="random", storage=sqlite_url,
        ),
        progress=False,
    )
    assert study.user_attrs[CONFIG_ATTR]["hypermodel"] == "examples/keras_tuner_models.py:MyHyperModel"  # given as an object
    records = best_trials("kt-fit", sqlite_url, k=3)
    assert len(records) == 3
    assert all(r.params["batch_size"] in (16, 32, 64) and r.params["units"] in (16, 32, 48, 64) for r in records)
    assert len({r.params["batch_size"] for r in records}) > 1
    assert all(r.attrs["epochs_run"] <= 3 for r in records)


@pytest.mark.slow
def test_cli_creates_a_hypermodel_study_that_a_worker_runs(tmp_path: Path, sqlite_url, capsys, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent.parent)
    launch_args = [
        "launch", "--study", "kt-cli", "--hypermodel", "examples/keras_tuner_models.py:build_model", "--data", "digits",
        "--train-fraction", "0.3", "--trials", "2", "--max-epochs", "2", "--pruner", "none", "--storage", sqlite_url,
    ]
    assert main([*launch_args, "--create-only"]) == 0
    monkeypatch.chdir(tmp_path)  # the worker finds the hypermodel in the project folder it is given
    worker = ["worker", "--study", "kt-cli", "--storage", sqlite_url, "--no-progress"]
    assert main(worker) == 1
    assert f"file not found: {tmp_path.resolve()}/examples/keras_tuner_models.py" in capsys.readouterr().err
    assert main([*worker, "--code-dir", str(PROJECT)]) == 0
    trials = list_trials("kt-cli", sqlite_url)
    assert [t.state for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.attrs["epochs_run"] <= 2 for t in trials)
    capsys.readouterr()
    monkeypatch.chdir(EXAMPLES.parent.parent)
    assert main([*launch_args[:4], "examples/keras_tuner_models.py:MyHyperModel", *launch_args[5:]]) == 1
    assert "was started with a different hypermodel" in capsys.readouterr().err


def _by_mode(hp: Any) -> Any:
    """A build function whose default values are fine but whose other values are not."""
    mode = hp.Choice("mode", ["ok", "none", "wide"])
    if mode == "none":
        return None
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12 if mode == "wide" else 10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.slow  # builds Keras models
def test_values_whose_build_is_no_trainable_model_fail_their_trial_not_the_sweep():
    from gapsweep.search_spaces.keras_tuner import BuildFailed

    hypermodel = load(_by_mode, max_epochs=2)
    hypermodel.check(np.zeros((4, 64), "float32"), np.zeros(4, "int64"), DIGITS)  # the defaults pass
    hypermodel.build(optuna.trial.FixedTrial({"mode": "ok"}), DIGITS)
    with pytest.raises(BuildFailed, match=r"build\(hp\) must return a keras.Model, got NoneType \(for this trial's values\)"):
        hypermodel.build(optuna.trial.FixedTrial({"mode": "none"}), DIGITS)
    with pytest.raises(BuildFailed, match=r"has 12 output unit\(s\), but the data is a classification with 10 classes"):
        hypermodel.build(optuna.trial.FixedTrial({"mode": "wide"}), DIGITS)
    # BuildFailed is no user mistake for the whole sweep: the trial loop fails that trial and goes on.
    from gapsweep.errors import GapsweepError

    assert not issubclass(BuildFailed, GapsweepError)


def test_a_hypermodel_file_imports_the_modules_beside_it(tmp_path: Path):
    (tmp_path / "gapsweep_test_helpers.py").write_text("N_CLASSES = 3\n")
    (tmp_path / "models.py").write_text("from gapsweep_test_helpers import N_CLASSES\nVALUE = N_CLASSES * 2\n")
    assert python_object(f"{tmp_path / 'models.py'}:VALUE", "hypermodel") == 6


@pytest.mark.slow  # builds and evaluates a Keras model
def test_a_study_resumed_with_an_edited_build_function_is_refused(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'hm.db'}"
    source = (
        "import keras\n\n"
        "def build(hp):\n"
        "    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hp.Int('units', 4, 16, step=4, default=8)),\n"
        "                              keras.layers.Dense(10, activation='softmax')])\n"
        "    model.compile(optimizer=keras.optimizers.Adam(hp.Float('lr', 1e-3, 1e-2, sampling='log')), loss='sparse_categorical_crossentropy')\n"
        "    return model\n"
    )
    models = tmp_path / "hm.py"
    models.write_text(source)
    argv = ["launch", "--study", "hm", "--hypermodel", "hm.py:build", "--trials", "1", "--create-only", "--storage", url]
    assert main(argv) == 0, capsys.readouterr().err
    models.write_text(source.replace("default=8", "default=12"))  # another default: the same search
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    models.write_text(source.replace("4, 16, step=4", "100, 200, step=50").replace("hp.Float('lr', 1e-3, 1e-2, sampling='log')", "hp.Choice('lr', [1e-3, 1e-2])"))
    _fails(argv, capsys, "study 'hm' was started with a hypermodel that declared its parameters otherwise (changed: lr, units)")
