"""gapsweep against KerasTuner Hyperband and RandomSearch: best held-out test loss over wall time.

All three search the same space (``SPACE``, translated into a KerasTuner ``build(hp)`` that calls
gapsweep's own model builder, so the networks are identical), on the same digits splits, with
the same TensorFlow threading, each alone in a fresh process. KerasTuner ranks trials by the pure
val loss (``val_pure_loss``, no L2 term) and stops a trial after 5 epochs without improvement,
as gapsweep's early stopping does; gapsweep ranks by its gap-penalized score (λ = 1).

At every moment the method's current pick is its best trial so far by its own objective; the
curve is that pick's loss on the test split, which no method ever sees. gapsweep's picks are
kept as weights when their trial ends and tested afterwards; KerasTuner's are reloaded from its
best-epoch checkpoints. Testing happens after the search, off the clock.

gapsweep's last point is what a user takes away: ``export --refit`` of its pick (the pick's
configuration trained again on train + val rows for its early-stopped epochs, as KerasTuner's
documentation recommends after a search), timed on the clock, its ``.keras`` file reloaded with
Keras alone and fed raw test rows.

The question is whether gapsweep gets there in half of Hyperband's time, so each seed runs
Hyperband first and then gives gapsweep that time as a budget, as a user with a deadline would:
its sweep starts no trial after ``SWEEP_SHARE`` of it (``launch``'s timeout), leaving the rest for
the refit. RandomSearch gets the trial budget.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import optuna

from benchmarks import harness, report
from gapsweep import DataSpec, SweepConfig, export_best, launch, list_trials
from gapsweep.search_spaces.builder import build_model
from gapsweep.sweeps.trial import objective as objective_module
from gapsweep.sweeps.data import losses
from gapsweep.sweeps.data.datasets import Splits, load
from gapsweep.sweeps.trial.trainer import TrainResult, train

NAME = "vs_kerastuner"
TITLE = "Against KerasTuner"
METHODS = ("gapsweep", "kt_random", "kt_hyperband")
TARGET_TIME_FRACTION = 0.5
#: The part of gapsweep's time budget its sweep may start trials in; the refit takes the rest.
SWEEP_SHARE = 0.85
#: gapsweep's trial budget under a time budget: more than the time allows, so the time decides.
TIMED_TRIALS = 500
DATA = DataSpec("digits", train_fraction=0.3)
PATIENCE = 5
BATCH_SIZE = 64

SPACE: dict[str, dict[str, Any]] = {
    "l2": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "units": {"type": "int", "low": 16, "high": 256, "log": True},
    "n_layers": {"type": "int", "low": 1, "high": 3},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
    "epochs": {"type": "fixed", "value": 27},
    "batch_size": {"type": "fixed", "value": BATCH_SIZE},
}


def quick_space() -> dict[str, dict[str, Any]]:
    return {**SPACE, "units": {"type": "int", "low": 8, "high": 32, "log": True}, "epochs": {"type": "fixed", "value": 3}}


def test_metrics(model: Any, splits: Splits) -> dict[str, float]:
    scores = model.evaluate(splits.x_test, splits.y_test, verbose=0, return_dict=True, batch_size=1024)
    return {"test_loss": float(scores["pure_loss"]), "test_accuracy": float(scores["accuracy"])}


def run_gapsweep(seed: int, trials: int, space: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """gapsweep's ``launch`` (TPE, median pruning) for ``trials`` trials or ``timeout`` seconds;
    each trial's weights kept when it improves."""
    harness.prepare_process()
    splits = load(DATA)
    kept: dict[int, tuple[dict[str, Any], list[Any]]] = {}
    best = math.inf

    def keeping_train(*args: Any, trial: optuna.Trial | None = None, **kwargs: Any) -> TrainResult:
        nonlocal best
        result = train(*args, trial=trial, **kwargs)
        if trial is not None and result.score.value < best:
            best = result.score.value
            fixed = {key[6:]: value for key, value in trial.user_attrs.items() if key.startswith("fixed.")}
            kept[trial.number] = ({**trial.params, **fixed}, result.model.get_weights())
        return result

    with harness.sqlite_file() as url:
        config = SweepConfig(study="race", space=space, data=DATA, trials=trials, seed=seed, storage=url, timeout=timeout)
        started = datetime.now()  # Optuna stamps trials with naive local time, as this is
        with mock.patch.object(objective_module, "train", keeping_train):
            launch(config, progress=False)
        records = list_trials(config.study, url)
        exported = _export_refit(config.study, url, splits)
        wall = (datetime.now() - started).total_seconds()
    done = sorted((r for r in records if r.state == "COMPLETE" and r.completed), key=lambda r: r.completed)
    timeline = []
    best = math.inf
    for record in done:
        if record.value is not None and record.value < best and record.number in kept:
            best = record.value
            params, weights = kept[record.number]
            model = build_model(params, splits.task)
            model.set_weights(weights)
            timeline.append({"t": (record.completed - started).total_seconds(), "trial": record.number,
                             "objective": record.value, **test_metrics(model, splits)})
    timeline.append({"t": wall, "trial": "export --refit", "objective": None, **exported})
    return {"method": "gapsweep", "seed": seed, "wall_s": wall, "trials": len(records),
            "epochs": sum(int(r.attrs.get("epochs_run", 0)) for r in records), "timeline": timeline}


