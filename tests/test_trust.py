"""Trusting the winner: offline re-ranking, reproducibility records and reruns."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from gapsweep.api import rerank_trials
from gapsweep.storage.engine import open_storage
from gapsweep.storage.queries import TrialRecord
from gapsweep.cli import main
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.data.datasets import DataSpec
from gapsweep.sweeps.run.launch import launch
from gapsweep.sweeps.analysis.rerank import rerank
from gapsweep.sweeps.analysis.reproduce import RERUN_TOLERANCE, Rerun, rerun

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
    assert json.loads(capsys.readouterr().out)["trials"][0]["number"] == 0  # plain val loss: the memorizer
    assert main(["best", "--study", "curves", "--storage", sqlite_url, "--gap-penalty", "2", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["trials"][0]
    assert top["number"] == 1 and top["stored_score"] == pytest.approx(1.0)
    # Every score part is the re-ranked one: none is left from the stored score.
    assert top["score"] == pytest.approx(top["val_loss"] + top["applied_penalty"])
    assert top["raw_penalty"] == pytest.approx(2 * top["gap"]) and top["score_kind"] == "additive"
    # --epoch alone keeps the study's own λ (1.0 here)
    assert main(["best", "--study", "curves", "--storage", sqlite_url, "--epoch", "last", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"][0]["gap_penalty"] == 1.0


def test_rerank_skips_trials_without_usable_curves():
    nan = float("nan")
    records = [
        TrialRecord(0, "COMPLETE", 0.5, {}, {"curve.train_loss": [0.9, 0.4], "curve.val_loss": [1.0, 0.5]}),
        TrialRecord(1, "COMPLETE", 0.4, {}, {}),  # no curves stored
        TrialRecord(2, "COMPLETE", 0.3, {}, {"curve.train_loss": [0.9], "curve.val_loss": [1.0, 0.5]}),  # lengths differ
        TrialRecord(3, "FAIL", None, {}, {"curve.train_loss": [nan], "curve.val_loss": [nan]}),  # diverged
    ]
    ranked = rerank(records, penalty=1.0)
    assert [item.record.number for item in ranked] == [0]
    assert ranked[0].score.epoch == 1 and ranked[0].score.value == pytest.approx(0.5 + 0.1)


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


@pytest.mark.slow
def test_a_cross_validated_trial_reruns_to_its_recorded_val_loss(sqlite_url, tiny_space):
    """Under cv the recorded val loss is the folds' mean: the rerun trains every fold again."""
    from gapsweep.sweeps.trial.objective import ObjectiveSettings

    config = SweepConfig(
        study="cv-repro", space=tiny_space, data=DataSpec("wine"), objective=ObjectiveSettings(cv=2), trials=1,
        storage=sqlite_url, pruner="none",
    )
    launch(config, progress=False)
    result = rerun("cv-repro", 0, sqlite_url)
    assert result.reproduced, result.to_dict()


def test_a_rerun_of_a_resumed_trial_carries_the_epoch_it_resumed_after():
    """A retry that resumed from a checkpoint restarted its optimizer from saved state: the rerun
    result says so, where a bare "not reproduced" would leave the user guessing."""
    result = Rerun("s", 4, 0.4675, 0.4689, "f", "f", resumed_from_epoch=3)
    assert not result.reproduced and result.to_dict()["resumed_from_epoch"] == 3
    assert Rerun("s", 0, 0.5, 0.5, "f", "f").to_dict()["resumed_from_epoch"] is None


@pytest.mark.slow
def test_a_gap_constraint_marks_and_ranks_infeasible_trials_last(sqlite_url, tiny_space):
    from gapsweep.api import best_trials, list_trials
    from gapsweep.sweeps.trial.objective import ObjectiveSettings

    config = SweepConfig(
        study="constrained", space=tiny_space, data=DataSpec("digits", train_fraction=0.3), trials=4,
        storage=sqlite_url, pruner="none", objective=ObjectiveSettings(max_gap=0.05),
    )
    study = launch(config, progress=False)
    trials = list_trials("constrained", sqlite_url, states=["complete"])
    feasible = {t.number: t.attrs["gap"] <= 0.05 for t in trials}
    assert all(t.attrs["feasible"] == feasible[t.number] for t in trials)
    assert True in feasible.values() and False in feasible.values(), feasible  # both kinds occur here
    # Optuna's own record of the constraint agrees, and best ranks every feasible trial first.
    assert all((t.constraints["gap"] <= 0) == feasible[t.number] for t in study.trials)
    ranked = [t.number for t in best_trials("constrained", sqlite_url, k=4)]
    n_feasible = sum(feasible.values())
    assert all(feasible[n] for n in ranked[:n_feasible]) and not any(feasible[n] for n in ranked[n_feasible:])


