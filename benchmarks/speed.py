"""Speed: gapsweep against plain Optuna + Keras and against a bare ``model.fit`` of the same models.

Three arms per task, each sweep alone in a fresh process (TensorFlow imported and its threads
fixed before the clock starts), on its own SQLite file:

- ``gapsweep``: ``launch`` with the space, the trial budget, TPE and the median pruner.
- ``plain``: Optuna + Keras as their documentation writes it: the same space suggested trial by
  trial, the same MLP, ``EarlyStopping(restore_best_weights=True)`` on ``val_loss`` with the same
  patience, median pruning on ``val_loss`` (``optuna_integration.KerasPruningCallback`` when
  installed, otherwise a callback calling ``trial.report``/``should_prune``), the same ``tf.data``
  pipeline, ``study.optimize`` on SQLite.
- ``floor``: the models gapsweep's sweep trained (its trials' values, each for the epochs it ran),
  each built and fitted with a bare ``model.fit``: no validation, no callbacks, no database.

Rounds alternate the order of gapsweep and plain; the floor follows gapsweep's sweep of its round.
Per epoch = wall time / epochs trained (pruned trials included), so a sweep's per-trial costs are
spread over its epochs.
"""

from __future__ import annotations

import gc
import statistics
import time
import tomllib
from pathlib import Path
from typing import Any

from benchmarks import harness, report
from gapsweep import DataSpec, SweepConfig, launch, list_trials

NAME = "speed"
TITLE = "Speed: gapsweep vs plain Optuna + Keras vs bare fit"
PATIENCE = 5  # gapsweep's default early-stopping patience, used by plain too
#: Targets: gapsweep's sweep no slower than plain Optuna + Keras; its epoch within 15 % of the floor.
SWEEP_RATIO_AT_MOST = 1.0
EPOCH_RATIO_AT_MOST = 1.15
TASKS = {
    "digits": DataSpec("digits"),
    "synthetic-20k": DataSpec("synthetic", options={"n_samples": 20000, "n_features": 40, "n_classes": 4}),
}
#: Trials per sweep, per task: the larger set's sweeps take minutes each.
TRIALS = {"digits": 20, "synthetic-20k": 10}
#: The smoke run's one small task: every arm and the floor, in fresh processes, in about a minute.
QUICK_TASKS = {"synthetic-3k": DataSpec("synthetic", options={"n_samples": 3000, "n_features": 40, "n_classes": 4})}
MLP_SPACE = tomllib.loads((harness.REPO / "search_spaces" / "mlp.toml").read_text(encoding="utf-8"))


def gapsweep_sweep(task: str, data: DataSpec, space: dict[str, Any], trials: int, seed: int) -> dict[str, Any]:
    """One timed ``launch`` (meant for a fresh process); its trials' values and epochs."""
    harness.prepare_process()
    with harness.sqlite_file() as url:
        config = SweepConfig(
            study=f"speed-{task}", space=space, data=data, pruner="median", trials=trials, seed=seed, storage=url
        )
        start = time.perf_counter()
        launch(config, progress=False)
        wall = time.perf_counter() - start
        records = list_trials(config.study, url)
    runs = [{"params": r.summary()["params"], "epochs": int(r.attrs.get("epochs_run", 0)), "state": r.state} for r in records]
    return {"arm": "gapsweep", "task": task, "seed": seed, "wall_s": wall, "trials": runs}