def _export_refit(study: str, url: str, splits: Splits) -> dict[str, float]:
    """Export the pick refit on train + val rows; its test metrics from the file, on raw rows."""
    import keras

    with tempfile.TemporaryDirectory(prefix="gapsweep-bench-export-") as folder:
        path = Path(folder) / "refit.keras"
        export_best(study, path, url, refit=True)
        model = keras.models.load_model(path)
    probabilities = model.predict(splits.raw_test, verbose=0)
    return {
        "test_loss": float(losses.per_example(splits.task, splits.y_test, probabilities).mean()),
        "test_accuracy": float((probabilities.argmax(axis=1) == splits.y_test).mean()),
    }


def run_kerastuner(method: str, seed: int, trials: int, space: dict[str, Any]) -> dict[str, Any]:
    """KerasTuner RandomSearch (``trials`` trials) or Hyperband (one iteration up to the max epochs)."""
    harness.prepare_process()
    import keras
    import keras_tuner as kt
    import tensorflow as tf

    # Reloading a checkpoint into a fresh model skips its optimizer state, which testing never needs.
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

    splits = load(DATA)
    epochs = int(space["epochs"]["value"])
    events: list[tuple[float, Any]] = []
    started = time.perf_counter()

    class Timed:
        """Notes when each trial ends and with which score."""

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)  # type: ignore[misc]
            events.append((time.perf_counter() - started, trial))

    class EpochCounter(keras.callbacks.Callback):
        # KerasTuner deep-copies callbacks per trial, so the count lives on the class.
        count = 0

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            type(self).count += 1

    class TimedRandomSearch(Timed, kt.RandomSearch):
        pass

    class TimedHyperband(Timed, kt.Hyperband):
        pass

    objective = kt.Objective("val_pure_loss", direction="min")
    train_ds = (tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train))
                .shuffle(len(splits.x_train), seed=seed).batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.from_tensor_slices((splits.x_val, splits.y_val)).batch(1024)
    with tempfile.TemporaryDirectory(prefix="gapsweep-bench-kt-") as folder:
        common = {"objective": objective, "seed": seed, "directory": folder, "project_name": method, "overwrite": True}
        build = hypermodel(space, splits)
        started = time.perf_counter()
        if method == "kt_random":
            tuner = TimedRandomSearch(build, max_trials=trials, **common)
        else:
            tuner = TimedHyperband(build, max_epochs=epochs, factor=3, hyperband_iterations=1, **common)
        tuner.search(
            train_ds, validation_data=val_ds, epochs=epochs, verbose=0,
            callbacks=[keras.callbacks.EarlyStopping(monitor="val_pure_loss", patience=PATIENCE), EpochCounter()],
        )
        wall = time.perf_counter() - started
        timeline, best = [], math.inf
        for t, trial in events:
            if trial.score is not None and trial.score < best:
                best = trial.score
                timeline.append({"t": t, "trial": trial.trial_id, "objective": float(trial.score),
                                 **test_metrics(tuner.load_model(trial), splits)})
    return {"method": method, "seed": seed, "wall_s": wall, "trials": len(events), "epochs": EpochCounter.count,
            "timeline": timeline}


