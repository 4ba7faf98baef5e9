"""Generalization gate: the default (bounded) score against plain val-loss selection, on test rows.

For every task and seed, the same sweep runs twice on the same splits: with the default objective
(val + min(λ·gap, κ·SE), chance-level models last) and with plain val-loss selection (the additive
score at λ = 0). Every complete trial keeps its model, so each pick — and each earlier incumbent —
is scored on the test split no trial saw, row by row. Per task it reports the paired test-loss
difference (default − plain) with its 95 % interval, the gap ratio, chance-level picks and
overtuning; beside them, the paired rule's pick of the default sweep (``best --rule paired``), and
a bound no selection rule can beat: the lowest test loss of any complete trial, in either sweep,
whose gap is 30 % below plain's pick's (it peeks at the test rows, so it says whether the gap
target can be met at the test-loss target by choosing among these trials at all). Other epochs
than the restored ones keep no model, so for them the bound reads the stored curves: the lowest
val loss of any epoch, of any trial pruned or not, whose gap is 30 % below plain's pick's.

The default sweep's pick is then compared, on the same test rows, with what ``export`` can make of
the same sweep — the pick refit on train + val rows, the average of the K best trials, the K best
refit and averaged — and with the linear reference stored beside the study (its regularization
chosen on the val rows). One fresh process per task and seed runs both sweeps and these variants.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness, report
from gapsweep import DataSpec, ObjectiveSettings, SweepConfig, launch
from gapsweep.api import best_trials, list_trials, select_trials
from gapsweep.sweeps.analysis.export import export_best, load_best_model
from gapsweep.sweeps.data import losses as pure_losses
from gapsweep.sweeps.data.datasets import Splits, load
from gapsweep.storage import trial_keys
from gapsweep.sweeps.run.reference import reference_test_losses
from gapsweep.sweeps.trial.score import DEFAULT_KAPPA, gap
from gapsweep.sweeps.trial.trainer import prior_predictions

NAME = "generalization"
TITLE = "Generalization: the default score against plain val-loss selection"
#: Targets of the gate, per task.
TARGET_DIFF = 0.01  # paired mean test-loss difference at most +1 % of plain's test loss …
TARGET_GAP_CUT = 0.30  # … and the pick's gap 30 % smaller wherever plain's pick has a gap
TARGET_VARIANT_CUT = 0.05  # refit or ensemble: test loss 5 % below the single pick's on half the tasks
ENSEMBLE_K = 3
Z95 = 1.96

#: Small training splits, test splits no trial sees: data on which a sweep can pick badly.
TASKS: dict[str, DataSpec] = {
    "digits": DataSpec("digits", train_fraction=0.12, val_fraction=0.2, test_fraction=0.4),
    "synthetic": DataSpec(
        "synthetic", train_fraction=0.3, val_fraction=0.2, test_fraction=0.5,
        options={"n_samples": 1500, "n_features": 200, "n_classes": 4},
    ),
    "wine": DataSpec("wine", train_fraction=0.4, val_fraction=0.3, test_fraction=0.3),
    "breast_cancer": DataSpec("breast_cancer", train_fraction=0.2, val_fraction=0.2, test_fraction=0.6),
}

#: The two arms: the default objective, and plain val loss (no penalty, no guard).
ARMS: dict[str, ObjectiveSettings] = {
    "default": ObjectiveSettings(),
    "plain": ObjectiveSettings(score="additive", gap_penalty=0.0),
}

#: Seeds of a full run. κ's default was chosen after a run on seeds 0–9 (κ = 1 cost test loss on
#: wine and breast_cancer; κ = 0.5 did not), so the gate runs on seeds no choice has seen.
FULL_SEEDS = tuple(range(10, 20))

#: A small mlp space: ≤ 20 epochs (early stopping, patience 5), so 80 sweeps fit in ~25 minutes.
SPACE: dict[str, dict[str, Any]] = {
    "l2": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    "n_layers": {"type": "int", "low": 0, "high": 2},  # 0: the linear model with L2, as in the built-in space
    "dropout": {"type": "float", "low": 0.0, "high": 0.6, "when": "n_layers > 0"},
    "units": {"type": "int", "low": 16, "high": 128, "log": True, "when": "n_layers > 0"},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
    "epochs": {"type": "fixed", "value": 20},
    "batch_size": {"type": "fixed", "value": 32},
}


def _test_losses(model: Any, splits: Splits) -> np.ndarray:
    """Per-example pure test losses of a stored model, which takes raw rows."""
    return pure_losses.per_example(splits.task, splits.y_test, model.predict(splits.raw_test, verbose=0))


def _prior_test_loss(model: Any, splits: Splits) -> float:
    """The loss of the train-set prior (class frequencies, or the train mean) on the test rows."""
    width = int(np.prod(model.output_shape[1:]))
    prior = prior_predictions(
        splits.y_train, len(splits.y_test), width, splits.task.task == "classification", from_logits=False
    )
    return float(pure_losses.per_example(splits.task, splits.y_test, prior).mean())


#: What ``export`` can make of a sweep besides its single pick, as ``export_best`` options.
EXPORTS: dict[str, dict[str, Any]] = {
    "refit": {"refit": True},
    "ensemble": {"ensemble": ENSEMBLE_K},
    "refit_ensemble": {"refit": True, "ensemble": ENSEMBLE_K},
}
#: The rows compared with the default pick: the exports, and the linear reference.
VARIANTS = (*EXPORTS, "reference")


def _variant_losses(study: str, url: str, splits: Splits) -> dict[str, np.ndarray]:
    """Per-example test losses of each export of ``study`` (loaded with Keras alone, fed raw rows)
    and of its stored linear reference."""
    import keras

    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, options in EXPORTS.items():
            path = Path(folder) / f"{name}.keras"
            export_best(study, path, url, **options)
            out[name] = _test_losses(keras.models.load_model(path), splits)
    out["reference"] = reference_test_losses(study, url)
    return out


def _paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """The per-example difference ``a - b`` on the same test rows: its mean and spread."""
    d = a - b
    return {"diff_mean": float(d.mean()), "diff_sd": float(d.std(ddof=1))}


def run_seed(task: str, seed: int, trials: int, space: dict[str, Any]) -> dict[str, Any]:
    """Both arms' sweeps on one task and seed; every complete trial's model scored on test rows."""
    harness.prepare_process()
    data = dataclasses.replace(TASKS[task], seed=seed)
    splits = load(data)
    out: dict[str, Any] = {"task": task, "seed": seed, "n_test": len(splits.y_test), "arms": {}}
    losses: dict[str, np.ndarray] = {}
    for arm, settings in ARMS.items():
        objective = dataclasses.replace(settings, keep_models=trials)  # every complete trial's model
        with harness.sqlite_file() as url:
            config = SweepConfig(
                study=arm, space=space, data=data, objective=objective, trials=trials, seed=seed, storage=url
            )
            start = time.perf_counter()
            launch(config, progress=False)
            wall = time.perf_counter() - start
            every = list_trials(arm, url)
            complete = [record for record in every if record.state == "COMPLETE"]
            tests = {record.number: _test_losses(load_best_model(arm, url, trial=record.number), splits) for record in complete}
            if "prior_test_loss" not in out:
                out["prior_test_loss"] = _prior_test_loss(load_best_model(arm, url), splits)
            pick = best_trials(arm, url, 1)[0]
            selection = select_trials(arm, url)
            variants = _variant_losses(arm, url, splits) if arm == "default" else {}
        # Incumbents: the best trial so far (by this arm's own value), in the order trials ran.
        incumbents, best_value = [], math.inf
        for record in sorted(complete, key=lambda r: r.number):
            if record.value is not None and record.value < best_value:
                best_value = record.value
                incumbents.append(record.number)
        test_of = {number: float(values.mean()) for number, values in tests.items()}
        per_trial = [
            {"number": r.number, "gap": r.attrs.get("gap"), "val_loss": r.attrs.get("val_loss"), "test_loss": test_of[r.number]}
            for r in complete
        ]
        losses[arm] = tests[pick.number]
        out["variants"] = out.get("variants") or {
            name: {"test_loss": float(values.mean()), **_paired(values, tests[pick.number])}
            for name, values in variants.items()
        }
        out["arms"][arm] = {
            "wall_s": wall,
            "complete": len(complete),
            "pick": pick.number,
            "val_loss": pick.attrs.get("val_loss"),
            "val_se": pick.attrs.get("val_se"),
            "gap": pick.attrs.get("gap"),
            "applied_penalty": pick.attrs.get("applied_penalty"),
            "test_loss": test_of[pick.number],
            "chance_level": test_of[pick.number] >= out["prior_test_loss"],
            "incumbents": incumbents,
            # Overtuning: the pick's test loss minus the best test loss among the incumbents so far.
            "overtuning": test_of[pick.number] - min(test_of[number] for number in incumbents),
            "paired_pick": selection.pick.number if selection is not None else None,
            "paired_pick_test_loss": test_of.get(selection.pick.number) if selection is not None else None,
            "paired_pick_gap": selection.pick.attrs.get("gap") if selection is not None else None,
            "n_tied": len(selection.tied) if selection is not None else None,
            "trials": per_trial,
            # Every epoch any trial ran, pruned ones included: its gap and val loss.
            "epochs": _epoch_points(every),
        }
    out.update(_paired(losses["default"], losses["plain"]))
    out.update(_small_gap_bounds(out["arms"]))
    return out


def _epoch_points(records: list[Any]) -> list[list[float]]:
    """``[gap, val loss]`` of every epoch the trials ran, read from their stored curves."""
    points = []
    for record in records:
        curves = trial_keys.curves(record.attrs)
        points += [[gap(train, val), val] for train, val in zip(curves.get("train_loss", []), curves.get("val_loss", []))]
    return points


def _small_gap_bounds(arms: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """What a rule meeting the gap target could at best have picked, among both sweeps' trials
    and epochs whose gap is at least the target's cut below plain's pick's: the lowest test loss
    of such a complete trial, and the lowest val loss of such an epoch."""
    limit = (1 - TARGET_GAP_CUT) * (arms["plain"]["gap"] or 0.0)
    tests = [t["test_loss"] for arm in arms.values() for t in arm["trials"] if t["gap"] is not None and t["gap"] <= limit]
    vals = [val for arm in arms.values() for epoch_gap, val in arm["epochs"] if epoch_gap <= limit]
    return {"small_gap_best_test": min(tests, default=None), "small_gap_best_val": min(vals, default=None)}


def _excess_over_plain(results: list[dict[str, Any]], key: str, loss: str) -> list[float]:
    """Per seed, result ``key`` above plain's pick's ``loss``, as a share of it (seeds without one left out)."""
    return [(r[key] - r["arms"]["plain"][loss]) / r["arms"]["plain"][loss] for r in results if r[key] is not None]


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % interval (mean ± 1.96·SE) over seeds."""
    mean = statistics.fmean(values)
    half = Z95 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.inf
    return mean, mean - half, mean + half


