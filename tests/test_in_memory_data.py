"""Data from Python: arrays of any shape, (x, y) splits, tf.data and PyDataset objects, and data
loaders that workers import; data passed in memory is refused where another process needs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from gapsweep.api import list_studies, list_trials
from gapsweep.cli import main
from gapsweep.storage.engine import connect_existing
from gapsweep.errors import ConfigError, DataError, SpaceError, StorageError
from gapsweep.sweeps.data.datasets import DataSpec, load
from gapsweep.sweeps.run.config import SweepConfig, load_sweep_file, stored_sweep
from gapsweep.sweeps.analysis.export import export_best
from gapsweep.sweeps.run.launch import launch, prepare
from gapsweep.sweeps.trial.objective import ObjectiveSettings
from test_images import TINY_CNN

GAPSWEEP = str(Path(sys.executable).parent / "gapsweep")
PROJECT = Path(__file__).resolve().parents[1]
DIGITS = load_digits()
IMAGES, LABELS = DIGITS.images[..., None], DIGITS.target
TABLE = DIGITS.data
#: The loader a project folder holds: digits as a table, its size an option.
LOADERS = """from sklearn.datasets import load_digits

def load(rows=600):
    digits = load_digits()
    return digits.data[:rows], digits.target[:rows]

def no_labels():
    return load_digits().data

def short_labels():
    digits = load_digits()
    return digits.data, digits.target[:-1]

def broken():
    raise OSError("the share is not mounted")