@pytest.mark.slow
def test_a_baseline_runs_first_and_is_compared(sqlite_url, tiny_space, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"units": 8, "n_layers": 1, "l2": 1e-6, "dropout": 0.0, "learning_rate": 1e-3}))
    space_file = tmp_path / "space.toml"
    space_file.write_text("\n".join(
        f"[{name}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in spec.items()) for name, spec in tiny_space.items()
    ))
    def argv(study: str, baseline_file: Path) -> list[str]:
        return ["launch", "--study", study, "--space", str(space_file), "--data", "digits", "--trials", "2",
                "--storage", sqlite_url, "--pruner", "none", "--baseline", str(baseline_file), "--no-progress"]

    assert main(argv("b", baseline)) == 0
    out = capsys.readouterr().out
    assert "baseline: trial 0, score" in out
    from gapsweep.api import baseline_trial

    record = baseline_trial("b", sqlite_url)
    assert record.number == 0 and record.params["units"] == 8 and record.attrs["baseline"] is True
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"unitz": 8}))
    assert main(argv("c", bad)) == 1
    assert "unitz" in capsys.readouterr().err
    assert [s.study_name for s in optuna.get_all_study_summaries(sqlite_url)] == ["b"]  # nothing half-written


def _checked(number: int, rank: int, tests: list[float]):
    from gapsweep.sweeps.analysis.verify import Checked

    return Checked(number, rank, 0.1, [0.1] * len(tests), tests)


def test_verify_flags_a_pick_beaten_beyond_the_noise():
    from gapsweep.sweeps.analysis.verify import judge

    verdict = judge([_checked(4, 0, [0.50, 0.52, 0.51]), _checked(7, 1, [0.30, 0.31, 0.29])])
    assert verdict.overtuned and verdict.best_on_test == 7 and verdict.most_robust == 7
    assert "trial 4" in verdict.reason and "trial 7" in verdict.reason


def test_verify_does_not_flag_differences_within_the_noise():
    from gapsweep.sweeps.analysis.verify import judge

    verdict = judge([_checked(4, 0, [0.50, 0.20, 0.35]), _checked(7, 1, [0.30, 0.31, 0.29])])
    assert not verdict.overtuned and verdict.best_on_test == 7
    # the pick's mean is higher and its spread wide: the steady trial is the most robust
    assert verdict.most_robust == 7
    steady = judge([_checked(1, 0, [0.30, 0.30, 0.30]), _checked(2, 1, [0.29, 0.10, 0.45])])
    assert not steady.overtuned and steady.most_robust == 1 and steady.best_on_test == 2