def _pooled(parts: list[tuple[int, dict[str, float]]]) -> tuple[float, float, float]:
    """Mean and 95 % interval over every test row of every seed, from each seed's row count and
    paired difference (rows within a seed share models, so this interval is the narrower,
    optimistic one)."""
    n = sum(rows for rows, _ in parts)
    mean = sum(rows * d["diff_mean"] for rows, d in parts) / n
    second = sum((rows - 1) * d["diff_sd"] ** 2 + rows * d["diff_mean"] ** 2 for rows, d in parts) / n
    half = Z95 * math.sqrt(max(second - mean**2, 0.0) * n / (n - 1) / n)
    return mean, mean - half, mean + half


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task: the paired difference (over seeds, and pooled over rows), gaps, chance picks, overtuning."""
    rows = []
    for task in TASKS:
        mine = [r for r in results if r["task"] == task]
        if not mine:
            continue
        arm = {name: [r["arms"][name] for r in mine] for name in ARMS}
        plain_test = statistics.fmean(a["test_loss"] for a in arm["plain"])
        diff, low, high = _interval([r["diff_mean"] for r in mine])
        pooled, pooled_low, pooled_high = _pooled([(r["n_test"], r) for r in mine])
        paired = [a["paired_pick_test_loss"] - p["test_loss"] for a, p in zip(arm["default"], arm["plain"]) if a["paired_pick_test_loss"] is not None]
        gap = {name: statistics.fmean(a["gap"] for a in values) for name, values in arm.items()}
        plain_se = statistics.fmean(a["val_se"] for a in arm["plain"] if a["val_se"] is not None)
        # Seeds whose plain pick has a gap its val rows resolve, and among them those where some trial
        # had a gap the target's cut smaller: that trial's test loss against plain's pick, per seed.
        gapped = [r for r in mine if (r["arms"]["plain"]["gap"] or 0.0) > (r["arms"]["plain"]["val_se"] or 0.0)]
        bound = _excess_over_plain(gapped, "small_gap_best_test", "test_loss")
        # The same over every epoch's curves, in val loss, against plain's pick's val loss.
        epoch_bound = _excess_over_plain(gapped, "small_gap_best_val", "val_loss")
        rows.append({
            "task": task,
            "seeds": len(mine),
            "plain_test_loss": plain_test,
            "default_test_loss": statistics.fmean(a["test_loss"] for a in arm["default"]),
            "diff": diff, "diff_low": low, "diff_high": high,
            "diff_pct": diff / plain_test, "diff_low_pct": low / plain_test, "diff_high_pct": high / plain_test,
            "pooled_diff_pct": pooled / plain_test, "pooled_low_pct": pooled_low / plain_test,
            "pooled_high_pct": pooled_high / plain_test,
            "paired_rule_diff_pct": statistics.fmean(paired) / plain_test if paired else None,
            "plain_gap": gap["plain"], "default_gap": gap["default"],
            "gap_ratio": gap["default"] / gap["plain"] if gap["plain"] > 0 else None,
            "plain_val_se": plain_se,
            "gapped_seeds": len(gapped),
            "small_gap_seeds": len(bound),
            "small_gap_bound_pct": statistics.fmean(bound) if bound else None,
            "small_gap_within_target": sum(b <= TARGET_DIFF for b in bound),
            "epoch_small_gap_seeds": len(epoch_bound),
            "epoch_small_gap_val_pct": statistics.median(epoch_bound) if epoch_bound else None,
            "epoch_small_gap_within_target": sum(b <= TARGET_DIFF for b in epoch_bound),
            "plain_chance_picks": sum(a["chance_level"] for a in arm["plain"]),
            "default_chance_picks": sum(a["chance_level"] for a in arm["default"]),
            "plain_overtuning": statistics.fmean(a["overtuning"] for a in arm["plain"]),
            "default_overtuning": statistics.fmean(a["overtuning"] for a in arm["default"]),
            "plain_overtuned": sum(a["overtuning"] > 0 for a in arm["plain"]),
            "default_overtuned": sum(a["overtuning"] > 0 for a in arm["default"]),
        })
    return rows


def summarize_variants(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task and variant: its test loss against the default pick's on the same rows (variant −
    pick, as a share of the pick's), over seeds and pooled over rows, and the seeds it won."""
    rows = []
    for task in TASKS:
        mine = [r for r in results if r["task"] == task and r.get("variants")]
        for name in VARIANTS:
            pick_test = statistics.fmean(r["arms"]["default"]["test_loss"] for r in mine) if mine else math.nan
            diffs = [r["variants"][name] for r in mine]
            if not diffs:
                continue
            diff, low, high = _interval([d["diff_mean"] for d in diffs])
            pooled, pooled_low, pooled_high = _pooled([(r["n_test"], r["variants"][name]) for r in mine])
            rows.append({
                "task": task, "variant": name, "seeds": len(mine),
                "pick_test_loss": pick_test,
                "variant_test_loss": statistics.fmean(d["test_loss"] for d in diffs),
                "diff_pct": diff / pick_test, "diff_low_pct": low / pick_test, "diff_high_pct": high / pick_test,
                "pooled_low_pct": pooled_low / pick_test, "pooled_high_pct": pooled_high / pick_test,
                "seeds_lower": sum(d["diff_mean"] < 0 for d in diffs),
            })
    return rows


