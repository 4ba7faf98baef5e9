"""The per-trial diagnosis: each label from constructed curves, and in the CLI's outputs."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from fake_trials import add_mixed_trials
from gapsweep.storage.engine import open_storage
from gapsweep.storage.queries import TrialRecord
from gapsweep.cli import main
from gapsweep.sweeps.analysis.diagnosis import (
    DIVERGED,
    Diagnosis,
    GOOD_FIT,
    LABELS,
    OVERFITTING,
    TOO_SHORT,
    UNDERFITTING,
    diagnose,
    diagnose_record,
)

CASES = {
    "plateau with a small gap": ([1.0, 0.5, 0.32, 0.3, 0.3], [1.0, 0.55, 0.38, 0.36, 0.37], GOOD_FIT),
    "val far above train at the best epoch": ([1.0, 0.4, 0.1, 0.03], [1.0, 0.6, 0.45, 0.5], OVERFITTING),
    "val climbs while train falls": ([1.0, 0.6, 0.4, 0.35, 0.3, 0.25], [1.0, 0.65, 0.45, 0.42, 0.5, 0.55], OVERFITTING),
    "train loss barely moved": ([2.3, 2.25, 2.2, 2.15, 2.1], [2.3, 2.26, 2.21, 2.17, 2.12], UNDERFITTING),
    "stopped while still learning": ([2.0, 1.5, 1.0], [2.05, 1.55, 1.05], UNDERFITTING),
    # train has flattened, but the last epoch still cut val loss by 17 %: the epoch budget ran out
    "val still falling at the last epoch": ([1.0, 0.5, 0.3, 0.28], [1.2, 0.8, 0.6, 0.5], UNDERFITTING),
    "NaN loss": ([1.0, 0.5, math.nan, math.nan], [1.0, 0.6, math.nan, math.nan], DIVERGED),
    "infinite val loss": ([1.0, 0.5, 0.4], [1.0, 0.6, math.inf], DIVERGED),
    "val blew up to 5x its minimum": ([1.0, 0.5, 0.4, 0.4], [1.0, 0.5, 0.4, 2.0], DIVERGED),
    # 44x its minimum but far below where it began: a near-perfect model that rose, not a blow-up
    "tiny val loss rose": ([0.9, 0.01, 1e-4, 1e-5, 5e-6], [0.5, 0.004, 5e-5, 8e-4, 2.2e-3], OVERFITTING),
    "stored null (JSON) in a curve": ([1.0, None, 0.5], [1.0, 0.8, 0.7], DIVERGED),
    "two epochs": ([1.0, 0.5], [1.0, 0.6], TOO_SHORT),
    "no epoch": ([], [], TOO_SHORT),
}


@pytest.mark.parametrize("case", CASES)
def test_each_label_from_constructed_curves(case: str):
    train, val, expected = CASES[case]
    diagnosis = diagnose(train, val)
    assert diagnosis.label == expected, diagnosis
    assert diagnosis.reason and "\n" not in diagnosis.reason
    assert diagnosis.label in LABELS


def test_a_trial_that_starts_from_fitted_weights_is_not_called_underfit_for_its_flat_curve():
    flat = ([0.31, 0.305, 0.3, 0.3], [0.33, 0.325, 0.32, 0.32])
    assert diagnose(*flat).label == UNDERFITTING
    assert diagnose(*flat, warm_start=True).label == GOOD_FIT


def test_a_pruned_trial_is_not_told_to_train_longer():
    falling = ([2.0, 1.5, 1.0], [2.05, 1.55, 1.05])
    assert diagnose(*falling).reason.endswith("more epochs would help")
    pruned = diagnose(*falling, pruned=True)
    assert pruned.label == UNDERFITTING and pruned.reason.endswith("the pruner stopped it as behind the other trials")


def test_a_good_fit_reports_the_gap_as_stored_never_below_zero():
    reason = diagnose([1.0, 0.5, 0.32, 0.3], [0.9, 0.45, 0.3, 0.28]).reason
    assert "gap 0)" in reason


def test_every_label_is_reachable():
    assert {expected for _, _, expected in CASES.values()} == set(LABELS)


def test_reasons_carry_the_deciding_numbers():
    gap = diagnose([1.0, 0.4, 0.1, 0.03], [1.0, 0.6, 0.45, 0.5], best_epoch=2)
    assert "best epoch 2" in gap.reason and "0.45" in gap.reason and "0.1" in gap.reason
    rise = diagnose(*CASES["val climbs while train falls"][:2])
    assert "rose 31%" in rise.reason and "epoch 3" in rise.reason
    assert "epoch 2" in diagnose(*CASES["NaN loss"][:2]).reason


def test_nan_beats_too_short():
    """A two-epoch trial that blew up is diverged, not merely short."""
    assert diagnose([1.0, math.nan], [1.0, math.nan]).label == DIVERGED


def test_stored_best_epoch_is_used_and_val_minimum_stands_in_without_it():
    train, val = [1.0, 0.5, 0.32, 0.1, 0.095], [1.0, 0.55, 0.36, 0.35, 0.37]
    # Lowest val loss (epoch 3) comes with a big gap; the restored epoch 2 does not.
    assert diagnose(train, val).label == OVERFITTING
    assert diagnose(train, val, best_epoch=2).label == GOOD_FIT
    assert diagnose(train, val, best_epoch=99).label == OVERFITTING  # out of range: ignored


def test_thresholds_are_strict():
    # gap exactly half of val is not yet overfitting; a hair more is.
    assert diagnose([1.0, 0.6, 0.5, 0.5], [1.0, 1.2, 1.0, 1.0], best_epoch=2).label == GOOD_FIT
    assert diagnose([1.0, 0.6, 0.49, 0.5], [1.0, 1.2, 1.0, 1.0], best_epoch=2).label == OVERFITTING


def test_unequal_curves_are_a_programming_error():
    with pytest.raises(ValueError, match="differ in length"):
        diagnose([1.0, 0.5, 0.4], [1.0, 0.5])


def test_diagnose_record_reads_curves_and_best_epoch_from_user_attrs():
    train, val = [1.0, 0.5, 0.32, 0.1, 0.095], [1.0, 0.55, 0.36, 0.35, 0.37]
    record = TrialRecord(
        number=3, state="COMPLETE", value=0.4, params={},
        attrs={"curve.train_loss": train, "curve.val_loss": val, "best_epoch": 2},
    )
    assert diagnose_record(record) == diagnose(train, val, best_epoch=2)
    running = TrialRecord(number=4, state="RUNNING", value=None, params={})
    assert diagnose_record(running) == Diagnosis(TOO_SHORT, "still running: its curves are stored when it ends")
    killed = TrialRecord(number=5, state="FAIL", value=None, params={})  # its worker died: no curves, not 0 epochs
    assert "0 epoch(s)" not in diagnose_record(killed).reason and "stopped before writing them" in diagnose_record(killed).reason


def test_best_and_show_outputs_carry_the_diagnosis(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    add_mixed_trials(optuna.create_study(study_name="mixed", storage=open_storage(url)))

    assert main(["best", "--study", "mixed", "--top", "4", "--by", "val_loss", "--storage", url, "--json"]) == 0
    best = json.loads(capsys.readouterr().out)["trials"]
    assert {row["number"]: row["diagnosis"]["label"] for row in best} == {
        0: GOOD_FIT, 1: OVERFITTING, 2: UNDERFITTING, 3: GOOD_FIT,
    }
    assert all(row["diagnosis"]["reason"] for row in best)

    assert main(["best", "--study", "mixed", "--top", "4", "--storage", url]) == 0
    header, _, *rows = capsys.readouterr().out.splitlines()
    assert "diagnosis" in header.split()
    assert any(OVERFITTING in row.split() for row in rows)

    # A range no complete trial falls in is said as such, not as a study without results.
    assert main(["best", "--study", "mixed", "--param", "units=100:200", "--storage", url]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "no complete trial of study 'mixed' matches --param units=100:200"

    assert main(["show", "mixed", "5", "--storage", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["diagnosis"]["label"] == DIVERGED
    assert main(["show", "mixed", "1", "--storage", url]) == 0
    assert any(line.strip().startswith("diagnosis: overfitting:") for line in capsys.readouterr().out.splitlines())


def test_show_of_a_running_trial_shows_the_scores_it_reported_so_far(any_url, capsys):
    """A running trial's curves are written when it ends; until then ``show`` gives what the
    pruner has seen of it, in its JSON and as a curve line."""
    study = optuna.create_study(study_name="live", storage=open_storage(any_url))
    trial = study.ask({"units": optuna.distributions.IntDistribution(8, 64)})
    for epoch, score in enumerate([0.9, 0.5, float("inf"), 0.4]):
        trial.report(score, step=epoch)

    assert main(["show", "live", "0", "--storage", any_url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "RUNNING"
    assert shown["curves"] == {"reported_score": [0.9, 0.5, None, 0.4]}  # JSON has no inf: null, as elsewhere
    assert shown["diagnosis"] == {
        "label": TOO_SHORT, "reason": "still running: 4 score(s) reported so far, the last 0.4; its curves are stored when it ends",
    }
    assert main(["show", "live", "0", "--storage", any_url]) == 0
    assert "curve.reported_score: 0.9000 0.5000 inf 0.4000" in capsys.readouterr().out

