"""Data loading and splitting; every defect in user data is one clear DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gapsweep.errors import DataError
from gapsweep.sweeps.data.datasets import DataSpec, load


def test_digits_split_is_deterministic_disjoint_and_sized():
    spec = DataSpec("digits", train_fraction=0.3, val_fraction=0.2, test_fraction=0.2, seed=4)
    a, b = load(spec), load(spec)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    n = 1797
    assert len(a.x_train) == round(0.3 * n) and len(a.x_val) == round(0.2 * n) and len(a.x_test) == round(0.2 * n)
    rows = {row.tobytes() for row in a.x_train}
    assert not any(row.tobytes() in rows for row in a.x_test)
    assert a.task.task == "classification" and a.task.n_classes == 10 and a.task.n_features == 64
    assert abs(float(a.x_train.mean())) < 1e-5  # standardized on the training split
    other = load(DataSpec("digits", train_fraction=0.3, seed=5))
    assert not np.array_equal(a.x_train[:5], other.x_train[:5])


def test_synthetic_and_regression_sets():
    synthetic = load(DataSpec("synthetic", options={"n_samples": 300, "n_features": 40, "n_classes": 3}))
    assert synthetic.task.n_features == 40 and synthetic.task.n_classes == 3
    diabetes = load(DataSpec("diabetes"))
    assert diabetes.task.task == "regression" and diabetes.y_train.dtype == np.float32


def test_npz_with_and_without_given_splits(tmp_path: Path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.normal(size=(100, 5)), y_train=rng.integers(0, 3, 100))
    assert load(DataSpec(str(path))).task.n_features == 5
    given = tmp_path / "given.npz"
    np.savez(
        given,
        x_train=rng.normal(size=(80, 5)), y_train=rng.integers(0, 3, 80),
        x_val=rng.normal(size=(20, 5)), y_val=rng.integers(0, 3, 20),
    )
    splits = load(DataSpec(str(given)))
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (80, 20, 0)


def test_csv_with_a_target_column(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n" + "\n".join(f"{i},{i * 2},{i % 2}" for i in range(50)))
    splits = load(DataSpec(str(path), target="label"))
    assert splits.task.n_features == 2 and splits.task.n_classes == 2


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"x_train": np.zeros((10, 3)), "y_train": np.zeros(9)}, "x has 10 rows but y has 9"),
        ({"x_train": np.full((10, 3), np.nan), "y_train": np.zeros(10)}, "NaN/inf"),
        ({"x_train": np.zeros(10), "y_train": np.zeros(10)}, "must be 2-D"),
        ({"y_train": np.zeros(10)}, "lacks x_train"),
        ({"x_train": np.zeros((10, 3)), "y_train": np.zeros(10), "x_val": np.zeros((3, 3))}, "only one of x_val/y_val"),
        (
            {"x_train": np.zeros((10, 3)), "y_train": np.arange(10) % 2, "x_val": np.zeros((4, 2)), "y_val": np.arange(4) % 2},
            "x_val has 2 features but x_train has 3",
        ),
    ],
)
def test_bad_npz_files(tmp_path: Path, arrays, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as info:
        load(DataSpec(str(path)))
    assert fragment in str(info.value)


def test_other_data_mistakes(tmp_path: Path):
    with pytest.raises(DataError, match="unknown data 'mnist'"):
        load(DataSpec("mnist"))
    with pytest.raises(DataError, match="not found"):
        load(DataSpec(str(tmp_path / "nope.npz")))
    csv = tmp_path / "d.csv"
    csv.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match="--target"):
        load(DataSpec(str(csv)))
    with pytest.raises(DataError, match="no column 'y'"):
        load(DataSpec(str(csv), target="y"))
    with pytest.raises(DataError, match="add up to"):
        DataSpec("digits", train_fraction=0.8, val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(DataError, match="unknown synthetic data option"):
        load(DataSpec("synthetic", options={"rows": 5}))


def _messy_csv(path: Path, n: int = 120) -> Path:
    """String categories, a boolean column, empty cells, a '/' in a column name, text labels."""
    rng = np.random.default_rng(0)
    lines = ["age,colour,score/x,member,label"]
    for i in range(n):
        age = "" if i % 7 == 0 else f"{rng.normal(40, 10):.1f}"
        colour = ["red", "blue", "green", ""][i % 4]
        label = "yes" if i % 3 == 0 else "no"
        lines.append(f"{age},{colour},{rng.normal():.3f},{['True', 'False'][i % 2]},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_as_it_comes(tmp_path: Path):
    splits = load(DataSpec(str(_messy_csv(tmp_path / "d.csv")), target="label"))
    prep = splits.preprocessing
    assert splits.task.task == "classification" and prep.classes == ("no", "yes")
    assert prep.columns == (("age", "number"), ("colour", "category"), ("score/x", "number"), ("member", "category"))
    assert prep.indicators == ("age",)  # gaps in training: imputed, with a 0/1 column
    assert dict(prep.vocabularies)["colour"] == ("", "blue", "green", "red")  # "" = missing, its own category
    # 2 numbers + 1 indicator + (4 + 1) colour + (2 + 1) member one-hot columns (column 0: unseen values)
    assert splits.task.n_features == splits.x_train.shape[1] == 11
    assert np.isfinite(splits.x_train).all() and abs(float(splits.x_train[:, 0].mean())) < 1e-5
    assert set(splits.raw_test) == {"age", "colour", "score/x", "member"} and len(splits.raw_test["age"]) == len(splits.y_test)
    np.testing.assert_array_equal(prep.apply(splits.raw_test), splits.x_test)
    numeric_target = load(DataSpec(str(_messy_csv(tmp_path / "n.csv")), target="score/x"))
    assert numeric_target.task.task == "regression" and not numeric_target.preprocessing.classes


@pytest.mark.parametrize(
    "text, settings, fragment",
    [
        ("id,a,label\n" + "".join(f"u{i},{i},{i % 2}\n" for i in range(30)), {}, "column 'id' looks like an identifier"),
        ("a,label\n1,x\n2,\n3,y\n", {}, "column 'label' (the target) has 1 empty cell(s), the first on data row 2"),
        ("a,label\n1,x\n,y\n3,y\n", {"missing": "refuse"}, "column 'a' has 1 empty cell(s), the first on data row 2"),
        ("a,label\n1,x\n2,y\nabc,x\n4,y\n", {}, "column 'a' is numeric but data row 3 holds 'abc'"),
        ("a,note,label\n1,,x\n2,NA,y\n", {}, "column 'note' is empty"),
        ("a,label\n1,x\ninf,y\n", {}, "column 'a' holds an infinite value on data row 2"),
        ("a,label\n1,x\n3e200,y\n", {}, "column 'a' holds 3e+200 on data row 2, beyond float32's range"),
        ("a,label\n1,1e300\n2,2.5\n", {}, "column 'label' (the target) holds 1e+300 on data row 1, beyond float32's range"),
        ("a,label\n1,x\n2,y\n", {"task": "regression"}, "column 'label' (the target) holds text such as 'x'"),
        ("a,label\n1,x\n2,x\n", {}, "column 'label' (the target) has one class only ('x')"),
        ("a,a,label\n1,2,x\n", {}, "column 'a' appears twice in the header"),
        ("a,label\n1,x\n2,y\n", {"ignore": ["nope"]}, "has no column 'nope'"),
        ("a,label\n1,x\n2\n", {}, "line 3 has 1 cells but the header has 2"),
        ("customer id,a,label\n" + "".join(f"u{i},{i},{i % 2}\n" for i in range(30)), {},
         "leave it out with data.ignore (--ignore 'customer id')"),
        ("km/h,km_h,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30)), {},
         "columns 'km/h' and 'km_h' would both be the model input 'km_h'"),
    ],
)
def test_each_csv_defect_is_one_line_naming_the_column(tmp_path: Path, text, settings, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load(DataSpec(str(path), target="label", **settings))
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_an_ignored_column_is_left_out(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("id,a,label\n" + "".join(f"u{i},{i},{'yes' if i % 2 else 'no'}\n" for i in range(30)))
    splits = load(DataSpec(str(path), target="label", ignore=("id",)))
    assert splits.preprocessing.columns == (("a", "number"),) and splits.preprocessing.classes == ("no", "yes")
    assert DataSpec(str(path), target="label", ignore="id").ignore == ("id",)  # one name, not its letters


def test_stratified_splits_keep_every_class_where_the_counts_allow(tmp_path: Path):
    # 3 classes, one with only 3 rows and one with 2: 44 training rows, as in the wine note.
    y = np.array([0] * 120 + [1] * 3 + [2] * 2 + [3] * 50)
    x = np.random.default_rng(1).normal(size=(len(y), 4))
    path = tmp_path / "imbalanced.npz"
    np.savez(path, x_train=x, y_train=y)
    spec = DataSpec(str(path), train_fraction=0.25, val_fraction=0.25, test_fraction=0.25, seed=3)
    a, b = load(spec), load(spec)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    n = len(y)
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (round(0.25 * n),) * 3  # sizes as the fractions say
    for labels in (a.y_train, a.y_val, a.y_test):
        assert {0, 1, 3} <= set(labels.tolist())  # the 3-row class is in every split
        assert abs(int(np.sum(labels == 0)) - 0.25 * 120) <= 2  # and the big ones in proportion
    assert int(np.sum(a.y_train == 2) + np.sum(a.y_val == 2) + np.sum(a.y_test == 2)) <= 2
    other = load(DataSpec(str(path), train_fraction=0.25, val_fraction=0.25, test_fraction=0.25, seed=4))
    assert not np.array_equal(a.y_train, other.y_train) or not np.array_equal(a.x_train, other.x_train)
    wine = load(DataSpec("wine", train_fraction=0.25))
    for labels in (wine.y_train, wine.y_val, wine.y_test):
        assert np.bincount(labels, minlength=3).min() >= 0.2 * len(labels)


def test_k_folds_are_stratified():
    from gapsweep.sweeps.data.cv import k_folds

    splits = load(DataSpec("wine", train_fraction=0.5))
    share = np.bincount(np.concatenate([splits.y_train, splits.y_val])) / 4  # folds pool train and val rows
    for fold in k_folds(splits, 4, seed=0)[0]:
        assert np.all(np.abs(np.bincount(fold.y_val, minlength=3) - share) <= 1)


def test_the_raw_input_model_computes_what_the_trainer_sees(tmp_path: Path):
    """``Preprocessing.wrap`` (Keras layers) and ``apply`` (NumPy) agree, through save and load."""
    import keras

    from gapsweep.sweeps.data.preprocessing import as_model_inputs, model_info
    from gapsweep.sweeps.trial.models import model_from_bytes, raw_input_model_bytes

    for splits in (load(DataSpec(str(_messy_csv(tmp_path / "d.csv")), target="label")), load(DataSpec("wine"))):
        inputs = keras.Input((splits.task.n_features,))
        identity = keras.Model(inputs, keras.layers.Identity()(inputs))
        stored = raw_input_model_bytes(identity, splits.preprocessing)
        raw_model = model_from_bytes(stored)
        # The CSV's "score/x" column is keyed "score_x", as Keras names that input.
        given = as_model_inputs(splits.raw_test, raw_model)
        np.testing.assert_allclose(raw_model.predict(given, verbose=0), splits.x_test, rtol=1e-6, atol=1e-6)
        assert model_info(stored)["classes"] == list(splits.preprocessing.classes)