def variant_verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Refit and ensembles: ≥ 5 % below the pick on at least half the tasks, never significantly
    above it (interval over seeds entirely above 0). The reference: the pick is not significantly
    worse than it (its interval of reference − pick does not lie entirely below 0)."""
    out: dict[str, Any] = {}
    for name in VARIANTS:
        mine = [row for row in rows if row["variant"] == name]
        if name == "reference":
            out[name] = {row["task"]: {"pick_not_worse": not (row["diff_high_pct"] < 0)} for row in mine}
            continue
        lower = [row["task"] for row in mine if row["diff_pct"] <= -TARGET_VARIANT_CUT]
        higher = [row["task"] for row in mine if row["diff_low_pct"] > 0]
        out[name] = {
            "tasks_5pct_lower": lower, "tasks_significantly_higher": higher,
            "met": 2 * len(lower) >= len(mine) > 0 and not higher,
        }
    return out


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The gate per task. Plain's pick "has a gap" when its mean gap exceeds its mean val SE (a gap
    the val rows can resolve); elsewhere the gap target does not apply."""
    out: dict[str, Any] = {}
    for row in rows:
        has_gap = row["plain_gap"] > row["plain_val_se"]
        gap_cut = 1 - row["gap_ratio"] if row["gap_ratio"] is not None else 0.0
        out[row["task"]] = {
            "diff_met": row["diff_pct"] <= TARGET_DIFF and row["diff_low"] <= 0,
            "chance_met": row["default_chance_picks"] == 0,
            "plain_has_gap": has_gap,
            "gap_cut": gap_cut,
            "gap_met": (gap_cut >= TARGET_GAP_CUT) if has_gap else None,
        }
    return out


