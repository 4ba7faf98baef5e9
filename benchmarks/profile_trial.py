"""Where one trial's time goes: a few trials of the mlp space's default values on digits, timed by part.

The sweep runs through ``launch`` on a SQLite file, as a user's would, in this (fresh) process.
Timers wrap the pieces in place: building the model, Keras' epoch loop (train steps are the time
between an epoch's start and its callbacks), the one prediction that gives the val and the honest
train loss, the other callbacks, and the database writes of the objective. The first epoch of a
trial also traces the train and predict functions; its excess over a later epoch is counted as
tracing.
``Sweep bookkeeping`` is what ``launch`` spends outside the objective (Optuna's ask/tell, the
sampler, the study lock).
"""

from __future__ import annotations

import collections
import statistics
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from benchmarks import harness, report

NAME = "profile"
TITLE = "Profile of one trial"
#: Every parameter of the mlp builder at its default: 2×64 ReLU, Adam 1e-3, batch 32, 20 epochs.
SPACE: dict[str, Any] = {
    "l2": 0.0, "dropout": 0.0, "units": 64, "n_layers": 2, "learning_rate": 1e-3, "epochs": 20, "batch_size": 32,
}


class Clock:
    """Seconds spent per part, per trial and per epoch, gathered by wrapped callables."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = collections.defaultdict(float)
        self.epochs: list[dict[str, float]] = []  # one per epoch: its parts
        self._epoch: dict[str, float] | None = None

    def add(self, part: str, seconds: float) -> None:
        self.totals[part] += seconds
        if self._epoch is not None:
            self._epoch[part] = self._epoch.get(part, 0.0) + seconds

    @contextmanager
    def timing(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - start)


def wrap(clock: Clock, owner: Any, name: str, part: str) -> None:
    """Replace ``owner.name`` by a version that adds its time to ``part``."""
    original: Callable[..., Any] = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        with clock.timing(part):
            return original(*args, **kwargs)

    setattr(owner, name, timed)


def instrument(clock: Clock) -> None:
    """Wrap the parts of a trial; the epoch loop is timed through Keras' callback list."""
    import keras
    import optuna
    from keras.src.callbacks.callback_list import CallbackList

    from gapsweep.search_spaces import hypermodel
    from gapsweep.storage import val_losses
    from gapsweep.sweeps.trial import models, objective, trainer

    wrap(clock, objective, "fresh_session", "fresh session (clear_session, seed)")
    wrap(clock, hypermodel, "build_model", "build and compile")
    wrap(clock, objective, "set_user_attrs", "db: trial attributes")
    wrap(clock, val_losses, "save", "db: per-example val losses")
    wrap(clock, objective.ModelKeeper, "offer", "keep model (serialize, db)")
    wrap(clock, objective.ModelKeeper, "qualifies", "keep model (serialize, db)")
    wrap(clock, objective, "held_out_metrics", "keep model: test metrics")
    wrap(clock, objective.Objective, "__call__", "objective (whole trial)")
    wrap(clock, optuna.Trial, "report", "db: report + should_prune")
    wrap(clock, optuna.Trial, "should_prune", "db: report + should_prune")
    wrap(clock, trainer.Validator, "__call__", "val + train-loss pass (one predict)")
    wrap(clock, keras.Model, "fit", "fit (whole)")

    begin, end = CallbackList.on_epoch_begin, CallbackList.on_epoch_end

    def on_epoch_begin(self: Any, epoch: int, logs: Any = None) -> None:
        clock._epoch = {"start": time.perf_counter(), "epoch": float(epoch)}
        clock.epochs.append(clock._epoch)
        begin(self, epoch, logs)

    def on_epoch_end(self: Any, epoch: int, logs: Any = None) -> None:
        if clock._epoch is not None:
            steps = time.perf_counter() - clock._epoch.pop("start")
            clock.add("train steps", steps)
        with clock.timing("callbacks (all)"):
            end(self, epoch, logs)
        clock._epoch = None

    CallbackList.on_epoch_begin = on_epoch_begin  # type: ignore[method-assign]
    CallbackList.on_epoch_end = on_epoch_end  # type: ignore[method-assign]


