"""Pruning: the same sweep with the median pruner and with none, same seeds and trial budget.

Each sweep runs in its own fresh process (TensorFlow imported before the clock starts) on its own
SQLite file. Counted: epochs trained (the sum of every trial's ``epochs_run``, pruned trials
included), wall time of ``launch``, and the best val loss among complete trials.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import harness, report
from gapsweep import DataSpec, SweepConfig, launch, list_trials

NAME = "pruning"
TITLE = "Pruning: median vs none"
PRUNERS = ("none", "median")
TARGET_EPOCH_CUT = 0.50
TARGET_VAL_TOLERANCE = 0.02
DATA = DataSpec("digits", train_fraction=0.3)

def sweep(pruner: str, seed: int, trials: int, space: str | dict[str, Any]) -> dict[str, Any]:
    """One timed ``launch`` (meant for a fresh process); its trials as plain dicts."""
    harness.prepare_process()
    with harness.sqlite_file() as url:
        config = SweepConfig(
            study=f"pruning-{pruner}", space=space, data=DATA, pruner=pruner, trials=trials, seed=seed, storage=url
        )
        start = time.perf_counter()
        launch(config, progress=False)
        wall = time.perf_counter() - start
        records = list_trials(config.study, url)
    first = min(r.started for r in records if r.started is not None)
    trials_out = [
        {
            "number": r.number,
            "state": r.state,
            "epochs_run": int(r.attrs.get("epochs_run", 0)),
            "val_loss": r.attrs.get("val_loss"),
            "score": r.value,
            "done_s": (r.completed - first).total_seconds() if r.completed else None,
        }
        for r in records
    ]
    val_losses = [t["val_loss"] for t in trials_out if t["state"] == "COMPLETE" and t["val_loss"] is not None]
    scores = [t["score"] for t in trials_out if t["state"] == "COMPLETE" and t["score"] is not None]
    return {
        "pruner": pruner,
        "seed": seed,
        "wall_s": wall,
        "epochs": sum(t["epochs_run"] for t in trials_out),
        "pruned": sum(t["state"] == "PRUNED" for t in trials_out),
        "complete": sum(t["state"] == "COMPLETE" for t in trials_out),
        "best_val_loss": min(val_losses) if val_losses else None,
        "best_score": min(scores) if scores else None,
        "trials": trials_out,
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per pruner: means over seeds (epochs, wall time, best val loss, best score)."""
    rows = []
    for pruner in PRUNERS:
        mine = [r for r in runs if r["pruner"] == pruner]
        row: dict[str, Any] = {"pruner": pruner, "seeds": len(mine)}
        for key in ("epochs", "wall_s", "pruned", "best_val_loss", "best_score"):
            values = [r[key] for r in mine if r[key] is not None]
            row[key] = statistics.mean(values) if values else None
        rows.append(row)
    return rows


