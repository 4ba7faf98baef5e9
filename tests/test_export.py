"""Export: refit on train + val rows, averaged ensembles, and refusals of a bad --out."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gapsweep.api import best_trials
from gapsweep.cli import main
from gapsweep.errors import StudyNotFoundError
from gapsweep.storage import artifacts
from gapsweep.storage.engine import open_storage
from gapsweep.sweeps.analysis.export import export_best, load_best_model
from gapsweep.sweeps.data import losses
from gapsweep.sweeps.data.preprocessing import unwrap
from gapsweep.sweeps.data.datasets import DataSpec, load
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.run.launch import launch
from gapsweep.sweeps.trial.objective import ObjectiveSettings


def _sweep(url: str, space: dict, data: DataSpec, *, trials: int = 4, keep: int = 3, study: str = "ex") -> None:
    config = SweepConfig(
        study=study, space=space, data=data, trials=trials, storage=url, pruner="none",
        objective=ObjectiveSettings(keep_models=keep, patience=2),
    )
    launch(config, progress=False)


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "out, message",
    [("model.h5", "must end in .keras"), ("folder.keras", "is a folder"), ("missing/model.keras", "does not exist")],
)
def test_a_bad_out_is_refused_in_one_line_before_any_work(tmp_path, capsys, monkeypatch, out, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.keras").mkdir()
    code, stdout, stderr = _run(capsys, "export", "no-such-study", "--out", out, "--storage", f"sqlite:///{tmp_path}/x.db")
    assert code == 1 and stdout == ""
    assert stderr.count("\n") == 1 and message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "x.db").exists()  # refused before the database was opened
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.keras"]


@pytest.mark.slow
def test_refit_trains_on_train_and_val_rows_for_the_best_epoch_count(any_url, tiny_space, tmp_path, capsys):
    data = DataSpec("digits", train_fraction=0.3)
    _sweep(any_url, tiny_space, data, trials=3, keep=1)
    best = best_trials("ex", any_url, 1)[0]
    splits = load(data)
    rows = len(splits.x_train) + len(splits.x_val)

    out = tmp_path / "refit.keras"
    code, stdout, stderr = _run(capsys, "export", "ex", "--out", str(out), "--refit", "--storage", any_url, "--json")
    assert code == 0, stderr
    exported = json.loads(stdout)
    epochs = best.attrs["best_epoch"] + 1
    assert exported["trial"] == best.number and exported["refit"] is True
    assert exported["refit_rows"] == rows and exported["refit_epochs"] == epochs
    assert exported["seed"] == best.attrs["repro"]["seed"]

    import keras

    model = keras.models.load_model(out)
    batch = best.summary()["params"]["batch_size"]
    # The optimizer took one step per batch of the train + val rows, for exactly that many epochs.
    assert exported["refit_steps"] == epochs * math.ceil(rows / batch)
    # It is a new model that takes raw rows, not the stored one trained on the train rows alone.
    stored = load_best_model("ex", any_url)
    raw = splits.raw_test[:8]
    assert np.allclose(model.predict(raw, verbose=0), unwrap(model).predict(splits.x_test[:8], verbose=0), atol=1e-5)
    assert not np.allclose(model.predict(raw, verbose=0), stored.predict(raw, verbose=0))

    # A trial without a stored model (keep_models = 1) can still be refit.
    other = next(t for t in best_trials("ex", any_url, 3) if t.number != best.number)
    again = export_best("ex", tmp_path / "other.keras", any_url, trial=other.number, refit=True)
    assert again.trial_number == other.number and again.meta["refit_epochs"] == other.attrs["best_epoch"] + 1


def _jensen(url: str, data: DataSpec, out, k: int) -> dict:
    """Export a K-member ensemble and check it against its members on the val and test rows."""
    import keras

    exported = export_best("ex", out, url, ensemble=k)
    wrapped = keras.models.load_model(out)  # standard layers only: no custom objects, safe mode
    splits = load(data)
    # The file takes raw rows like every exported model (and predicts in the target's units); its
    # trained part averages the members'.
    ensemble = unwrap(wrapped)
    np.testing.assert_allclose(
        splits.preprocessing.scale_target(wrapped.predict(splits.raw_test, verbose=0)),
        ensemble.predict(splits.x_test, verbose=0), rtol=1e-5, atol=1e-5,
    )
    members = [unwrap(load_best_model("ex", url, trial=number)) for number in exported.trials]
    for x, y in ((splits.x_val, splits.y_val), (splits.x_test, splits.y_test)):
        predictions = [member.predict(x, verbose=0) for member in members]
        averaged = ensemble.predict(x, verbose=0)
        np.testing.assert_allclose(averaged, np.mean(predictions, axis=0), rtol=1e-5, atol=1e-6)
        mine = losses.per_example(splits.task, y, averaged)
        theirs = np.mean([losses.per_example(splits.task, y, p) for p in predictions], axis=0)
        assert np.all(mine <= theirs + 1e-6)  # example by example
        if len(members) > 1:
            assert mine.mean() < theirs.mean()  # the members differ, so strictly on average
    assert exported.meta["val_loss"] <= exported.meta["members_mean_val_loss"]
    return exported.to_dict()


@pytest.mark.slow
def test_an_ensemble_of_classifiers_loads_plainly_and_never_loses_to_its_members(any_url, tiny_space, tmp_path, capsys):
    data = DataSpec("digits", train_fraction=0.3)
    _sweep(any_url, tiny_space, data, trials=4, keep=3)
    engine = open_storage(any_url).engine
    stored = artifacts.trial_numbers(engine, "ex", artifacts.MODEL)
    engine.dispose()
    exported = _jensen(any_url, data, tmp_path / "ens.keras", k=3)
    ranked = [t.number for t in best_trials("ex", any_url, 4) if t.number in stored]
    # Forward selection on the val rows: the pick first, then only members that lower the val loss.
    members = exported.get("members", [exported["trial"]])  # one member: the pick alone, with a note
    assert members[0] == ranked[0] and set(members) <= set(ranked)
    assert exported["val_loss"] <= exported["member_val_losses"][str(ranked[0])] + 1e-9

    # More members than stored models: it says so, and averages those there are.
    code, stdout, stderr = _run(capsys, "export", "ex", "--out", str(tmp_path / "five.keras"), "--ensemble", "5", "--storage", any_url)
    assert code == 0, stderr
    assert "note: asked for 5 members but " in stdout and str(members[0]) in stdout


@pytest.mark.slow
def test_an_ensemble_of_regressors_never_loses_to_its_members(sqlite_url, tiny_space, tmp_path):
    data = DataSpec("diabetes")
    _sweep(sqlite_url, {**tiny_space, "learning_rate": {"type": "float", "low": 0.01, "high": 0.05}}, data, trials=3)
    _jensen(sqlite_url, data, tmp_path / "ens.keras", k=3)


@pytest.mark.slow
def test_refit_and_ensemble_combine(sqlite_url, tiny_space, tmp_path):
    import keras

    data = DataSpec("digits", train_fraction=0.3)
    _sweep(sqlite_url, tiny_space, data, trials=3, keep=0)  # no stored model: refit needs none
    exported = export_best("ex", tmp_path / "ens.keras", sqlite_url, ensemble=2, refit=True)
    best = best_trials("ex", sqlite_url, 2)
    assert exported.trials == [t.number for t in best]
    assert exported.meta["refit_epochs"] == [t.attrs["best_epoch"] + 1 for t in best]
    assert "val_loss" not in exported.meta  # the members have seen the val rows
    model = keras.models.load_model(tmp_path / "ens.keras")
    splits = load(data)
    probabilities = model.predict(splits.x_val[:5], verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    with pytest.raises(StudyNotFoundError, match="an ensemble needs at least 2"):
        export_best("ex", tmp_path / "none.keras", sqlite_url, ensemble=2)


def test_forward_selection_adds_only_members_that_lower_the_val_loss():
    from gapsweep.sweeps.analysis.export import forward_selection

    splits = load(DataSpec("wine", train_fraction=0.4))
    y, n, width = splits.y_val, len(splits.y_val), splits.task.n_classes

    def confident(right: np.ndarray) -> np.ndarray:
        """Probability `right` on the true class, the rest spread evenly over the others."""
        p = np.repeat(((1 - right) / (width - 1))[:, None], width, axis=1)
        p[np.arange(n), y] = right
        return p

    half = np.arange(n) < n // 2
    pick = confident(np.where(half, 0.9, 0.3))
    complement = confident(np.where(half, 0.3, 0.9))  # right where the pick is unsure
    wrong = confident(np.full(n, 0.05))
    # A copy of the pick lowers nothing; the bad model only raises the loss; the complement helps.
    assert forward_selection([pick, pick.copy(), wrong, complement], splits, 3) == [0, 3]
    assert forward_selection([pick, wrong], splits, 2) == [0]
    assert forward_selection([pick, complement, wrong], splits, 1) == [0]


@pytest.mark.slow
def test_refit_ensemble_verify_and_rerun_name_data_that_changed_since_launch(sqlite_url, tiny_space, tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = ["a,b,y"] + [f"{a:.3f},{b:.3f},{int(a + b > 1)}" for a, b in rng.random((120, 2))]
    csv = tmp_path / "rows.csv"
    csv.write_text("\n".join(rows) + "\n")
    _sweep(sqlite_url, tiny_space, DataSpec(str(csv), target="y"), trials=2)
    csv.write_text("\n".join(rows[:-5]) + "\n")  # five rows fewer: other splits, other fingerprints
    for args in (["export", "ex", "--out", str(tmp_path / "r.keras"), "--refit"],
                 ["export", "ex", "--out", str(tmp_path / "e.keras"), "--ensemble", "2"],
                 ["verify", "ex", "--top", "1", "--seeds", "2"]):
        code, out, err = _run(capsys, *args, "--storage", sqlite_url)
        assert code == 1 and "changed since it was launched" in err and "restore the study's data" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.keras").exists() and not (tmp_path / "e.keras").exists()
    number = best_trials("ex", sqlite_url)[0].number
    code, out, _ = _run(capsys, "rerun", "ex", str(number), "--storage", sqlite_url)
    assert code != 0 and "the data differs from the rows" in out