def plot(rows: list[dict[str, Any]], variant_rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [row["task"] for row in rows]
    xs = np.arange(len(tasks))
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    means = [100 * r["diff_pct"] for r in rows]
    errors = [[100 * (r["diff_pct"] - r["diff_low_pct"]) for r in rows], [100 * (r["diff_high_pct"] - r["diff_pct"]) for r in rows]]
    axes[0].errorbar(xs - 0.1, means, yerr=errors, fmt="o", capsize=4, label="default (95 % over seeds)")
    paired = [100 * r["paired_rule_diff_pct"] if r["paired_rule_diff_pct"] is not None else np.nan for r in rows]
    axes[0].plot(xs + 0.1, paired, "s", label="paired-rule pick (mean)")
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].axhline(100 * TARGET_DIFF, color="r", lw=0.8, ls="--", label="+1 % target")
    axes[0].set_title("test loss vs plain val-loss pick (%)", fontsize=10)
    axes[0].legend(fontsize=7)
    width = 0.38
    for axis, key, title in ((axes[1], "gap", "train/val gap of the pick"), (axes[2], "overtuning", "overtuning (test loss above an earlier incumbent)")):
        axis.bar(xs - width / 2, [r[f"plain_{key}"] for r in rows], width, label="plain", alpha=0.7)
        axis.bar(xs + width / 2, [r[f"default_{key}"] for r in rows], width, label="default", alpha=0.7)
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=7)
    for offset, name in zip(np.linspace(-0.3, 0.3, len(VARIANTS)), VARIANTS):
        mine = {r["task"]: r for r in variant_rows if r["variant"] == name}
        means = np.array([100 * mine[t]["diff_pct"] if t in mine else np.nan for t in tasks])
        lows = np.array([100 * mine[t]["diff_low_pct"] if t in mine else np.nan for t in tasks])
        highs = np.array([100 * mine[t]["diff_high_pct"] if t in mine else np.nan for t in tasks])
        errors = np.nan_to_num(np.array([means - lows, highs - means]), posinf=0.0, neginf=0.0)
        axes[3].errorbar(xs + offset, means, yerr=errors, fmt="o", capsize=3, label=name)
    axes[3].axhline(0, color="k", lw=0.8)
    axes[3].axhline(-100 * TARGET_VARIANT_CUT, color="r", lw=0.8, ls="--", label="−5 % target")
    axes[3].set_title("test loss vs the default pick (%, 95 % over seeds)", fontsize=10)
    axes[3].legend(fontsize=7)
    for axis in axes:
        axis.set_xticks(xs, tasks)
    fig.suptitle("default score vs plain val-loss selection: mean over seeds, picks scored on untouched test rows")
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    options = harness.parse_args(__doc__.splitlines()[0], argv)
    if options.quick:
        seeds, trials, space = (0,), 3, harness.QUICK_SPACE
    else:
        seeds, trials, space = FULL_SEEDS, 8, SPACE
    started, machine = time.monotonic(), harness.machine()
    calls = [(task, seed, trials, space) for task in TASKS for seed in seeds]
    results = harness.in_fresh_processes(run_seed, calls, workers=2)
    rows = summarize(results)
    outcome = verdict(rows)
    variant_rows = summarize_variants(results)
    variant_outcome = variant_verdict(variant_rows)
    variant_table = report.markdown_table(variant_rows, [
        "task", "variant", "seeds", "pick_test_loss", "variant_test_loss", "diff_pct", "diff_low_pct",
        "diff_high_pct", "pooled_low_pct", "pooled_high_pct", "seeds_lower",
    ])
    table = report.markdown_table(rows, [
        "task", "seeds", "plain_test_loss", "diff_pct", "diff_low_pct", "diff_high_pct", "pooled_low_pct",
        "pooled_high_pct", "paired_rule_diff_pct", "plain_gap", "default_gap", "gap_ratio", "plain_val_se",
        "gapped_seeds", "small_gap_seeds", "small_gap_bound_pct", "small_gap_within_target", "epoch_small_gap_seeds",
        "epoch_small_gap_val_pct", "epoch_small_gap_within_target", "plain_chance_picks", "default_chance_picks", "plain_overtuning", "default_overtuning",
    ])
    per_seed = [
        {"task": r["task"], "seed": r["seed"], "arm": arm, **{k: v for k, v in a.items() if k not in ("incumbents", "trials", "epochs")}}
        for r in results for arm, a in r["arms"].items()
    ]
    seed_table = report.markdown_table(per_seed, [
        "task", "seed", "arm", "pick", "val_loss", "val_se", "gap", "applied_penalty", "test_loss", "chance_level",
        "overtuning", "paired_pick", "n_tied", "paired_pick_test_loss",
    ])
    print(seed_table, table, variant_table, sep="\n\n")
    plot(rows, variant_rows, report.plot_path(options.out, NAME))
    harness.finish(machine, started)
    payload = {
        "benchmark": NAME, "quick": options.quick, "machine": machine,
        "settings": {
            "seeds": list(seeds), "trials": trials, "space": space, "arms": {k: v.to_dict() for k, v in ARMS.items()},
            "tasks": {name: spec.to_dict() for name, spec in TASKS.items()}, "pruner": "median", "sampler": "tpe",
        },
        "rows": rows, "variant_rows": variant_rows, "results": results,
        "target": {
            "diff_at_most": TARGET_DIFF, "interval_reaches_zero": True, "chance_picks": 0,
            "gap_cut_at_least": TARGET_GAP_CUT, "outcomes": outcome,
            "variant_cut_at_least": TARGET_VARIANT_CUT, "variant_outcomes": variant_outcome,
        },
    }
    report.write_json(options.out, NAME, payload)

    def met(flag: bool | None) -> str:
        return "n/a" if flag is None else ("met" if flag else "missed")

    verdicts = "; ".join(
        f"{task}: test loss {row['diff_pct']:+.1%} [{row['diff_low_pct']:+.1%}, {row['diff_high_pct']:+.1%}] "
        f"(**{met(o['diff_met'])}**), chance-level picks {row['default_chance_picks']} (**{met(o['chance_met'])}**), "
        f"gap {o['gap_cut']:.0%} smaller (**{met(o['gap_met'])}**{'' if o['plain_has_gap'] else ', plain has no resolvable gap'})"
        for (task, o), row in zip(outcome.items(), rows)
    )
    export_verdicts = "; ".join(
        f"{name}: {len(o['tasks_5pct_lower'])} of {len(TASKS)} tasks ≥ {TARGET_VARIANT_CUT:.0%} lower "
        f"({', '.join(o['tasks_5pct_lower']) or 'none'}), significantly higher on "
        f"{', '.join(o['tasks_significantly_higher']) or 'none'} (**{met(o['met'])}**)"
        for name, o in variant_outcome.items() if name != "reference"
    )
    reference_verdicts = "; ".join(
        f"{task}: **{met(o['pick_not_worse'])}**" for task, o in variant_outcome["reference"].items()
    )
    body = "\n\n".join([
        f"`python -m benchmarks.generalization{' --quick' if options.quick else ''}`: for each task and seed the "
        f"same sweep twice — the default objective (bounded score, λ = 1, κ = {DEFAULT_KAPPA:g}) and plain val-loss selection "
        f"(additive score, λ = 0) — {trials} trials each (TPE, median pruning, patience 5), seeds "
        f"{seeds[0]}–{seeds[-1]} (the seed also draws the split). Every complete trial keeps its model, so the pick "
        "and every earlier incumbent are scored on the test split no trial saw, per example. Tasks: digits at a "
        "12 % training split; `synthetic` (1,500 × 200, 4 classes; 30 % train); wine (40 % train, 30 % val); "
        "breast_cancer (binary, 20 % train, 60 % test).",
        report.machine_line(machine),
        "Per task (means over seeds; `diff_*` = paired test-loss difference default − plain as a share of plain's "
        "test loss: `diff_pct` the mean, `diff_low/high_pct` its 95 % interval over seeds (mean ± 1.96·SE of the "
        "per-seed mean differences), `pooled_*` the narrower interval over all test rows pooled across seeds; "
        "`paired_rule_diff_pct`: the default sweep's `best --rule paired` pick; chance-level: the pick's test loss "
        "≥ the train prior's; overtuning: the pick's test loss minus the best test loss among the incumbents up to "
        f"it; `gapped_seeds`: seeds whose plain pick's gap exceeds its val SE; `small_gap_seeds`: of those, seeds "
        f"where some complete trial of either sweep had a gap ≥ {TARGET_GAP_CUT:.0%} below plain's pick's; "
        "`small_gap_bound_pct`: the lowest test loss among those trials against plain's pick, as a share of it "
        "(mean over those seeds; it peeks at the test rows, so no selection rule meeting the gap cut could do "
        f"better with these trials); `small_gap_within_target`: seeds where that bound is ≤ +{TARGET_DIFF:.0%}; "
        "`epoch_small_gap_*`: the same over every epoch of every trial, pruned ones included, read from the stored "
        "curves in val loss (other epochs keep no model): seeds with such an epoch, the median over them of its "
        f"lowest val loss against plain's pick's val loss, and seeds where that is ≤ +{TARGET_DIFF:.0%}):\n\n" + table,
        "![test-loss difference, gap and overtuning per task](benchmarks/generalization.png)",
        "Per seed:\n\n" + seed_table,
        f"Target: paired mean test-loss difference ≤ +{TARGET_DIFF:.0%} with its 95 % interval reaching 0 or below; "
        f"zero chance-level picks; gap ≥ {TARGET_GAP_CUT:.0%} smaller wherever plain's pick has a gap (mean gap "
        f"above its mean val SE). {verdicts}.",
        "Against the default pick (`diff_*` = paired test-loss difference variant − pick as a share of the "
        f"pick's test loss, intervals as above; `seeds_lower`: seeds where the variant's test loss was lower): "
        f"`refit`, the pick trained again on train + val rows for its early-stopped epochs (`export --refit`); "
        f"`ensemble`, the average of up to {ENSEMBLE_K} stored models chosen on the val rows by forward selection "
        f"(`export --ensemble {ENSEMBLE_K}`); "
        f"`refit_ensemble`, both; `reference`, the linear model stored beside the study (logistic regression, "
        "its strength chosen on the val rows), refit on the training rows:\n\n" + variant_table,
        f"Target (refit or ensemble): test loss ≥ {TARGET_VARIANT_CUT:.0%} lower than the pick on at least half "
        f"the tasks and never significantly higher. {export_verdicts}. Target (reference): the pick not "
        f"significantly worse than the linear reference (95 %, over seeds). {reference_verdicts}.",
        "Space: `" + ", ".join(f"{k}: {v}" for k, v in space.items()) + "`",
    ])
    report.write_section(options.out, NAME, TITLE, body)


if __name__ == "__main__":
    main()