not_a_function = 3
"""


def _space(epochs: int = 2) -> dict:
    return {
        "units": {"type": "int", "low": 8, "high": 16},
        "n_layers": {"type": "fixed", "value": 1},
        "epochs": {"type": "fixed", "value": epochs},
        "batch_size": {"type": "fixed", "value": 64},
    }


def _project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "loaders.py").write_text(LOADERS)
    return folder


def test_arrays_of_any_shape_split_as_the_same_npz_does(tmp_path: Path):
    splits = load(DataSpec((IMAGES, LABELS), seed=3))
    assert splits.x_train.shape[1:] == (8, 8, 1) and splits.task.input_shape == (8, 8, 1)
    np.savez(tmp_path / "images.npz", x_train=IMAGES, y_train=LABELS)
    assert splits.fingerprint == load(DataSpec(str(tmp_path / "images.npz"), seed=3)).fingerprint
    for labels in (splits.y_train, splits.y_val, splits.y_test):  # stratified from the seed
        assert set(labels) == set(range(10))
    sequences = np.random.default_rng(0).normal(size=(300, 12, 3))  # rows × steps × features
    assert load(DataSpec((sequences, (sequences[:, :, 0].sum(axis=1) > 0).astype(int)))).task.input_shape == (12, 3)


def test_true_false_labels_are_two_classes_and_a_path_names_a_file(tmp_path: Path):
    splits = load(DataSpec((TABLE, LABELS > 4)))
    assert splits.task.n_classes == 2 and set(splits.y_train.tolist()) == {0, 1}
    assert DataSpec(tmp_path / "rows.csv", target="y").source == str(tmp_path / "rows.csv")


def test_a_class_absent_from_the_training_split_still_counts_when_the_splits_are_given():
    train = (TABLE[:200][LABELS[:200] != 9], LABELS[:200][LABELS[:200] != 9])
    splits = load(DataSpec((train, (TABLE[200:300], LABELS[200:300]))))
    assert splits.task.n_classes == 10


def test_given_splits_are_kept_as_given():
    train, val, test = (TABLE[:200], LABELS[:200]), (TABLE[200:260], LABELS[200:260]), (TABLE[260:300], LABELS[260:300])
    for data in ((train, val, test), {"train": train, "val": val, "test": test}):
        splits = load(DataSpec(data))
        assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (200, 60, 40)
        assert np.array_equal(splits.raw_test, TABLE[260:300].astype("float32"))
    assert len(load(DataSpec((train, val))).x_test) == 0
    with pytest.raises(DataError, match=r"^the data passed from Python \(val\): x has 60 rows but y has 59;"):
        load(DataSpec((train, (TABLE[200:260], LABELS[200:259]))))
    with pytest.raises(DataError, match="a dict with keys \\['train'\\]; give 'train', 'val'"):
        DataSpec({"train": train})


def test_tf_datasets_and_py_datasets_are_read_once_into_arrays():
    import keras
    import tensorflow as tf

    expected = load(DataSpec((IMAGES, LABELS))).fingerprint
    rows = tf.data.Dataset.from_tensor_slices((IMAGES, LABELS))
    assert load(DataSpec(rows)).fingerprint == expected  # single rows, as from_tensor_slices yields them
    assert load(DataSpec(rows.batch(64))).fingerprint == expected  # batches, as model.fit takes them

    class Batches(keras.utils.PyDataset):
        def __len__(self) -> int:
            return 18

        def __getitem__(self, index: int):
            return IMAGES[index * 100 : (index + 1) * 100], LABELS[index * 100 : (index + 1) * 100]

    assert load(DataSpec(Batches())).fingerprint == expected
    with pytest.raises(DataError, match=r"^the data passed from Python is an infinite tf.data.Dataset \(repeat"):
        DataSpec(rows.repeat())
    with pytest.raises(DataError, match="yields \\(x, y, sample_weight\\)"):
        DataSpec(tf.data.Dataset.from_tensor_slices((TABLE, LABELS, np.ones(len(LABELS)))))
    with pytest.raises(DataError, match=r"yields one array of shape \(64,\) \(no labels\), not \(x, y\) pairs"):
        DataSpec(tf.data.Dataset.from_tensor_slices(TABLE))


def test_wrong_data_from_python_is_one_line():
    cases = [
        (TABLE, "is one array of shape (1797, 64) (no labels); give (x, y) arrays"),
        ((TABLE[:, 0], LABELS), "x must be 2-D (rows × features) or more"),
        ((TABLE, np.eye(10)[LABELS]), "classification needs one class index per row (y of shape (rows,)), got y of shape (1797, 10); for one-hot labels pass y.argmax(axis=1)"),
        ((np.where(TABLE == 0, np.nan, TABLE), LABELS), "x holds"),
        (({"pixels": TABLE}, LABELS), "x is a dict of named arrays"),
        ("nowhere", "unknown data 'nowhere'"),
        # float64 values float32 (the trainer's arithmetic) would make infinite
        ((TABLE * 1e200, LABELS), "x holds values beyond float32's range (up to 1.6e+201, the limit is 3.4e+38)"),
        ((TABLE.astype(complex), LABELS), "x and y must hold real numbers, got complex128 and int64"),
        ((TABLE, np.zeros(len(LABELS), "int64")), "classification needs two or more classes, but y holds the label 0 only"),
        ((TABLE, LABELS + 1), "classification needs the labels 0..K-1, each present, but y has 10 labels from 1 to 10 (none is 0)"),
    ]
    for data, says in cases:
        with pytest.raises(DataError) as caught:
            load(DataSpec(data))
        assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_loader_is_imported_from_the_project_folder_and_its_mistakes_are_one_line(tmp_path: Path):
    project = _project(tmp_path / "project")
    splits = load(DataSpec("loaders.py:load", options={"rows": 300}), project)
    assert len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == 300 and splits.task.n_classes == 10
    cases = [
        ("missing.py:load", SpaceError, "file not found: "),
        ("../outside.py:load", ConfigError, "data loader '../outside.py:load' leads outside the project folder"),
        ("loaders.py:nothing", SpaceError, "has no attribute 'nothing'"),
        ("loaders.py:not_a_function", DataError, "data loader 'loaders.py:not_a_function' is a int, not a function"),
        ("loaders.py:no_labels", DataError, "what data loader 'loaders.py:no_labels' returned is one array of shape (1797, 64) (no labels)"),
        ("loaders.py:short_labels", DataError, "data loader 'loaders.py:short_labels': x has 1797 rows but y has 1796"),
        ("loaders.py:broken", DataError, "calling data loader 'loaders.py:broken' raised OSError: the share is not mounted"),
    ]
    (tmp_path / "outside.py").write_text(LOADERS)
    for source, error, says in cases:
        with pytest.raises(error) as caught:
            load(DataSpec(source), project)
        assert says in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(DataError, match="raised TypeError: load\\(\\) got an unexpected keyword argument 'row'"):
        load(DataSpec("loaders.py:load", options={"row": 3}), project)  # a misspelt data.options key


def test_a_sweep_file_stores_its_loader_relative_to_its_folder(tmp_path: Path):
    project = _project(tmp_path / "project")
    (project / "s.toml").write_text('study = "s"\n[data]\nsource = "loaders.py:load"\noptions = {rows = 300}\n')
    config = load_sweep_file(project / "s.toml")
    assert config.code_dir == str(project) and config.data_code().file == project / "loaders.py"
    assert config.to_dict()["data"]["source"] == "loaders.py:load"
    absolute = SweepConfig(data=f"{project / 'loaders.py'}:load", code_dir=str(project))
    assert absolute.to_dict()["data"]["source"] == "loaders.py:load"  # the same on every machine


def test_the_example_loader_study_gives_images():
    config = load_sweep_file(PROJECT / "examples" / "images_loader.toml")
    assert config.to_dict()["data"]["source"] == "loaders.py:digit_images"
    assert load(config.data, config.code_dir).task.input_shape == (8, 8, 1)


def test_launch_flags_read_a_loader_from_the_right_folder(sqlite_url: str, tmp_path: Path, monkeypatch):
    project = _project(tmp_path / "project")
    (project / "sweeps").mkdir()
    (project / "sweeps" / "s.toml").write_text('study = "s"\n[data]\nsource = "loaders.py:load"\n')
    (project / "sweeps" / "loaders.py").write_text(LOADERS)
    monkeypatch.chdir(tmp_path)
    # --space keeps the sweep file's folder as the loader's project folder
    assert main(["launch", "project/sweeps/s.toml", "--space", "mlp", "--storage", sqlite_url, "--create-only"]) == 0
    assert stored_sweep("s", sqlite_url).data.source == "loaders.py:load"
    monkeypatch.chdir(project)
    # a --data loader is read from the current folder, as any flag's path is
    assert main(["launch", "sweeps/s.toml", "--study", "t", "--data", "loaders.py:load", "--storage", sqlite_url, "--create-only"]) == 0
    assert stored_sweep("t", sqlite_url).data.source == "loaders.py:load"
    (project / "loaders.py").unlink()
    assert main(["launch", "sweeps/s.toml", "--study", "u", "--data", "loaders.py:load", "--storage", sqlite_url, "--create-only"]) == 1


def test_data_in_memory_is_refused_where_another_process_needs_it(any_url: str, tmp_path: Path):
    config = SweepConfig(study="mem", space=_space(), data=(TABLE, LABELS), trials=2, storage=any_url)
    with pytest.raises(DataError) as caught:
        launch(config, jobs=2, progress=False)
    message = str(caught.value)
    assert message.startswith("the study's data was passed in memory from Python (x (1797, 64) float64, y (1797,) int64), "
                              "and the job processes of jobs=2 cannot get it; name a data loader instead, data = \"loaders.py:load\"")
    assert "\n" not in message
    # Refused before anything was written, the database included: no SQLite file, no tables.
    if any_url.startswith("sqlite"):
        with pytest.raises(StorageError, match="no database at"):
            list_studies(any_url)
    else:
        with pytest.raises(StorageError, match="holds no studies yet"):
            connect_existing(any_url)

    prepare(config).close()  # the script's own process: the study exists
    stored = stored_sweep("mem", any_url)
    assert stored.data.to_dict()["source"] == "<in memory: x (1797, 64) float64, y (1797,) int64>"
    with pytest.raises(DataError, match="and this process \\(a worker, a job of launch --jobs, a later command on the study\\) cannot get it"):
        load(stored.data)
    with pytest.raises(DataError, match="^the study's data was passed in memory from Python"):
        export_best("mem", tmp_path / "refit.keras", any_url, refit=True)  # a refit needs the rows
    done = subprocess.run(
        [GAPSWEEP, "worker", "--study", "mem", "--storage", any_url, "--no-progress", "--gpu", "none"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("gapsweep: error: the study's data was passed in memory from Python (x (1797, 64)")
    assert "name a data loader instead" in lines[0] and list_trials("mem", any_url) == []


@pytest.mark.slow
def test_a_script_sweeps_its_own_arrays(any_url: str):
    study = launch(
        SweepConfig(study="arrays", space=_space(), data=DataSpec((TABLE, LABELS), train_fraction=0.3), trials=2,
                    storage=any_url, pruner="none"),
        progress=False,
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    again = launch(  # resumed from Python with the same arrays: the fingerprint matches, the budget is spent
        SweepConfig(study="arrays", space=_space(), data=DataSpec((TABLE, LABELS), train_fraction=0.3), trials=2,
                    storage=any_url, pruner="none"),
        progress=False,
    )
    assert len(again.trials) == 2


@pytest.mark.slow
def test_a_script_sweeps_a_tf_dataset(sqlite_url: str):
    import tensorflow as tf

    rows = tf.data.Dataset.from_tensor_slices((TABLE.astype("float32"), LABELS)).batch(128)
    study = launch(
        SweepConfig(study="tf-data", space=_space(), data=DataSpec(rows, train_fraction=0.3), trials=2,
                    storage=sqlite_url, pruner="none"),
        progress=False,
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].user_attrs["repro"]["data_fingerprint"] == load(DataSpec((TABLE, LABELS), train_fraction=0.3)).fingerprint


@pytest.mark.slow
def test_images_in_memory_reach_the_cnn_space_unflattened(sqlite_url: str):
    import keras

    from gapsweep.sweeps.analysis.export import load_best_model

    study = launch(
        SweepConfig(study="cnn-mem", space={**TINY_CNN, "epochs": {"type": "fixed", "value": 2}},
                    data=DataSpec((IMAGES, LABELS), train_fraction=0.3), trials=2, storage=sqlite_url, pruner="none",
                    objective=ObjectiveSettings(keep_models=1)),
        progress=False,
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    model = load_best_model("cnn-mem", sqlite_url)
    assert model.input_shape == (None, 8, 8, 1)
    assert any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers[-1].layers)


@pytest.mark.slow
def test_a_loader_named_study_runs_on_a_second_worker_process(postgres_url: str, tmp_path: Path):
    project = _project(tmp_path / "project")
    (project / "s.toml").write_text(
        'study = "loaded"\ntrials = 2\npruner = "none"\n'
        '[space]\nunits = 8\nn_layers = 1\nepochs = 2\nbatch_size = 64\n'
        '[data]\nsource = "loaders.py:load"\noptions = {rows = 500}\n'
    )
    assert main(["launch", str(project / "s.toml"), "--storage", postgres_url, "--create-only"]) == 0
    elsewhere = tmp_path / "elsewhere"  # a worker's own folder: it finds the loader through --code-dir
    elsewhere.mkdir()
    command = [GAPSWEEP, "worker", "--study", "loaded", "--storage", postgres_url, "--no-progress", "--gpu", "none"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    lost = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=elsewhere, env=env)
    assert lost.returncode == 1 and lost.stderr.strip().count("\n") == 0
    assert "gapsweep: error: file not found: " in lost.stderr and "(data loader 'loaders.py:load'" in lost.stderr
    worker = subprocess.run([*command, "--code-dir", str(project)], capture_output=True, text=True, timeout=400, cwd=elsewhere, env=env)
    assert worker.returncode == 0, worker.stderr[-3000:]
    trials = list_trials("loaded", postgres_url)
    assert [t.state for t in trials] == ["COMPLETE", "COMPLETE"]
    assert len({t.attrs["worker"] for t in trials}) == 1 and not trials[0].attrs["worker"].endswith(f":{os.getpid()}")


@pytest.mark.slow
def test_the_example_script_sweeps_its_tf_dataset(sqlite_url: str, tmp_path: Path):
    (tmp_path / "tiny_cnn.toml").write_text(
        "conv_blocks = 1\nfilters = 4\nunits = 8\nn_layers = 1\nepochs = 2\nbatch_size = 64\n"
        'learning_rate = {type = "float", low = 1e-3, high = 1e-2, log = true}\n'
    )
    done = subprocess.run(
        [sys.executable, str(PROJECT / "scripts" / "sweep_arrays.py"), "--trials", "2", "--tf-data",
         "--space", str(tmp_path / "tiny_cnn.toml"), "--storage", sqlite_url],
        capture_output=True, text=True, timeout=400, cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [t.state for t in list_trials("scripted-images", sqlite_url)] == ["COMPLETE", "COMPLETE"]