@pytest.mark.slow
def test_verify_prints_the_table_on_a_small_study(sqlite_url, tiny_space, capsys):
    config = SweepConfig(study="v", space=tiny_space, data=DataSpec("digits", train_fraction=0.3), trials=2, storage=sqlite_url, pruner="none")
    launch(config, progress=False)
    assert main(["verify", "v", "--top", "2", "--seeds", "2", "--storage", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert "test_loss_mean" in out and "most robust" in out
    assert main(["verify", "v", "--top", "1", "--seeds", "2", "--storage", sqlite_url, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    (row,) = payload["trials"]
    assert len(row["test_losses"]) == 2 and row["test_accuracy_mean"] > 0.5


@pytest.mark.slow
def test_cross_validation_runs_k_folds_and_stores_each_fold(sqlite_url, tiny_space, tmp_path):
    from gapsweep.api import list_trials
    from gapsweep.sweeps.analysis.export import load_best_model
    from gapsweep.sweeps.trial.objective import ObjectiveSettings

    config = SweepConfig(
        study="cv", space=tiny_space, data=DataSpec("wine", train_fraction=0.5), trials=2,
        storage=sqlite_url, pruner="none", objective=ObjectiveSettings(cv=3, keep_models=1),
    )
    study = launch(config, progress=False)
    from gapsweep.api import stored_val_losses
    from gapsweep.sweeps.data.datasets import load

    splits = load(config.data)
    losses = stored_val_losses("cv", sqlite_url)
    for frozen in study.trials:
        # One report per fold, at the fold's index: the pruner counts folds under cv.
        assert sorted(frozen.intermediate_values) == [0, 1, 2]
        # Every training and val row's out-of-fold loss is stored, for the paired rule.
        assert len(losses[frozen.number]) == len(splits.y_train) + len(splits.y_val)
    for trial in list_trials("cv", sqlite_url):
        assert trial.state == "COMPLETE"
        folds = [trial.attrs[f"curve.fold{i}.val_loss"] for i in range(3)]
        assert all(len(curve) == 6 for curve in folds) and "curve.fold3.val_loss" not in trial.attrs
        assert trial.value == pytest.approx(sum(trial.attrs["fold_scores"]) / 3)
        assert len(trial.attrs["curve.val_loss"]) == 6  # the folds' mean curve
        # Epochs run: the longest fold's, so the folds' mean best epoch never lies beyond them.
        assert trial.attrs["epochs_run"] == max(len(curve) for curve in folds) > trial.attrs["best_epoch"]
    # Re-ranked at the study's own λ, each trial's folds are scored again as they were: the stored score.
    for item in rerank_trials("cv", sqlite_url, k=2, gap_penalty=config.objective.gap_penalty):
        assert item.score.value == pytest.approx(item.record.value, rel=1e-12)
        assert item.score.gap == pytest.approx(item.record.attrs["gap"], rel=1e-12)
    # the kept model was retrained on all training data: it predicts the right number of classes
    model = load_best_model("cv", sqlite_url)
    assert model.output_shape[-1] == 3


def test_k_folds_partition_the_training_and_val_rows():
    import numpy as np

    from gapsweep.sweeps.data.cv import k_folds
    from gapsweep.sweeps.data.datasets import load

    splits = load(DataSpec("wine", train_fraction=0.5))
    folds, held_out = k_folds(splits, 4, seed=0)
    labelled = np.concatenate([splits.x_train, splits.x_val])
    held = np.concatenate([fold.x_val for fold in folds])
    assert len(held) == len(labelled) == len(splits.x_train) + len(splits.x_val)
    assert {row.tobytes() for row in held} == {row.tobytes() for row in labelled}
    # Each fold holds out the rows it names, and trains on all the others.
    for fold, rows in zip(folds, held_out):
        assert np.array_equal(fold.x_val, labelled[rows])
        assert len(fold.x_train) + len(fold.x_val) == len(labelled)
    # The same seed draws the same folds (every trial of a study sees them).
    again, _ = k_folds(splits, 4, seed=0)
    assert all(np.array_equal(a.x_val, b.x_val) for a, b in zip(folds, again))
    for fold in folds:
        assert not {r.tobytes() for r in fold.x_train} & {r.tobytes() for r in fold.x_val}


def test_multi_objective_best_is_the_exact_pareto_front(sqlite_url):
    import random

    from gapsweep.api import best_trials

    rng = random.Random(3)
    study = optuna.create_study(study_name="mo", storage=open_storage(sqlite_url), directions=["minimize", "minimize"])
    points = [(round(rng.uniform(0, 1), 3), round(rng.uniform(0, 1), 3)) for _ in range(40)] + [(0.5, 0.5), (0.5, 0.5)]
    for point in points:
        trial = study.ask()
        study.tell(trial, list(point))
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)

    def dominated(p: tuple[float, float]) -> bool:
        return any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)

    expected = sorted(i for i, p in enumerate(points) if not dominated(p))
    front = best_trials("mo", sqlite_url, k=1)
    assert sorted(t.number for t in front) == expected  # the whole front, whatever k
    assert [t.value for t in front] == sorted(t.value for t in front)  # by val loss
    assert {t.number for t in front} == {t.number for t in study.best_trials}  # Optuna agrees


@pytest.mark.slow
def test_a_multi_objective_sweep_runs_without_pruning(sqlite_url, tiny_space, capsys):
    from gapsweep.sweeps.trial.objective import ObjectiveSettings

    config = SweepConfig(
        study="mo-run", space=tiny_space, data=DataSpec("digits", train_fraction=0.3), trials=3,
        storage=sqlite_url, pruner="median", objective=ObjectiveSettings(multi_objective=True),
    )
    study = launch(config, progress=False)
    assert len(study.directions) == 2
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE and not trial.intermediate_values
        assert trial.values == pytest.approx([trial.user_attrs["val_loss"], trial.user_attrs["gap"]])
    assert main(["best", "--study", "mo-run", "--storage", sqlite_url, "--json"]) == 0
    front = json.loads(capsys.readouterr().out)["trials"]
    assert {row["number"] for row in front} == {t.number for t in study.best_trials}
    single = config.override(objective=ObjectiveSettings())
    with pytest.raises(Exception, match="multi-objective"):
        launch(single, progress=False)


def test_rerank_puts_trials_that_broke_max_gap_last_as_best_does():
    curves = {"curve.train_loss": [0.9, 0.4], "curve.val_loss": [1.0, 0.5]}
    records = [
        TrialRecord(0, "COMPLETE", 0.1, {}, {"curve.train_loss": [0.2, 0.1], "curve.val_loss": [0.3, 0.2], "feasible": False}),
        TrialRecord(1, "COMPLETE", 0.6, {}, {**curves, "feasible": True}),
    ]
    assert [item.record.number for item in rerank(records, penalty=0.0)] == [1, 0]