def verdict(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Epochs saved and best-val-loss change of median against none, per seed and on the means."""
    per_seed = []
    for seed in sorted({r["seed"] for r in runs}):
        none, median = (next(r for r in runs if r["seed"] == seed and r["pruner"] == p) for p in PRUNERS)
        per_seed.append({
            "seed": seed,
            "epoch_cut": 1 - median["epochs"] / none["epochs"],
            "time_cut": 1 - median["wall_s"] / none["wall_s"],
            "best_val_change": median["best_val_loss"] / none["best_val_loss"] - 1,
        })
    means = {key: statistics.mean(s[key] for s in per_seed) for key in ("epoch_cut", "time_cut", "best_val_change")}
    return {
        "per_seed": per_seed,
        "mean": means,
        "epochs_met": means["epoch_cut"] >= TARGET_EPOCH_CUT,
        "val_met": means["best_val_change"] <= TARGET_VAL_TOLERANCE,
    }


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"none": "tab:gray", "median": "tab:blue"}
    for run in runs:
        label = f"{run['pruner']}" if run["seed"] == runs[0]["seed"] else None
        epochs = [t["epochs_run"] for t in run["trials"]]
        left.plot(range(1, len(epochs) + 1), [sum(epochs[: i + 1]) for i in range(len(epochs))],
                  color=colors[run["pruner"]], label=label, alpha=0.8)
        best, xs, ys = float("inf"), [], []
        for t in sorted(run["trials"], key=lambda t: t["done_s"] or 0.0):
            if t["state"] == "COMPLETE" and t["val_loss"] is not None and t["val_loss"] < best:
                best = t["val_loss"]
                xs.append(t["done_s"])
                ys.append(best)
        right.step(xs + [run["wall_s"]], ys + ys[-1:], where="post", color=colors[run["pruner"]], label=label, alpha=0.8)
    left.set_xlabel("trial")
    left.set_ylabel("epochs trained, cumulative")
    right.set_xlabel("wall time (s)")
    right.set_ylabel("best val loss so far (log scale)")
    right.set_yscale("log")
    for axis in (left, right):
        axis.legend()
    fig.suptitle("digits, train_fraction 0.3: median pruning vs none (one line per seed)")
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    options = harness.parse_args(__doc__.splitlines()[0], argv)
    seeds, trials, space = ((0,), 4, harness.QUICK_SPACE) if options.quick else ((0, 1, 2), 20, "mlp")
    started, machine = time.monotonic(), harness.machine()
    runs = [harness.in_fresh_process(sweep, pruner, seed, trials, space) for seed in seeds for pruner in PRUNERS]

    rows = summarize(runs)
    outcome = verdict(runs)
    per_seed_rows = [
        {"seed": r["seed"], "pruner": r["pruner"], "epochs": r["epochs"], "pruned": r["pruned"], "wall_s": r["wall_s"],
         "best_val_loss": r["best_val_loss"], "best_score": r["best_score"]}
        for r in runs
    ]
    table = report.markdown_table(rows, ["pruner", "seeds", "epochs", "pruned", "wall_s", "best_val_loss", "best_score"])
    seed_table = report.markdown_table(per_seed_rows, ["seed", "pruner", "epochs", "pruned", "wall_s", "best_val_loss", "best_score"])
    print(seed_table, table, sep="\n\n")

    plot(runs, report.plot_path(options.out, NAME))
    mean = outcome["mean"]
    harness.finish(machine, started)
    payload = {
        "benchmark": NAME, "quick": options.quick, "machine": machine,
        "settings": {"seeds": list(seeds), "trials": trials, "space": space, "data": DATA.to_dict(), "sampler": "tpe"},
        "rows": rows, "runs": runs,
        "target": {"epoch_cut_at_least": TARGET_EPOCH_CUT, "best_val_within": TARGET_VAL_TOLERANCE, **outcome},
    }
    report.write_json(options.out, NAME, payload)
    body = "\n\n".join([
        f"`python -m benchmarks.pruning{' --quick' if options.quick else ''}`: digits (train_fraction 0.3), "
        f"space `{space if isinstance(space, str) else 'quick'}`, TPE, {trials} trials per sweep, seeds "
        f"{', '.join(map(str, seeds))}; each sweep alone in a fresh process on its own SQLite file. "
        "Epochs = sum of `epochs_run` over all trials; best val loss = lowest `val_loss` of a complete trial.",
        report.machine_line(machine),
        "Per seed:\n\n" + seed_table,
        "Means over seeds:\n\n" + table,
        "![cumulative epochs and best val loss](benchmarks/pruning.png)",
        f"Target: ≥ {TARGET_EPOCH_CUT:.0%} fewer epochs — {mean['epoch_cut']:.0%} fewer "
        f"(**{'met' if outcome['epochs_met'] else 'missed'}**), wall time {mean['time_cut']:.0%} less; best val loss "
        f"within {TARGET_VAL_TOLERANCE:.0%} — {mean['best_val_change']:+.1%} "
        f"(**{'met' if outcome['val_met'] else 'missed'}**). Means of the per-seed changes.",
    ])
    report.write_section(options.out, NAME, TITLE, body)


if __name__ == "__main__":
    main()
