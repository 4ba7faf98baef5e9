"""Exported models take raw rows: a messy CSV sweeps, exports, and predicts as gapsweep recorded."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gapsweep.cli import main
from gapsweep.sweeps.data.datasets import DataSpec, load
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.run.launch import launch
from gapsweep.sweeps.trial.objective import ObjectiveSettings

GAPSWEEP = str(Path(sys.executable).parent / "gapsweep")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GAPSWEEP, *args], capture_output=True, text=True, timeout=300)


def _customers(path: Path, n: int = 240) -> Path:
    """A churn-like CSV: text categories, a yes/no column, empty cells, a free-text id, text labels."""
    rng = np.random.default_rng(7)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer", "age", "plan", "monthly fee", "paperless", "churn"])
        for i in range(n):
            plan = ["basic", "plus", "pro"][i % 3]
            age = rng.normal(45, 12)
            fee = {"basic": 20, "plus": 45, "pro": 80}[plan] + rng.normal(0, 5)
            churn = "yes" if fee / 40 - age / 45 + rng.normal(0, 0.5) > 0.3 else "no"
            writer.writerow([
                f"C-{1000 + i}", "" if i % 9 == 0 else f"{age:.0f}", "" if i % 11 == 0 else plan,
                f"{fee:.2f}", ["Yes", "No"][i % 2], churn,
            ])
    return path


def _write_columns(path: Path, raw: dict[str, np.ndarray]) -> None:
    """Raw CSV columns back into a CSV file: gaps as empty cells, as a user's file has them."""
    names = list(raw)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in zip(*(raw[name].tolist() for name in names)):
            writer.writerow(["" if isinstance(cell, float) and np.isnan(cell) else cell for cell in row])


@pytest.mark.slow
def test_a_messy_csv_sweeps_exports_and_predicts_raw_rows_as_recorded(sqlite_url, tiny_space, tmp_path):
    import keras

    source = _customers(tmp_path / "customers.csv")
    data = DataSpec(str(source), target="churn", ignore=("customer",))
    launch(
        SweepConfig(study="churn", space=tiny_space, data=data, trials=2, storage=sqlite_url, pruner="none",
                    objective=ObjectiveSettings(keep_models=1)),
        progress=False,
    )
    out = tmp_path / "churn.keras"
    done = _cli("export", "churn", "--out", str(out), "--storage", sqlite_url, "--json")
    assert done.returncode == 0, done.stderr
    recorded = json.loads(done.stdout)

    # Raw test rows, as the user has them: the CSV's own cells, gaps and text included.
    splits = load(data)
    model = keras.models.load_model(out)
    probabilities = model.predict(splits.raw_test, verbose=0)
    assert probabilities.shape == (len(splits.y_test), 2)
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == splits.y_test))
    loss = float(keras.losses.SparseCategoricalCrossentropy()(splits.y_test, probabilities))
    assert accuracy == pytest.approx(recorded["test_accuracy"], abs=1e-6)
    assert loss == pytest.approx(recorded["test_pure_loss"], rel=1e-4)
    # The whole CSV row, as users pass it: other columns (the id, the target, one that sorts
    # between the features) are left out by name, never fed to a feature's input.
    rows = len(splits.y_test)
    whole = {**splits.raw_test, "b": np.full(rows, 100.0), "customer": np.array(["C-1"] * rows, dtype=object),
             "churn": np.array(["no"] * rows, dtype=object)}
    np.testing.assert_allclose(model.predict(whole, verbose=0), probabilities, atol=1e-6)
    with pytest.raises(ValueError, match='Missing data for input "plan"'):
        model.predict({name: values for name, values in splits.raw_test.items() if name != "plan"}, verbose=0)
    from gapsweep import model_info

    info = model_info(out)
    assert info["classes"] == ["no", "yes"] and info["target"] == "churn"
    assert [c["name"] for c in info["columns"]] == ["age", "plan", "monthly fee", "paperless"]

    # gapsweep predict on a CSV of the same rows (no target column) gives the same answers.
    new_rows, predictions = tmp_path / "new.csv", tmp_path / "predictions.csv"
    _write_columns(new_rows, splits.raw_test)
    for args in (["churn", "--storage", sqlite_url], ["--model", str(out)]):
        done = _cli("predict", *args, "--data", str(new_rows), "--out", str(predictions))
        assert done.returncode == 0, done.stderr
        with predictions.open(newline="") as handle:
            table = list(csv.DictReader(handle))
        assert len(table) == len(splits.y_test)
        assert [row["predicted"] for row in table] == [info["classes"][k] for k in np.argmax(probabilities, axis=1)]
        np.testing.assert_allclose([float(row["p_yes"]) for row in table], probabilities[:, 1], atol=1e-5)
    umask = os.umask(0)
    os.umask(umask)
    assert predictions.stat().st_mode & 0o777 == 0o666 & ~umask  # as any file the user writes, not 0600
    assert not list(tmp_path.glob(".*.part"))


