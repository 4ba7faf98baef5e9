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
            {"x_train": np.zeros((10, 3)), "y_train": np.zeros(10), "x_val": np.zeros((4, 2)), "y_val": np.zeros(4)},
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
    csv.write_text("a,y\n1,x\n")
    with pytest.raises(DataError, match="must be a number"):
        load(DataSpec(str(csv), target="y"))
    with pytest.raises(DataError, match="add up to"):
        DataSpec("digits", train_fraction=0.8, val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(DataError, match="unknown synthetic data option"):
        load(DataSpec("synthetic", options={"rows": 5}))
