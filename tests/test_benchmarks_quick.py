"""Each benchmark's ``--quick`` run, as CI would start it, writing into a temporary folder.

Only the shape of the results is checked: timings depend on the machine and its load.
"""

from __future__ import annotations

import pytest

from quick_benchmarks import run_quick

pytestmark = pytest.mark.slow


def test_overhead_quick(tmp_path):
    payload = run_quick("overhead", tmp_path)
    backends = {row["backend"] for row in payload["rows"]}
    assert "sqlite" in backends
    assert backends | set(payload["skipped"]) == {"sqlite", "postgresql"}
    for backend in backends:
        variants = {row["variant"] for row in payload["rows"] if row["backend"] == backend}
        assert {"optuna no-op", "optuna same work", "gapsweep launch"} <= variants
        assert payload["target"]["ratio"][backend] > 0
    for row in payload["rows"]:
        assert row["trials_per_s"] > 0 and row["commits_per_trial"] > 0
    gapsweep = next(r for r in payload["rows"] if r["variant"] == "gapsweep launch")
    assert gapsweep["user_attrs_per_trial"] > 0


def test_pruning_quick(tmp_path):
    payload = run_quick("pruning", tmp_path)
    assert [row["pruner"] for row in payload["rows"]] == ["none", "median"]
    for run in payload["runs"]:
        assert len(run["trials"]) == payload["settings"]["trials"]
        assert run["epochs"] == sum(t["epochs_run"] for t in run["trials"]) > 0
        assert run["wall_s"] > 0
    assert {"epoch_cut", "time_cut", "best_val_change"} <= set(payload["target"]["mean"])


def test_checkpoints_quick(tmp_path):
    payload = run_quick("checkpoints", tmp_path)
    assert [row["arm"] for row in payload["rows"]] == ["every epoch", "every 30 s (default)", "never"]
    for row in payload["rows"]:
        assert row["same_epochs"] and row["epochs"] > 0 and row["wall_s"] > 0  # the seed fixes the trials
    default = next(row for row in payload["rows"] if row["arm"] == "every 30 s (default)")
    target = payload["target"]
    assert target["excess"] == pytest.approx(default["ratio_vs_never"] - 1)
    assert target["met"] == (target["excess"] <= target["default_excess_at_most"])


def test_generalization_quick(tmp_path):
    payload = run_quick("generalization", tmp_path)
    tasks = ("digits", "synthetic", "wine", "breast_cancer")
    assert [row["task"] for row in payload["rows"]] == list(tasks)
    for result in payload["results"]:
        assert result["prior_test_loss"] > 0 and result["n_test"] > 0
        for arm in ("default", "plain"):
            picked = result["arms"][arm]
            assert picked["test_loss"] > 0 and picked["gap"] >= 0 and picked["overtuning"] >= 0
            assert picked["pick"] in picked["incumbents"] and picked["incumbents"][-1] == picked["pick"]
        # Plain selection picks the lowest val loss; the default's penalty moved its pick's score
        # by at most κ = 0.5 SE.
        plain, default = result["arms"]["plain"], result["arms"]["default"]
        assert plain["applied_penalty"] == 0
        assert default["applied_penalty"] <= 0.5 * default["val_se"] + 1e-9
        # The small-gap bound is the best test loss among both sweeps' trials 30 % below plain's gap.
        trials = [t for arm in ("default", "plain") for t in result["arms"][arm]["trials"]]
        assert plain["pick"] in {t["number"] for t in result["arms"]["plain"]["trials"]}
        small = [t["test_loss"] for t in trials if t["gap"] <= 0.7 * plain["gap"]]
        assert result["small_gap_best_test"] == (min(small) if small else None)
        # Every epoch's curve point is there, and the pick's own restored epoch among them.
        epochs = [e for arm in ("default", "plain") for e in result["arms"][arm]["epochs"]]
        assert any(val == pytest.approx(plain["val_loss"]) for _, val in result["arms"]["plain"]["epochs"])
        small_epochs = [val for epoch_gap, val in epochs if epoch_gap <= 0.7 * plain["gap"]]
        assert result["small_gap_best_val"] == (min(small_epochs) if small_epochs else None)
    for row in payload["rows"]:
        # One seed has no interval over seeds (null in JSON); the rows still give the pooled one.
        assert row["seeds"] == 1 and row["diff_low"] is None and row["diff_high"] is None
        assert row["pooled_low_pct"] <= row["diff_pct"] <= row["pooled_high_pct"]
    assert set(payload["target"]["outcomes"]) == set(tasks)
    # Refit, ensembles and the linear reference are scored on the same test rows as the pick.
    variants = ("refit", "ensemble", "refit_ensemble", "reference")
    for result in payload["results"]:
        assert set(result["variants"]) == set(variants)
        for name, scored in result["variants"].items():
            assert scored["test_loss"] > 0 and scored["diff_sd"] >= 0
            pick = result["arms"]["default"]["test_loss"]
            assert scored["diff_mean"] == pytest.approx(scored["test_loss"] - pick, abs=1e-6)
    assert [(row["task"], row["variant"]) for row in payload["variant_rows"]] == [(t, v) for t in tasks for v in variants]
    assert set(payload["target"]["variant_outcomes"]) == set(variants)


