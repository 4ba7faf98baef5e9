"""Generalization: the gap-penalized score (λ > 0) against plain val loss (λ = 0) on small data.

For every task and seed, one sweep per λ on the same splits. Each sweep's best trial (by its own
score) is retrained with ``gapsweep.sweeps.trial.trainer.train_params`` on the same splits and seed, then measured on
the held-out test split the sweep never saw: test loss (pure cross-entropy), test accuracy, and
the train/val gap at the epoch early stopping restored. One fresh process per task and seed.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import harness, report
from gapsweep import DataSpec, ObjectiveSettings, SweepConfig, best_trials, launch
from gapsweep.sweeps.data.datasets import load
from gapsweep.sweeps.trial.trainer import train_params

NAME = "generalization"
TITLE = "Generalization: gap penalty vs plain val loss"
TARGET_GAP_CUT = 0.30
#: Plain val loss, a light penalty, and the default.
PENALTIES = (0.0, 0.25, 1.0)

#: Small training splits, large test splits: data on which a sweep can pick a memorizer.
TASKS: dict[str, DataSpec] = {
    "digits": DataSpec("digits", train_fraction=0.12, val_fraction=0.2, test_fraction=0.4),
    "synthetic": DataSpec(
        "synthetic", train_fraction=0.3, val_fraction=0.2, test_fraction=0.5,
        options={"n_samples": 1500, "n_features": 200, "n_classes": 4},
    ),
}


#: The built-in mlp space with narrower width, depth and epochs, so 30 sweeps fit in 20 minutes.
SPACE: dict[str, dict[str, Any]] = {
    "l2": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.6},
    "units": {"type": "int", "low": 16, "high": 256, "log": True},
    "n_layers": {"type": "int", "low": 1, "high": 3},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
    "epochs": {"type": "int", "low": 10, "high": 40, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64]},
}


def sweep_and_retrain(
    task: str, seed: int, trials: int, space: dict[str, Any], penalties: tuple[float, ...]
) -> list[dict[str, Any]]:
    """One sweep per λ on the task's splits for ``seed``; each best trial retrained and tested."""
    harness.prepare_process()
    data = dataclasses.replace(TASKS[task], seed=seed)
    splits = load(data)
    results = []
    for penalty in penalties:
        objective = ObjectiveSettings(gap_penalty=penalty)
        with harness.sqlite_file() as url:
            config = SweepConfig(
                study=f"{task}-{penalty:g}", space=space, data=data, objective=objective,
                trials=trials, seed=seed, storage=url,
            )
            start = time.perf_counter()
            launch(config, progress=False)
            wall = time.perf_counter() - start
            best = best_trials(config.study, url, k=1)[0]
        params = best.summary()["params"]
        # The trial's reproducibility record holds its seed: the retrain starts where it started.
        result = train_params(
            params, splits, seed=int(best.attrs["repro"]["seed"]), penalty=penalty, patience=objective.patience
        )
        test = result.model.evaluate(splits.x_test, splits.y_test, verbose=0, return_dict=True, batch_size=1024)
        results.append({
            "task": task,
            "seed": seed,
            "penalty": penalty,
            "sweep_wall_s": wall,
            "best_trial": best.number,
            "params": params,
            "sweep_val_loss": best.attrs.get("val_loss"),
            "val_loss": result.score.val_loss,
            "train_loss": result.score.train_loss,
            "gap": result.score.gap,
            "best_epoch": result.score.epoch,
            "test_loss": float(test["pure_loss"]),
            "test_accuracy": float(test["accuracy"]),
            "test_minus_train": float(test["pure_loss"]) - result.score.train_loss,
        })
    return results


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds, per task and λ."""
    rows = []
    for task in TASKS:
        for penalty in sorted({r["penalty"] for r in results}):
            mine = [r for r in results if r["task"] == task and r["penalty"] == penalty]
            if not mine:
                continue
            row: dict[str, Any] = {"task": task, "penalty": penalty, "seeds": len(mine)}
            for key in ("gap", "test_loss", "test_accuracy", "val_loss", "test_minus_train"):
                values = [r[key] for r in mine]
                row[key] = statistics.mean(values)
                row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            rows.append(row)
    return rows


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task and λ > 0: how much smaller the mean gap is, and whether mean test loss is no worse."""
    out: dict[str, Any] = {}
    for row in rows:
        if row["penalty"] == 0:
            continue
        plain = next(r for r in rows if r["task"] == row["task"] and r["penalty"] == 0)
        gap_cut = 1 - row["gap"] / plain["gap"] if plain["gap"] > 0 else 0.0
        out[f"{row['task']}, λ={row['penalty']:g}"] = {
            "gap_cut": gap_cut,
            "test_loss_change": row["test_loss"] / plain["test_loss"] - 1,
            "gap_met": gap_cut >= TARGET_GAP_CUT,
            "test_loss_met": row["test_loss"] <= plain["test_loss"],
        }
    return out


