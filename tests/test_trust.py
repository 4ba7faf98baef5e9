"""Trusting the winner: offline re-ranking, reproducibility records and reruns."""

from __future__ import annotations

import json

import optuna
import pytest

from gapsweep.api import rerank_trials
from storage.engine import open_storage
from sweeps.cli import main
from sweeps.config import SweepConfig
from sweeps.data import DataSpec
from sweeps.launch import launch
from sweeps.rerank import rerank
from sweeps.reproduce import RERUN_TOLERANCE, rerun

CURVES = {  # trial number → (train curve, val curve)
    0: ([1.0, 0.4, 0.1, 0.02], [1.1, 0.5, 0.40, 0.45]),  # memorizes
    1: ([1.0, 0.6, 0.45, 0.42], [1.0, 0.62, 0.50, 0.49]),  # generalizes
    2: ([1.2, 0.9, 0.8, 0.7], [1.2, 0.95, 0.85, 0.80]),  # slow
}


def _constructed(url: str) -> None:
    study = optuna.create_study(study_name="curves", storage=open_storage(url))
    study.set_user_attr("gapsweep.config", {"objective": {"gap_penalty": 1.0, "patience": 5}})
    for number, (train, val) in CURVES.items():
        trial = study.ask()
        trial.set_user_attr("curve.train_loss", train)
        trial.set_user_attr("curve.val_loss", val)
        study.tell(trial, float(number))


def _hand(train: list[float], val: list[float], penalty: float, epoch: str) -> tuple[float, int]:
    scores = [v + penalty * max(0.0, v - t) for t, v in zip(train, val)]
    index = scores.index(min(scores)) if epoch == "best" else len(scores) - 1
    return scores[index], index


@pytest.mark.parametrize("penalty", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("epoch", ["best", "last"])
def test_rerank_matches_a_hand_computation(sqlite_url, penalty, epoch):
    _constructed(sqlite_url)
    ranked = rerank_trials("curves", sqlite_url, k=3, gap_penalty=penalty, epoch=epoch)
    expected = sorted((_hand(*CURVES[n], penalty, epoch) + (n,) for n in CURVES), key=lambda row: (row[0], row[2]))
    assert [item.record.number for item in ranked] == [row[2] for row in expected]
    for item, (value, index, _) in zip(ranked, expected):
        assert item.score.value == pytest.approx(value) and item.score.epoch == index


def test_rerank_changes_the_winner_when_the_penalty_grows(sqlite_url, capsys):
    _constructed(sqlite_url)
    assert main(["best", "--study", "curves", "--storage", sqlite_url, "--gap-penalty", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["number"] == 0  # plain val loss: the memorizer
    assert main(["best", "--study", "curves", "--storage", sqlite_url, "--gap-penalty", "2", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]
    assert top["number"] == 1 and top["stored_score"] == pytest.approx(1.0)
    # --epoch alone keeps the study's own λ (1.0 here)
    assert main(["best", "--study", "curves", "--storage", sqlite_url, "--epoch", "last", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["gap_penalty"] == 1.0


def test_rerank_skips_trials_without_curves():
    assert rerank([], penalty=1.0) == []


@pytest.mark.slow
def test_a_trial_reruns_to_its_recorded_val_loss(sqlite_url, tiny_space, capsys):
    config = SweepConfig(study="repro", space=tiny_space, data=DataSpec("digits", train_fraction=0.3), trials=1, storage=sqlite_url, pruner="none")
    study = launch(config, progress=False)
    repro = study.trials[0].user_attrs["repro"]
    assert repro["seed"] == 0 and repro["device"] == "CPU" and repro["threads"] == {"intra_op": 1, "inter_op": 1}
    assert {"keras", "optuna", "numpy"} <= set(repro["versions"]) and len(repro["data_fingerprint"]) == 16
    result = rerun("repro", 0, sqlite_url)
    assert result.reproduced and result.relative_difference <= RERUN_TOLERANCE
    assert main(["rerun", "repro", "0", "--storage", sqlite_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reproduced"] is True