def _suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """The space's values for one trial, suggested one by one as a plain Optuna objective does."""
    values: dict[str, Any] = {}
    for name, spec in space.items():
        if not isinstance(spec, dict):
            values[name] = spec
        elif spec.get("when") == "n_layers > 0" and values.get("n_layers") == 0:
            continue
        elif spec["type"] == "fixed":
            values[name] = spec["value"]
        elif spec["type"] == "float":
            values[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
        elif spec["type"] == "int":
            values[name] = trial.suggest_int(name, spec["low"], spec["high"], log=spec.get("log", False))
        else:
            values[name] = trial.suggest_categorical(name, spec["choices"])
    return values


def _pruning_callback(trial: Any, monitor: str) -> Any:
    """Optuna's Keras pruning callback, or the few lines it amounts to when it is not installed."""
    try:
        from optuna_integration import KerasPruningCallback

        return KerasPruningCallback(trial, monitor)
    except ImportError:
        import keras
        import optuna

        class Pruning(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                trial.report(float((logs or {})[monitor]), step=epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        return Pruning()


def plain_sweep(task: str, data: DataSpec, space: dict[str, Any], trials: int, seed: int) -> dict[str, Any]:
    """Plain Optuna + Keras on the same data, space, budget, sampler, pruner and storage."""
    harness.prepare_process()
    gc.unfreeze()  # gapsweep's set-up froze TensorFlow's objects out of the collector; a plain process has not
    import keras
    import optuna
    import tensorflow as tf

    from gapsweep.sweeps.data.datasets import load

    with harness.sqlite_file() as url:
        start = time.perf_counter()
        splits = load(data)  # gapsweep's launch loads and standardizes the data inside its clock too
        n_classes = splits.task.n_classes
        val = tf.data.Dataset.from_tensor_slices((splits.x_val, splits.y_val)).batch(1024)

        def objective(trial: optuna.Trial) -> float:
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed + trial.number)
            values = _suggest(trial, space)
            l2 = keras.regularizers.L2(values.get("l2", 0.0))
            model = keras.Sequential([keras.Input((splits.x_train.shape[1],))])
            for _ in range(values.get("n_layers", 2)):
                model.add(keras.layers.Dense(values.get("units", 64), activation="relu", kernel_regularizer=l2))
                if values.get("dropout", 0.0) > 0:
                    model.add(keras.layers.Dropout(values["dropout"]))
            model.add(keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=l2))
            model.compile(
                optimizer=keras.optimizers.Adam(values.get("learning_rate", 1e-3)),
                loss="sparse_categorical_crossentropy", metrics=["accuracy"],
            )
            train = (
                tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train))
                .shuffle(len(splits.x_train), seed=seed + trial.number, reshuffle_each_iteration=True)
                .batch(values.get("batch_size", 32))
                .prefetch(tf.data.AUTOTUNE)
            )
            history = model.fit(
                train, validation_data=val, epochs=values.get("epochs", 20), verbose=0,
                callbacks=[
                    keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE, restore_best_weights=True),
                    _pruning_callback(trial, "val_loss"),
                ],
            )
            return min(history.history["val_loss"])

        study = optuna.create_study(
            study_name=f"plain-{task}", storage=url, sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
        )
        study.optimize(objective, n_trials=trials)
        wall = time.perf_counter() - start
        runs = [{"epochs": len(t.intermediate_values), "state": t.state.name} for t in study.get_trials(deepcopy=False)]
    return {"arm": "plain", "task": task, "seed": seed, "wall_s": wall, "trials": runs}


def floor_fits(task: str, data: DataSpec, trials: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Each of gapsweep's trials again as a bare ``model.fit`` of the epochs it ran."""
    harness.prepare_process()
    import keras
    import tensorflow as tf

    from gapsweep.search_spaces.builder import build_model, resolve
    from gapsweep.sweeps.data.datasets import load

    splits = load(data)
    wall = 0.0
    runs = []
    for number, trial in enumerate(trials):
        if not trial["epochs"]:
            continue
        start = time.perf_counter()
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed + number)
        values = resolve(trial["params"])
        model = build_model(values, splits.task)
        train = (
            tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train))
            .shuffle(len(splits.x_train), seed=seed + number, reshuffle_each_iteration=True)
            .batch(int(values["batch_size"]))
            .prefetch(tf.data.AUTOTUNE)
        )
        model.fit(train, epochs=trial["epochs"], verbose=0)
        wall += time.perf_counter() - start
        runs.append({"epochs": trial["epochs"], "state": "FIT"})
    return {"arm": "floor", "task": task, "seed": seed, "wall_s": wall, "trials": runs}


def summarize(runs: list[dict[str, Any]], tasks: list[str]) -> list[dict[str, Any]]:
    """Per task and arm: sweeps, mean wall time per sweep, epochs and time per epoch; ratios."""
    rows = []
    for task in tasks:
        by_arm = {}
        for arm in ("gapsweep", "plain", "floor"):
            mine = [r for r in runs if r["task"] == task and r["arm"] == arm]
            epochs = [sum(t["epochs"] for t in r["trials"]) for r in mine]
            by_arm[arm] = {
                "task": task, "arm": arm, "sweeps": len(mine),
                "wall_s": statistics.mean(r["wall_s"] for r in mine),
                "epochs": statistics.mean(epochs),
                "ms_per_epoch": 1000 * sum(r["wall_s"] for r in mine) / max(sum(epochs), 1),
            }
        for row in by_arm.values():
            row["sweep_vs_plain"] = row["wall_s"] / by_arm["plain"]["wall_s"]
            row["epoch_vs_floor"] = row["ms_per_epoch"] / by_arm["floor"]["ms_per_epoch"]
            rows.append(row)
    return rows


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    mine = {row["task"]: row for row in rows if row["arm"] == "gapsweep"}
    per_task = {
        task: {
            "sweep_vs_plain": row["sweep_vs_plain"], "epoch_vs_floor": row["epoch_vs_floor"],
            "sweep_met": row["sweep_vs_plain"] <= SWEEP_RATIO_AT_MOST, "epoch_met": row["epoch_vs_floor"] <= EPOCH_RATIO_AT_MOST,
        }
        for task, row in mine.items()
    }
    return {
        "sweep_ratio_at_most": SWEEP_RATIO_AT_MOST, "epoch_ratio_at_most": EPOCH_RATIO_AT_MOST, "per_task": per_task,
        "met": all(t["sweep_met"] and t["epoch_met"] for t in per_task.values()),
    }