def test_vs_kerastuner_quick(tmp_path):
    payload = run_quick("vs_kerastuner", tmp_path)
    assert [run["method"] for run in payload["runs"]] == ["gapsweep", "kt_random", "kt_hyperband"]
    for run in payload["runs"]:
        assert run["trials"] >= 1 and run["epochs"] >= 1 and run["timeline"]
        times = [point["t"] for point in run["timeline"]]
        assert times == sorted(times) and times[-1] <= run["wall_s"]
        assert all(point["test_loss"] > 0 for point in run["timeline"])
    assert set(payload["target"]["per_seed"]["0"]) >= {"hyperband_final_test_loss", "time_fraction", "met"}
    # gapsweep's final point is its exported refit model, timed within its wall time.
    ours = payload["runs"][0]["timeline"]
    assert ours[-1]["trial"] == "export --refit" and ours[-1]["t"] == payload["runs"][0]["wall_s"]


def test_jobs_quick(tmp_path):
    payload = run_quick("jobs", tmp_path)
    assert [row["arm"] for row in payload["rows"]] == ["default", "--jobs 1"]
    assert payload["rows"][0]["jobs"] == payload["machine"]["nproc"] and payload["rows"][1]["jobs"] == 1
    for run in payload["runs"]:
        assert sum(run["counts"][state] for state in ("complete", "pruned")) == payload["settings"]["trials"]
        assert run["wall_s"] > 0 and run["test_loss"] > 0 and 0 <= run["test_accuracy"] <= 1
    target = payload["target"]
    assert target["ratio"] == pytest.approx(payload["rows"][0]["wall_s"] / payload["rows"][1]["wall_s"])
    assert target["time_met"] == (target["ratio"] <= target["ratio_at_most"])


def test_speed_quick(tmp_path):
    payload = run_quick("speed", tmp_path)
    tasks = list(payload["settings"]["tasks"])
    assert [(row["task"], row["arm"]) for row in payload["rows"]] == [
        (task, arm) for task in tasks for arm in ("gapsweep", "plain", "floor")
    ]
    for run in payload["runs"]:
        assert run["wall_s"] > 0 and sum(t["epochs"] for t in run["trials"]) > 0
    for task in tasks:
        gapsweep, plain, floor = (next(r for r in payload["runs"] if r["task"] == task and r["arm"] == arm) for arm in ("gapsweep", "plain", "floor"))
        assert len(gapsweep["trials"]) == len(plain["trials"]) == payload["settings"]["trials"][task]
        # The floor refits exactly the epochs gapsweep's trials ran.
        assert [t["epochs"] for t in floor["trials"]] == [t["epochs"] for t in gapsweep["trials"] if t["epochs"]]
    for task, outcome in payload["target"]["per_task"].items():
        row = next(r for r in payload["rows"] if r["task"] == task and r["arm"] == "gapsweep")
        assert outcome["sweep_vs_plain"] == pytest.approx(row["sweep_vs_plain"])
        assert outcome["epoch_met"] == (row["epoch_vs_floor"] <= payload["target"]["epoch_ratio_at_most"])
