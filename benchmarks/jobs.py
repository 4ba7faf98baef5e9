"""Parallel trials: the default ``gapsweep launch`` (one job per usable core) against ``--jobs 1``.

Both arms run the same seeded digits sweep (train_fraction 0.3, built-in ``mlp`` space, TPE,
median pruning, 20 trials) as the command a user types, each in a fresh process on its own SQLite
file, arms alternating seed by seed so a burst of load hits them alike. The clock covers the
whole command, TensorFlow's import in every process included: that is what a user waits for, and
what parallel jobs pay N times over (``launch`` starts its jobs before it prepares the study, so
their imports overlap its own work).

Quality: the best trial's stored model (it takes raw rows) is scored on the held-out test split
(cross-entropy, clipped as Keras clips it), off the clock. The parallel sweep samples with fewer
finished trials to learn from (TPE's constant liar), so its pick may differ; the target asks
that the test loss stay within the seeds' spread.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness, report
from gapsweep.sweeps.run.jobs import usable_cores

NAME = "jobs"
TITLE = "Parallel trials: launch's default jobs against --jobs 1"
ARMS = ("default", "--jobs 1")
STUDY = "jobs"
TRAIN_FRACTION = 0.3
#: The default's wall time may be at most this share of ``--jobs 1``'s (on 2 cores).
TARGET_RATIO = 0.6
GAPSWEEP = str(Path(sys.executable).parent / "gapsweep")


def space_file(space: str | dict[str, Any], folder: Path) -> str:
    """A built-in space's name as it is; a dict written as a TOML file for ``--space``."""
    if isinstance(space, str):
        return space
    lines = []
    for name, spec in space.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in spec.items()]  # JSON scalars are TOML
    path = folder / "space.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def run_arm(arm: str, seed: int, trials: int, space: str | dict[str, Any]) -> dict[str, Any]:
    """One timed ``gapsweep launch`` in a fresh process on a fresh SQLite file, then its best
    trial's test loss."""
    with tempfile.TemporaryDirectory(prefix="gapsweep-bench-") as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        argv = [
            GAPSWEEP, "launch", "--study", STUDY, "--data", "digits", "--train-fraction", str(TRAIN_FRACTION),
            "--space", space_file(space, Path(folder)), "--trials", str(trials), "--seed", str(seed),
            "--storage", url, "--no-progress", "--json",
        ] + (["--jobs", "1"] if arm == "--jobs 1" else [])
        env = {key: value for key, value in os.environ.items() if key != "GAPSWEEP_JOBS"}  # the real default
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{arm} seed {seed} failed: {done.stderr[-2000:]}")
        summary = json.loads(done.stdout)
        test = harness.in_fresh_process(best_test_loss, url)
    return {
        "arm": arm, "seed": seed, "jobs": 1 if arm == "--jobs 1" else usable_cores(), "wall_s": wall,
        "counts": summary["counts"], **test,
    }