def plot(rows: list[dict[str, Any]], tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    arms = ("gapsweep", "plain", "floor")
    colors = {"gapsweep": "tab:blue", "plain": "tab:orange", "floor": "tab:gray"}
    width = 0.25
    for offset, arm in enumerate(arms):
        mine = [next(r for r in rows if r["task"] == task and r["arm"] == arm) for task in tasks]
        xs = [i + (offset - 1) * width for i in range(len(tasks))]
        axes[0].bar(xs, [r["wall_s"] for r in mine], width, label=arm, color=colors[arm])
        axes[1].bar(xs, [r["ms_per_epoch"] for r in mine], width, label=arm, color=colors[arm])
    for axis, label in zip(axes, ("wall time per sweep (s)", "time per trained epoch (ms)")):
        axis.set_xticks(range(len(tasks)), tasks)
        axis.set_ylabel(label)
        axis.legend()
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    options = harness.parse_args(__doc__.splitlines()[0], argv)
    if options.quick:
        tasks, space, trials, rounds = QUICK_TASKS, harness.QUICK_SPACE, dict.fromkeys(QUICK_TASKS, 3), 1
    else:
        tasks, space, trials, rounds = TASKS, MLP_SPACE, TRIALS, 2
    started, machine = time.monotonic(), harness.machine()
    runs: list[dict[str, Any]] = []
    for round_ in range(rounds):
        for task, data in tasks.items():
            arms = ("gapsweep", "plain") if round_ % 2 == 0 else ("plain", "gapsweep")
            for arm in arms:
                sweep = gapsweep_sweep if arm == "gapsweep" else plain_sweep
                runs.append(harness.in_fresh_process(sweep, task, data, space, trials[task], round_))
                print(f"round {round_} {task} {arm}: {runs[-1]['wall_s']:.1f} s", flush=True)
            mine = next(r for r in reversed(runs) if r["arm"] == "gapsweep" and r["task"] == task)
            runs.append(harness.in_fresh_process(floor_fits, task, data, mine["trials"], round_))
            print(f"round {round_} {task} floor: {runs[-1]['wall_s']:.1f} s", flush=True)

    rows = summarize(runs, list(tasks))
    outcome = verdict(rows)
    columns = ["task", "arm", "sweeps", "wall_s", "epochs", "ms_per_epoch", "sweep_vs_plain", "epoch_vs_floor"]
    table = report.markdown_table(rows, columns)
    print(table)
    plot(rows, list(tasks), report.plot_path(options.out, NAME))
    harness.finish(machine, started)
    payload = {
        "benchmark": NAME, "quick": options.quick, "machine": machine,
        "settings": {
            "tasks": {task: data.to_dict() for task, data in tasks.items()}, "space": space, "trials": trials,
            "rounds": rounds, "patience": PATIENCE, "sampler": "tpe", "pruner": "median", "storage": "sqlite",
        },
        "rows": rows, "runs": runs, "target": outcome,
    }
    report.write_json(options.out, NAME, payload)
    lines = [
        f"- {task}: sweep {t['sweep_vs_plain']:.2f}× plain Optuna + Keras (**{'met' if t['sweep_met'] else 'missed'}**), "
        f"epoch {t['epoch_vs_floor']:.2f}× the bare-fit floor (**{'met' if t['epoch_met'] else 'missed'}**)"
        for task, t in outcome["per_task"].items()
    ]
    body = "\n\n".join([
        f"`python -m benchmarks.speed{' --quick' if options.quick else ''}`: tasks {', '.join(tasks)}; space "
        f"`{'mlp' if space is MLP_SPACE else 'quick'}`, trials per sweep {', '.join(f'{t} {n}' for t, n in trials.items())}, TPE, median pruner, patience "
        f"{PATIENCE}, SQLite; {rounds} round(s), gapsweep and plain alternating first, each sweep in a fresh process. "
        "Floor: gapsweep's trials refitted with a bare `model.fit` of the builder's compiled model for the epochs each ran. Plain runs with Python's collector as a plain process has it (gapsweep freezes TensorFlow's import-time objects out of it). Per epoch: wall time over "
        "all epochs trained, per-trial costs included.",
        report.machine_line(machine),
        table,
        "![wall time per sweep and per epoch](benchmarks/speed.png)",
        f"Target: sweep ≤ {SWEEP_RATIO_AT_MOST:.2f}× plain, epoch ≤ {EPOCH_RATIO_AT_MOST:.2f}× floor.\n\n" + "\n".join(lines),
    ])
    report.write_section(options.out, NAME, TITLE, body)


if __name__ == "__main__":
    main()