def plot(results: list[dict[str, Any]], rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    penalties = sorted({r["penalty"] for r in rows})
    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    width = 0.8 / len(penalties)
    for axis, key, label in zip(axes, ("gap", "test_loss", "test_accuracy"),
                                ("train/val gap (restored epoch)", "held-out test loss", "held-out test accuracy")):
        for i, penalty in enumerate(penalties):
            xs = [t + i * width for t in range(len(tasks))]
            means = [next(r[key] for r in rows if r["task"] == task and r["penalty"] == penalty) for task in tasks]
            stds = [next(r[f"{key}_std"] for r in rows if r["task"] == task and r["penalty"] == penalty) for task in tasks]
            axis.bar(xs, means, width, yerr=stds, capsize=3, label=f"λ={penalty:g}", alpha=0.7)
            for x, task in zip(xs, tasks):
                dots = [r[key] for r in results if r["task"] == task and r["penalty"] == penalty]
                axis.plot([x] * len(dots), dots, "k.", markersize=4)
        axis.set_xticks([t + width * (len(penalties) - 1) / 2 for t in range(len(tasks))], tasks)
        axis.set_title(label, fontsize=10)
    axes[0].legend()
    fig.suptitle("best trial of each sweep, retrained: mean ± std over seeds (dots: seeds)")
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    options = harness.parse_args(__doc__.splitlines()[0], argv)
    if options.quick:
        seeds, trials, space, penalties = (0,), 2, harness.QUICK_SPACE, (0.0, 2.0)
    else:
        seeds, trials, space, penalties = (0, 1, 2, 3, 4), 10, SPACE, PENALTIES
    started, machine = time.monotonic(), harness.machine()
    calls = [(task, seed, trials, space, penalties) for task in TASKS for seed in seeds]
    results = [result for job in harness.in_fresh_processes(sweep_and_retrain, calls, workers=2) for result in job]
    rows = summarize(results)
    outcome = verdict(rows)
    columns = ["task", "penalty", "seeds", "gap", "gap_std", "test_loss", "test_loss_std",
               "test_accuracy", "test_accuracy_std", "val_loss", "test_minus_train"]
    table = report.markdown_table(rows, columns)
    seed_table = report.markdown_table(
        results, ["task", "seed", "penalty", "best_trial", "sweep_val_loss", "val_loss", "train_loss", "gap",
                  "test_loss", "test_accuracy"],
    )
    print(seed_table, table, sep="\n\n")

    plot(results, rows, report.plot_path(options.out, NAME))
    harness.finish(machine, started)
    payload = {
        "benchmark": NAME, "quick": options.quick, "machine": machine,
        "settings": {"seeds": list(seeds), "trials": trials, "space": space, "penalties": list(penalties),
                     "tasks": {name: spec.to_dict() for name, spec in TASKS.items()}, "pruner": "median", "sampler": "tpe"},
        "rows": rows, "results": results,
        "target": {"gap_cut_at_least": TARGET_GAP_CUT, "test_loss": "no worse than λ=0", "outcomes": outcome},
    }
    report.write_json(options.out, NAME, payload)
    verdicts = "; ".join(
        f"{key}: gap {o['gap_cut']:.0%} smaller (**{'met' if o['gap_met'] else 'missed'}**), test loss "
        f"{o['test_loss_change']:+.1%} (**{'met' if o['test_loss_met'] else 'missed'}**)"
        for key, o in outcome.items()
    )
    body = "\n\n".join([
        f"`python -m benchmarks.generalization{' --quick' if options.quick else ''}`: {trials} trials per sweep "
        f"(space below, TPE, median pruning, patience 5; two sweeps at a time, one per core), "
        f"λ ∈ {{{', '.join(f'{p:g}' for p in penalties)}}}, seeds {', '.join(map(str, seeds))} (the seed also "
        "draws the split). Tasks: digits with a 12 % training split (216 rows; 359 val, 719 test) and "
        "`synthetic` (1,500 rows × 200 features, 10 informative, 4 classes; 30 % train, 20 % val, 50 % test). "
        "Gap = max(0, val − train) of the pure losses at the restored epoch of the retrained best trial.",
        report.machine_line(machine),
        "Means ± std over seeds:\n\n" + table,
        "![gap, test loss and accuracy per task and λ](benchmarks/generalization.png)",
        "Per seed:\n\n" + seed_table,
        f"Target: gap ≥ {TARGET_GAP_CUT:.0%} smaller and test loss no worse than λ = 0 (on the means). {verdicts}.",
        "Space: `" + ", ".join(f"{k}: {v}" for k, v in space.items()) + "`",
    ])
    report.write_section(options.out, NAME, TITLE, body)


if __name__ == "__main__":
    main()