def hypermodel(space: dict[str, dict[str, Any]], splits: Splits) -> Any:
    """``SPACE`` as a KerasTuner ``build(hp)``: the same ranges, scales and model builder."""

    def build(hp: Any) -> Any:
        values: dict[str, Any] = {}
        for name, spec in space.items():
            sampling = "log" if spec.get("log") else "linear"
            if spec["type"] == "float":
                values[name] = hp.Float(name, spec["low"], spec["high"], sampling=sampling)
            elif spec["type"] == "int":
                values[name] = hp.Int(name, spec["low"], spec["high"], sampling=sampling)
            elif spec["type"] == "categorical":
                values[name] = hp.Choice(name, spec["choices"])
            else:
                values[name] = spec["value"]
        return build_model(values, splits.task)

    return build


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method: means over seeds, and the spread of the final test loss."""
    out = []
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        losses = [r["final_test_loss"] for r in mine if r["final_test_loss"] is not None]
        row: dict[str, Any] = {"method": method, "seeds": len(mine)}
        for key in ("trials", "epochs", "wall_s", "final_test_loss", "final_test_accuracy"):
            values = [r[key] for r in mine if r[key] is not None]
            row[key] = statistics.mean(values) if values else None
        row["final_test_loss_std"] = statistics.stdev(losses) if len(losses) > 1 else 0.0
        out.append(row)
    return out


def time_to_reach(timeline: list[dict[str, Any]], loss: float) -> float | None:
    """When the method's pick first had a test loss at or below ``loss``; None if never."""
    return next((point["t"] for point in timeline if point["test_loss"] <= loss), None)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"gapsweep": "gapsweep (TPE + median, λ=1)", "kt_random": "KerasTuner RandomSearch",
              "kt_hyperband": "KerasTuner Hyperband"}
    colors = {"gapsweep": "tab:blue", "kt_random": "tab:gray", "kt_hyperband": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        points = run["timeline"]
        if not points:
            continue
        xs = [p["t"] for p in points] + [run["wall_s"]]
        ys = [p["test_loss"] for p in points] + [points[-1]["test_loss"]]
        first = run["seed"] == runs[0]["seed"]
        ax.step(xs, ys, where="post", color=colors[run["method"]], label=labels[run["method"]] if first else None)
        ax.plot([run["wall_s"]], [ys[-1]], "o", color=colors[run["method"]])
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("held-out test loss of the current pick (log scale)")
    ax.set_yscale("log")
    ax.set_title("digits (train_fraction 0.3): test loss of each method's best trial so far")
    ax.legend()
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    options = harness.parse_args(__doc__.splitlines()[0], argv)
    seeds, trials, space = ((0,), 3, quick_space()) if options.quick else ((0, 1, 2), 20, SPACE)
    started, machine = time.monotonic(), harness.machine()
    runs, budgets = [], {}
    for seed in seeds:
        hyperband = harness.in_fresh_process(run_kerastuner, "kt_hyperband", seed, trials, space)
        # Quick runs keep the trial budget: their Hyperband is too short to share.
        budgets[seed] = None if options.quick else SWEEP_SHARE * TARGET_TIME_FRACTION * hyperband["wall_s"]
        ours = harness.in_fresh_process(run_gapsweep, seed, trials if options.quick else TIMED_TRIALS, space, budgets[seed])
        random_search = harness.in_fresh_process(run_kerastuner, "kt_random", seed, trials, space)
        runs += [ours, random_search, hyperband]

    rows, outcome = [], {}
    for run in runs:
        final = run["timeline"][-1] if run["timeline"] else {}
        rows.append({"seed": run["seed"], "method": run["method"], "trials": run["trials"], "epochs": run["epochs"],
                     "wall_s": run["wall_s"], "final_test_loss": final.get("test_loss"),
                     "final_test_accuracy": final.get("test_accuracy")})
    for seed in seeds:
        hyperband = next(r for r in runs if r["seed"] == seed and r["method"] == "kt_hyperband")
        ours = next(r for r in runs if r["seed"] == seed and r["method"] == "gapsweep")
        target = hyperband["timeline"][-1]["test_loss"] if hyperband["timeline"] else None
        reached = time_to_reach(ours["timeline"], target) if target is not None else None
        fraction = reached / hyperband["wall_s"] if reached is not None else None
        outcome[str(seed)] = {"hyperband_final_test_loss": target, "hyperband_wall_s": hyperband["wall_s"],
                              "gapsweep_sweep_budget_s": budgets[seed],
                              "gapsweep_reached_s": reached, "time_fraction": fraction,
                              "met": fraction is not None and fraction <= TARGET_TIME_FRACTION}
    means = summarize(rows)
    fractions = [o["time_fraction"] for o in outcome.values()]
    overall = {"seeds_met": sum(o["met"] for o in outcome.values()), "seeds": len(outcome),
               "median_time_fraction": statistics.median(f if f is not None else math.inf for f in fractions)}
    table = report.markdown_table(rows, ["seed", "method", "trials", "epochs", "wall_s", "final_test_loss",
                                         "final_test_accuracy"])
    means_table = report.markdown_table(means, ["method", "seeds", "trials", "epochs", "wall_s", "final_test_loss",
                                                "final_test_loss_std", "final_test_accuracy"])
    timeline_rows = [{"seed": run["seed"], "method": run["method"], **point} for run in runs for point in run["timeline"]]
    timeline_table = report.markdown_table(timeline_rows, ["seed", "method", "t", "trial", "objective", "test_loss",
                                                           "test_accuracy"])
    print(table, means_table, timeline_table, sep="\n\n")

    plot(runs, report.plot_path(options.out, NAME))
    harness.finish(machine, started)
    payload = {
        "benchmark": NAME, "quick": options.quick, "machine": machine,
        "settings": {"seeds": list(seeds), "trials": trials, "space": space, "data": DATA.to_dict(),
                     "gapsweep_budget": "trials" if options.quick else {"sweep_share": SWEEP_SHARE, "of": TARGET_TIME_FRACTION,
                                                                        "max_trials": TIMED_TRIALS},
                     "patience": PATIENCE, "hyperband": {"factor": 3, "hyperband_iterations": 1,
                                                         "max_epochs": space["epochs"]["value"]}},
        "rows": rows, "runs": runs,
        "means": means,
        "target": {"time_fraction_at_most": TARGET_TIME_FRACTION, "per_seed": outcome, **overall},
    }
    report.write_json(options.out, NAME, payload)
    verdicts = "; ".join(
        f"seed {seed}: Hyperband ended at test loss {report.cell(o['hyperband_final_test_loss'])} after "
        f"{o['hyperband_wall_s']:.0f} s; gapsweep's pick "
        + (f"reached it after {o['gapsweep_reached_s']:.0f} s = {o['time_fraction']:.2f}× "
           if o["gapsweep_reached_s"] is not None else "never reached it ")
        + f"(**{'met' if o['met'] else 'missed'}**)"
        for seed, o in outcome.items()
    )
    body = "\n\n".join([
        f"`python -m benchmarks.vs_kerastuner{' --quick' if options.quick else ''}`: digits (train_fraction 0.3), "
        f"the space below, seed(s) {', '.join(map(str, seeds))}. Budgets: gapsweep "
        + (f"{trials} trials" if options.quick else
           f"{TARGET_TIME_FRACTION}× the wall time of the same seed's Hyperband run (run first): its sweep starts no "
           f"trial after {SWEEP_SHARE:.0%} of that (`launch`'s timeout) and the rest is for the refit")
        + f" (TPE, median pruning, gap penalty λ = 1, patience {PATIENCE}), then `export --refit` of its pick, on the "
        f"clock: gapsweep's final point is that exported model; RandomSearch {trials} trials "
        f"(early stopping, patience {PATIENCE}); Hyperband one iteration with max_epochs = "
        f"{space['epochs']['value']}, factor 3 (it decides its own number of trials). Batch size {BATCH_SIZE}, "
        "one TensorFlow thread, each method alone in a fresh process. Time includes building, training and "
        "each library's own bookkeeping (gapsweep's database writes, KerasTuner's checkpoints).",
        report.machine_line(machine),
        "Per seed:\n\n" + table,
        "Means over seeds:\n\n" + means_table,
        "![test loss of the current pick over wall time](benchmarks/vs_kerastuner.png)",
        "Each improvement of a method's pick:\n\n" + timeline_table,
        f"Target: gapsweep reaches Hyperband's final test loss in ≤ {TARGET_TIME_FRACTION}× Hyperband's time. "
        f"{verdicts}. Met on {overall['seeds_met']} of {overall['seeds']} seed(s); median time fraction: "
        + ("not reached" if math.isinf(overall["median_time_fraction"]) else f"{overall['median_time_fraction']:.2f}×")
        + ".",
        "Space: `" + ", ".join(f"{k}: {v}" for k, v in space.items()) + "`",
    ])
    report.write_section(options.out, NAME, TITLE, body)


if __name__ == "__main__":
    main()