def test_export_and_predict_refuse_bad_paths_in_one_line(tmp_path: Path, capsys):
    sqlite_url = f"sqlite:///{tmp_path / 'none.db'}"
    model = tmp_path / "m.keras"
    model.mkdir()
    cases = [
        (["export", "s", "--out", str(tmp_path / "model.h5")], "must end in .keras"),
        (["export", "s", "--out", str(model)], "is a folder"),
        (["export", "s", "--out", str(tmp_path / "no" / "m.keras")], "does not exist"),
        (["predict", "s", "--data", "x.csv", "--out", str(tmp_path / "p.txt")], "ending in .csv"),
        (["predict", "--model", str(model), "--data", "x.csv", "--out", str(tmp_path / "p.csv")], "give an existing .keras file"),
        (["predict", "--data", "x.csv", "--out", str(tmp_path / "p.csv")], "name a STUDY or give --model"),
        (["predict", "s", "--data", str(tmp_path / "p.csv"), "--out", str(tmp_path / "p.csv")], "is the --data file itself"),
    ]
    for argv, fragment in cases:
        assert main([*argv, "--storage", sqlite_url]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("gapsweep: error: ") and "\n" not in err and fragment in err, err
    assert not list(tmp_path.glob("p.*"))


def test_new_rows_are_read_as_the_model_takes_them(tmp_path: Path):
    from gapsweep.errors import DataError
    from gapsweep.sweeps.data.datasets import read_rows

    info = {"inputs": "columns", "columns": [{"name": "age", "kind": "number"}, {"name": "plan", "kind": "category"}]}
    path = tmp_path / "new.csv"
    path.write_text("plan,age,extra\nbasic,41,z\n,NA,z\n")
    rows = read_rows(path, info)
    assert rows["plan"].tolist() == ["basic", ""] and rows["age"][0] == 41 and np.isnan(rows["age"][1])
    path.write_text("plan\nbasic\n")
    with pytest.raises(DataError, match="lacks column 'age'"):
        read_rows(path, info)
    path.write_text("plan;age\nbasic;41\n")
    with pytest.raises(DataError, match="lacks column 'age', which the model takes \\(it seems to separate cells with ';'"):
        read_rows(path, info)
    path.write_text("plan,age\nbasic,old\n")
    with pytest.raises(DataError, match="column 'age' must hold finite numbers .*, but data row 1 holds 'old'"):
        read_rows(path, info)
    path.write_text("plan,age\nbasic,inf\n")
    with pytest.raises(DataError, match="data row 1 holds 'inf'"):
        read_rows(path, info)
    # A row of empty cells is a row of missing values: one prediction per row, in order.
    path.write_text("plan,age\nbasic,41\n,\npro,old\n")
    with pytest.raises(DataError, match="data row 3 holds 'old'"):
        read_rows(path, info)
    path.write_text("plan,age\nbasic,41\n,\npro,30\n")
    rows = read_rows(path, info)
    assert rows["plan"].tolist() == ["basic", "", "pro"] and np.isnan(rows["age"][1])
    array_info = {"inputs": "array", "shape": [3], "target": "y"}
    path.write_text("a,b,c,y\n1,2,3,0\n4,5,6,1\n")
    np.testing.assert_array_equal(read_rows(path, array_info), [[1, 2, 3], [4, 5, 6]])
    # An array model's rows may come without a header: the first row is data then.
    path.write_text("1,2,3\n4,5,6\n")
    np.testing.assert_array_equal(read_rows(path, array_info), [[1, 2, 3], [4, 5, 6]])
    # Columns are found by name, so a header-less file cannot feed a column model.
    with pytest.raises(DataError, match="holds numbers only, so it looks like data; add a header row"):
        read_rows(path, info)
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 4)))
    with pytest.raises(DataError, match="rows of shape"):
        read_rows(tmp_path / "x.npz", array_info)
    np.savez(tmp_path / "x.npz", x=np.zeros((0, 3)))
    with pytest.raises(DataError, match="holds no rows to predict"):
        read_rows(tmp_path / "x.npz", array_info)
    np.savez(tmp_path / "x.npz", x=np.array([["a", "b", "c"]]))
    with pytest.raises(DataError, match="takes numbers, but its array 'x' holds <U1 values"):
        read_rows(tmp_path / "x.npz", array_info)
    (tmp_path / "x.npz").write_text("hi\n")
    with pytest.raises(DataError, match=r"is not a .npz archive \(no zip inside\); save one with np.savez\(path, x=...\)"):
        read_rows(tmp_path / "x.npz", array_info)