def profile(trials: int, space: dict[str, Any]) -> dict[str, Any]:
    """Run ``trials`` trials of ``space`` on digits with every part timed (meant for a fresh process)."""
    start = time.perf_counter()
    harness.prepare_process()
    tf_import = time.perf_counter() - start

    from gapsweep import DataSpec, SweepConfig, launch, list_trials

    clock = Clock()
    instrument(clock)
    with harness.sqlite_file() as url:
        config = SweepConfig(
            study="profile", space=space, data=DataSpec("digits"), pruner="median", trials=trials, seed=0, storage=url
        )
        start = time.perf_counter()
        launch(config, progress=False)
        wall = time.perf_counter() - start
        epochs = sum(int(r.attrs.get("epochs_run", 0)) for r in list_trials(config.study, url))
    return {
        "import_tensorflow_s": tf_import, "wall_s": wall, "trials": trials,
        "epochs": epochs, "totals": dict(clock.totals), "per_epoch": clock.epochs,
    }


def breakdown(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts of a trial, per trial and per epoch (seconds), with the first epoch's tracing split out."""
    totals, trials, epochs, per_epoch = run["totals"], run["trials"], run["epochs"], run["per_epoch"]

    def in_epochs(part: str) -> tuple[float, float]:
        """``part``'s time inside epochs, and the first epochs' excess over a later one (tracing)."""
        first = [e.get(part, 0.0) for e in per_epoch if e["epoch"] == 0]
        later = [e.get(part, 0.0) for e in per_epoch if e["epoch"] > 0]
        excess = sum(first) - len(first) * (statistics.median(later) if later else 0.0)
        return sum(e.get(part, 0.0) for e in per_epoch), max(excess, 0.0)

    steps, steps_trace = in_epochs("train steps")
    check, check_trace = in_epochs("val + train-loss pass (one predict)")
    report_prune, _ = in_epochs("db: report + should_prune")
    callbacks = totals.get("callbacks (all)", 0.0)
    fit = totals.get("fit (whole)", 0.0)
    parts: dict[str, float] = {
        "fresh session (clear_session, seed)": totals.get("fresh session (clear_session, seed)", 0.0),
        "build and compile": totals.get("build and compile", 0.0),
        "trace: train step": steps_trace,
        "trace: predict step": check_trace,
        "train steps": steps - steps_trace,
        "val + train-loss pass (one predict)": check - check_trace,
        "db: report + should_prune": report_prune,
        "other callbacks (gap monitor, early stopping, checkpointer)": callbacks - check - report_prune,
        "fit setup and teardown": fit - steps - callbacks,
        "val pass after fit (restored weights)": totals.get("val + train-loss pass (one predict)", 0.0) - check,
        "db: trial attributes": totals.get("db: trial attributes", 0.0),
        "db: per-example val losses": totals.get("db: per-example val losses", 0.0),
        "keep model (serialize, db)": totals.get("keep model (serialize, db)", 0.0),
        "keep model: test metrics": totals.get("keep model: test metrics", 0.0),
    }
    parts["objective, other"] = totals.get("objective (whole trial)", 0.0) - sum(parts.values())
    parts["sweep bookkeeping (ask/tell, sampler, lock)"] = run["wall_s"] - totals.get("objective (whole trial)", 0.0)
    parts["sweep wall time"] = run["wall_s"]
    return [
        {"part": part, "per_trial_s": seconds / trials, "per_epoch_ms": 1000 * seconds / epochs,
         "share_pct": 100 * seconds / run["wall_s"]}
        for part, seconds in parts.items()
    ]


def main(argv: list[str] | None = None) -> None:
    options = harness.parse_args(__doc__.splitlines()[0], argv)
    trials = 2 if options.quick else 4
    space = {**SPACE, "epochs": 4} if options.quick else SPACE
    started, machine = time.monotonic(), harness.machine()
    run = harness.in_fresh_process(profile, trials, space)
    rows = breakdown(run)
    table = report.markdown_table(rows, ["part", "per_trial_s", "per_epoch_ms", "share_pct"])
    print(table)
    print(f"once per process: importing TensorFlow and Keras {run['import_tensorflow_s']:.2f} s")
    harness.finish(machine, started)
    payload = {
        "benchmark": NAME, "quick": options.quick, "machine": machine,
        "settings": {"trials": trials, "space": space, "data": "digits", "pruner": "median", "storage": "sqlite"},
        "rows": rows, "run": run,
    }
    report.write_json(options.out, NAME, payload)
    body = "\n\n".join([
        f"`python -m benchmarks.profile_trial{' --quick' if options.quick else ''}`: {trials} trials of the mlp "
        f"builder's default values on digits (SQLite, median pruner), {run['epochs']} epochs in all, one fresh process; "
        "each part wrapped by a timer. Tracing is the first epoch's excess over a later one.",
        report.machine_line(machine),
        table,
        f"Once per process, before any trial: importing TensorFlow and Keras {run['import_tensorflow_s']:.2f} s.",
    ])
    report.write_section(options.out, NAME, TITLE, body)


if __name__ == "__main__":
    main()