def best_test_loss(url: str) -> dict[str, Any]:
    """The best trial's stored model on the test split: cross-entropy and accuracy."""
    import numpy as np

    from gapsweep import best_trials, list_trials, load_best_model
    from gapsweep.sweeps.data import datasets
    from gapsweep.sweeps.run.config import stored_sweep

    harness.quiet_optuna()
    splits = datasets.load(stored_sweep(STUDY, url).data)
    best = best_trials(STUDY, url, k=1)[0]
    probabilities = np.clip(load_best_model(STUDY, url).predict(splits.raw_test, verbose=0), 1e-7, 1 - 1e-7)
    labels = splits.y_test.astype(int)
    records = list_trials(STUDY, url)
    return {
        "best_trial": best.number,
        "best_val_loss": best.attrs.get("val_loss"),
        "test_loss": float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels]))),
        "test_accuracy": float(np.mean(np.argmax(probabilities, axis=1) == labels)),
        "epochs": sum(int(r.attrs.get("epochs_run", 0)) for r in records),
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per arm: means (and the test loss's spread) over seeds."""
    rows = []
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        losses = [r["test_loss"] for r in mine]
        rows.append({
            "arm": arm, "jobs": mine[0]["jobs"], "seeds": len(mine),
            "wall_s": statistics.mean(r["wall_s"] for r in mine),
            "epochs": statistics.mean(r["epochs"] for r in mine),
            "test_loss": statistics.mean(losses),
            "test_loss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
            "test_accuracy": statistics.mean(r["test_accuracy"] for r in mine),
        })
    return rows


def verdict(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Wall-time ratio per seed and on the means; test loss against the seeds' spread."""
    per_seed = []
    for seed in sorted({r["seed"] for r in runs}):
        default, single = (next(r for r in runs if r["seed"] == seed and r["arm"] == arm) for arm in ARMS)
        per_seed.append({"seed": seed, "ratio": default["wall_s"] / single["wall_s"],
                         "test_loss_change": default["test_loss"] - single["test_loss"]})
    default_row, single_row = rows
    ratio = default_row["wall_s"] / single_row["wall_s"]
    spread = max(default_row["test_loss_std"], single_row["test_loss_std"])
    difference = default_row["test_loss"] - single_row["test_loss"]
    return {
        "per_seed": per_seed, "ratio": ratio, "ratio_at_most": TARGET_RATIO, "time_met": ratio <= TARGET_RATIO,
        "test_loss_difference": difference, "spread": spread,
        "quality_met": abs(difference) <= spread if len(per_seed) > 1 else None,
    }


def plot(runs: list[dict[str, Any]], trials: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    colors = {"default": "tab:blue", "--jobs 1": "tab:gray"}
    for y, arm in enumerate(ARMS):
        mine = [r for r in runs if r["arm"] == arm]
        label = f"{arm} ({mine[0]['jobs']} job{'s' if mine[0]['jobs'] > 1 else ''})"
        left.barh([label], [statistics.mean(r["wall_s"] for r in mine)], color=colors[arm], alpha=0.7)
        left.plot([r["wall_s"] for r in mine], [y] * len(mine), "k.", markersize=5)
        right.plot([r["seed"] for r in mine], [r["test_loss"] for r in mine], "o-", color=colors[arm], label=label)
    left.invert_yaxis()
    left.set_xlabel("sweep wall time, s (bar: mean; dots: seeds)")
    right.set_xlabel("seed")
    right.set_ylabel("best trial's test loss")
    right.legend(fontsize=8)
    fig.suptitle(f"{trials}-trial digits sweep: parallel jobs against one", fontsize=10)
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    options = harness.parse_args(__doc__.splitlines()[0], argv)
    trials, seeds, space = (4, (0,), harness.QUICK_SPACE) if options.quick else (20, (0, 1, 2), "mlp")
    started, machine = time.monotonic(), harness.machine()
    runs = [run_arm(arm, seed, trials, space) for seed in seeds for arm in ARMS]  # alternating
    rows = summarize(runs)
    outcome = verdict(runs, rows)
    table = report.markdown_table(rows, ["arm", "jobs", "seeds", "wall_s", "epochs", "test_loss", "test_loss_std", "test_accuracy"])
    print(table)

    plot(runs, trials, report.plot_path(options.out, NAME))
    harness.finish(machine, started)
    report.write_json(options.out, NAME, {
        "benchmark": NAME, "quick": options.quick, "machine": machine,
        "settings": {"trials": trials, "seeds": list(seeds), "space": space, "data": "digits",
                     "train_fraction": TRAIN_FRACTION, "sampler": "tpe", "pruner": "median"},
        "rows": rows, "runs": runs, "target": outcome,
    })
    quality = (
        "one seed: no spread to compare against" if outcome["quality_met"] is None
        else f"**{'met' if outcome['quality_met'] else 'missed'}**"
    )
    body = "\n\n".join([
        f"`python -m benchmarks.jobs{' --quick' if options.quick else ''}`: `gapsweep launch` of a seeded digits sweep "
        f"({trials} trials, space `{space if isinstance(space, str) else 'quick'}`, train_fraction {TRAIN_FRACTION}, TPE, "
        f"median pruning) with the default jobs ({rows[0]['jobs']}, one per usable core) and with `--jobs 1`, seeds "
        f"{', '.join(map(str, seeds))}, arms alternating, each command timed whole in a fresh process on its own SQLite "
        "file; test loss: the best trial's stored model on the held-out test split.",
        report.machine_line(machine),
        table,
        f"![wall time and test loss per arm](benchmarks/{NAME}.png)",
        f"Target: the default at most {TARGET_RATIO:.0%} of `--jobs 1`'s wall time — {outcome['ratio']:.2f}× "
        f"(**{'met' if outcome['time_met'] else 'missed'}**); its best test loss within the seeds' spread "
        f"({outcome['test_loss_difference']:+.4f} against ±{outcome['spread']:.4f}) — {quality}.",
    ])
    report.write_section(options.out, NAME, TITLE, body)


if __name__ == "__main__":
    main()