def test_class_probabilities_from_a_one_unit_output_and_from_logits():
    """A sigmoid's one unit is the second class's probability; a model trained on logits (its loss
    has from_logits=True) gets the sigmoid or softmax its loss applied, so p_ columns sum to 1."""
    from gapsweep.sweeps.analysis.predict import _table

    info = {"task": "classification", "classes": ["no", "yes"]}
    header, rows = _table(np.array([[0.8], [0.2]]), info, logits=False)
    assert header == ["predicted", "p_no", "p_yes"] and rows == [["yes", "0.2", "0.8"], ["no", "0.8", "0.2"]]
    _, rows = _table(np.array([[0.0]]), info, logits=True)
    assert rows == [["no", "0.5", "0.5"]]
    three = {"task": "classification", "classes": ["a", "b", "c"]}
    _, rows = _table(np.array([[2.0, -3.0, 0.0]]), three, logits=True)
    probabilities = [float(p) for p in rows[0][1:]]
    assert rows[0][0] == "a" and abs(sum(probabilities) - 1) < 1e-5 and all(0 < p < 1 for p in probabilities)


def test_a_model_trained_on_logits_is_known_as_one_inside_its_raw_input_wrapper():
    import keras

    from gapsweep.sweeps.analysis.export import outputs_logits
    from gapsweep.sweeps.data.preprocessing import RAW_INPUT_MODEL

    for from_logits in (True, False):
        inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        inner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
        inputs = keras.Input((3,))
        assert outputs_logits(keras.Model(inputs, inner(inputs), name=RAW_INPUT_MODEL)) is from_logits


def test_a_trial_without_a_stored_model_says_how_each_command_trains_it_again(sqlite_url, tmp_path, capsys):
    import optuna

    from fake_trials import add_mixed_trials
    from gapsweep.storage.engine import open_storage

    add_mixed_trials(optuna.create_study(study_name="fake", storage=open_storage(sqlite_url)))
    rows = tmp_path / "rows.csv"
    rows.write_text("a\n1\n")
    cases = [
        (["export", "fake", "--trial", "0", "--out", str(tmp_path / "m.keras")], "or add --refit to train it again"),
        (["predict", "fake", "--trial", "0", "--data", str(rows), "--out", str(tmp_path / "p.csv")],
         "or write it with `gapsweep export --refit` and predict with --model FILE.keras"),
        (["predict", "fake", "--trial", "4", "--data", str(rows), "--out", str(tmp_path / "p.csv")],
         "(it is pruned: no refit can train it again either)"),
    ]
    for argv, fragment in cases:
        assert main([*argv, "--storage", sqlite_url]) == 1
        err = capsys.readouterr().err.strip()
        assert "has no stored model" in err and fragment in err and "\n" not in err, err
