"""Worker scaling: trials per second of 1, 2, 4 and 8 gapsweep workers sharing one study.

What does it cost to coordinate workers? Each worker is a separate process running gapsweep's
own loop (``gapsweep.sweeps.run.launch.prepare`` then ``run_trials``: the study-wide lock around the budget
check and the trial's creation, reaping of stale trials, heartbeats) against one PostgreSQL
study with a global budget. No Keras runs: the hypermodel samples the search space and returns a
stand-in model, and the trainer sleeps (50 ms a trial, spread over its epochs) while it reports
each epoch to Optuna, as the real one does. The objective itself is gapsweep's: it records the
curves, the score parts and the worker as user attributes. Ideally N workers finish N× as many
trials per second as one; the gap to N× is the coordination cost (and, past the machine's cores,
CPU contention: every worker's database work needs a core).

Correctness is checked on every run: exactly the budget of COMPLETE trials, none RUNNING, none
failed, and the workers' own counts add up to the budget.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

from benchmarks import harness, report

NAME = "workers"
TITLE = "Worker scaling on PostgreSQL"
STUDY = "workers"
EPOCHS = 5
SLEEP_S = 0.05
#: N workers should reach at least this share of N× one worker's rate, up to the core count.
TARGET_EFFICIENCY = 0.8


# --- What runs inside a worker process ----------------------------------------------------------


class StandInModel:
    """What the objective may call on a trained model; nothing here needs Keras."""

    def evaluate(self, *_: Any, **__: Any) -> dict[str, float]:
        return {"loss": 0.3, "pure_loss": 0.25, "accuracy": 0.9}

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_bytes(b"stand-in model")


class SleepingHypermodel:
    """gapsweep's space, sampled as a real trial samples it, with a stand-in model to 'train'."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.max_epochs = EPOCHS

    def build(self, trial: Any, task: Any) -> tuple[StandInModel, Any]:
        from gapsweep.search_spaces.builder import resolve
        from gapsweep.search_spaces.hypermodel import FitSettings

        values = resolve(self.real.space.sample(trial))
        return StandInModel(), FitSettings(epochs=EPOCHS, batch_size=int(values["batch_size"]))

    def describe(self) -> dict[str, Any]:
        return self.real.describe()


def sleeping_train(model: Any, fit: Any, splits: Any, *, scoring: Any, patience: int, seed: int,
                   trial: Any = None, curves: Any = None, checkpoints: Any = None) -> Any:
    """``gapsweep.sweeps.trial.trainer.train`` with sleep for work: per epoch, fake losses, a report and a prune check.

    Like the trainer, it first asks the checkpoint store for a state to resume; it saves no
    checkpoints (their cost is the overhead benchmark's subject, not coordination).
    """
    import optuna

    from gapsweep.sweeps.trial.score import as_scoring, best_score, evaluate
    from gapsweep.sweeps.trial.trainer import Curves, TrainResult

    curves = curves if curves is not None else Curves()
    if checkpoints is not None:
        checkpoints.latest()
    for epoch in range(fit.epochs):
        time.sleep(SLEEP_S / fit.epochs)
        train = 1.0 / (1.0 + epoch)
        val = train + 0.05 + 0.01 * epoch
        curves.train_loss.append(train)
        curves.val_loss.append(val)
        curves.val_accuracy.append(0.9)
        if trial is not None:
            trial.report(evaluate(train, val, as_scoring(scoring)).value, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")
    return TrainResult(model=model, curves=curves, score=best_score(curves.train_loss, curves.val_loss, scoring))


@dataclass
class LockClock:
    """Seconds a worker spent waiting for the study lock and holding it, over how many claims."""

    waits: list[float] = field(default_factory=list)
    holds: list[float] = field(default_factory=list)


@contextlib.contextmanager
def stubbed(clock: LockClock) -> Iterator[None]:
    """No TensorFlow anywhere: the trainer sleeps, sessions and repro records are no-ops; the
    study lock is timed."""
    from gapsweep.storage.locks import StudyLock
    from gapsweep.sweeps.trial import objective as objective_module

    acquire, release = StudyLock.acquire, StudyLock.release

    def timed_acquire(lock: StudyLock) -> None:
        start = time.perf_counter()
        acquire(lock)
        clock.waits.append(time.perf_counter() - start)
        lock._bench_held_since = time.perf_counter()  # type: ignore[attr-defined]

    def timed_release(lock: StudyLock) -> None:
        held_since = getattr(lock, "_bench_held_since", None)
        if held_since is not None:
            clock.holds.append(time.perf_counter() - held_since)
            lock._bench_held_since = None  # type: ignore[attr-defined]
        release(lock)

    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(objective_module, "train", sleeping_train))
        patches.enter_context(mock.patch.object(objective_module, "fresh_session", lambda seed: None))
        if hasattr(objective_module, "record"):  # the reproducibility record imports TensorFlow
            patches.enter_context(mock.patch.object(objective_module, "record", lambda seed, splits: {"seed": seed}))
        patches.enter_context(mock.patch.object(StudyLock, "acquire", timed_acquire))
        patches.enter_context(mock.patch.object(StudyLock, "release", timed_release))
        yield


def worker(config: Any, start: Any, results: Any) -> None:
    """One worker process: prepare (untimed), wait for the others, then run gapsweep's loop."""
    from gapsweep.sweeps.run.launch import prepare, run_trials

    harness.quiet_optuna()
    clock = LockClock()
    with stubbed(clock):
        sweep = prepare(config)
        sweep.hypermodel = SleepingHypermodel(sweep.hypermodel)
        try:
            start.wait()
            began = time.time()
            ran = run_trials(sweep, progress=False)
            ended = time.time()
        finally:
            sweep.close()
    import sys

    results.put({"pid": os.getpid(), "ran": ran, "tensorflow_imported": "tensorflow" in sys.modules, "began": began, "ended": ended,
                 "lock_waits": clock.waits, "lock_holds": clock.holds})


# --- The parent: one run per worker count -------------------------------------------------------


def sweep_config(url: str, budget: int) -> Any:
    from gapsweep import DataSpec, ObjectiveSettings, SweepConfig

    return SweepConfig(
        study=STUDY, space="mlp", data=DataSpec("digits"), objective=ObjectiveSettings(gap_penalty=1.0, keep_models=0),
        pruner="none", sampler="random", trials=budget, seed=0, storage=url,
        linear_start=False,  # every trial is a stand-in: no trial starts from a fitted model
    )


def run(url: str, workers: int, budget: int) -> dict[str, Any]:
    """``workers`` processes on a fresh study of ``budget`` trials; their figures and the study's."""
    import optuna
    from optuna.trial import TrialState

    from gapsweep.sweeps.run.launch import prepare

    config = sweep_config(url, budget)
    prepare(config).close()  # create the study first, as `gapsweep launch --create-only` does
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(workers + 1), context.Queue()
    processes = [context.Process(target=worker, args=(config, start, results)) for _ in range(workers)]
    for process in processes:
        process.start()
    start.wait(timeout=300)
    released = time.time()
    reports = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} worker(s) exited with {failed}")

    study = optuna.load_study(study_name=STUDY, storage=url)
    trials = study.get_trials(deepcopy=False)
    study._storage._backend.engine.dispose()  # type: ignore[attr-defined]
    states = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    first_start = min(t.datetime_start for t in done).timestamp()
    last_end = max(t.datetime_complete for t in done).timestamp()
    span = last_end - first_start
    waits = [w for r in reports for w in r["lock_waits"]]
    holds = [h for r in reports for h in r["lock_holds"]]
    per_worker = sorted(r["ran"] for r in reports)
    return {
        "workers": workers,
        "budget": budget,
        "trials_per_s": len(done) / span,
        "span_s": span,
        "wall_s": max(r["ended"] for r in reports) - released,
        "idle_tail_s": max(r["ended"] for r in reports) - last_end,
        "ms_per_trial_per_worker": 1000 * span * workers / len(done),
        "lock_wait_ms_median": 1000 * statistics.median(waits),
        "lock_wait_ms_max": 1000 * max(waits),
        "lock_hold_ms_median": 1000 * statistics.median(holds),
        "claims": len(waits),
        "per_worker": per_worker,
        "distinct_param_sets": len({tuple(sorted(t.params.items())) for t in done}),
        "states": states,
        "tensorflow_imported": any(r["tensorflow_imported"] for r in reports),
        "correct": states["complete"] == budget and states["running"] == 0 and states["fail"] == 0
        and states["waiting"] == 0 and sum(per_worker) == budget,
    }


def measure(counts: list[int], budget: int, repeats: int) -> list[dict[str, Any]]:
    """Every worker count ``repeats`` times, interleaved, each on a fresh PostgreSQL schema."""
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for _ in range(repeats):
        for n in counts:
            with harness.postgres_schema() as url:
                runs[n].append(run(url, n, budget))
    rows = []
    for n, results in runs.items():
        middle = sorted(results, key=lambda r: r["trials_per_s"])[len(results) // 2]
        rows.append({
            **middle,
            "trials_per_s": statistics.median(r["trials_per_s"] for r in results),
            "trials_per_s_runs": [r["trials_per_s"] for r in results],
            "correct": all(r["correct"] for r in results),
            "oversubscribed": n > len(os.sched_getaffinity(0)),
        })
    one = next(r for r in rows if r["workers"] == counts[0])["trials_per_s"] / counts[0]
    for row in rows:
        row["speedup"] = row["trials_per_s"] / one
        row["efficiency"] = row["speedup"] / row["workers"]
    return rows


def plot(rows: list[dict[str, Any]], nproc: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [r["workers"] for r in rows]
    one = rows[0]["trials_per_s"] / rows[0]["workers"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(counts, [one * n for n in counts], "--", color="grey", label="ideal (N × one worker)")
    ax.plot(counts, [r["trials_per_s"] for r in rows], "o-", label="gapsweep workers")
    for row in rows:
        for rate in row["trials_per_s_runs"]:
            ax.plot(row["workers"], rate, ".", color="C0", alpha=0.4)
    ax.axvline(nproc, color="C3", lw=0.8, ls=":", label=f"{nproc} cores")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set_xlabel("worker processes")
    ax.set_ylabel("trials per second")
    ax.set_title(f"{SLEEP_S * 1000:.0f} ms sleeping trials on PostgreSQL", fontsize=10)
    ax.legend(fontsize=8)
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    options = harness.parse_args(__doc__.splitlines()[0], argv)
    harness.quiet_optuna()
    counts, budget, repeats = ([1, 2], 20, 1) if options.quick else ([1, 2, 4, 8], 200, 2)
    started, machine = time.monotonic(), harness.machine()
    reason = harness.postgres_reason()
    rows = measure(counts, budget, repeats) if reason is None else []
    skipped = {} if reason is None else {"postgresql": reason}
    if reason is None:
        machine["postgresql"] = harness.postgres_version()

    columns = ["workers", "trials_per_s", "speedup", "efficiency", "span_s", "wall_s", "idle_tail_s",
               "ms_per_trial_per_worker", "lock_wait_ms_median", "lock_wait_ms_max", "lock_hold_ms_median",
               "distinct_param_sets", "correct"]
    table = report.markdown_table(rows, columns)
    print(table)
    for backend, why in skipped.items():
        print(f"{backend} skipped: {why}")
    if rows:
        plot(rows, machine["nproc"], report.plot_path(options.out, NAME))
    harness.finish(machine, started)
    within_cores = [r for r in rows if r["workers"] <= machine["nproc"]]
    target = {
        "efficiency_at_least": TARGET_EFFICIENCY,
        "efficiency_within_cores": {str(r["workers"]): r["efficiency"] for r in within_cores},
        "met": bool(within_cores) and all(r["efficiency"] >= TARGET_EFFICIENCY for r in within_cores),
        "all_correct": all(r["correct"] for r in rows) if rows else None,
    }
    payload = {
        "benchmark": NAME, "quick": options.quick, "machine": machine,
        "settings": {"workers": counts, "budget": budget, "repeats": repeats, "sleep_s_per_trial": SLEEP_S,
                     "epochs_reported": EPOCHS, "sampler": "random (seed 0, as every worker gets it)",
                     "pruner": "none", "keep_models": 0, "space": "mlp (built-in)",
                     "heartbeat_interval_s": _heartbeat_interval()},
        "skipped": skipped, "rows": rows, "target": target,
    }
    report.write_json(options.out, NAME, payload)
    if not rows:
        report.write_section(options.out, NAME, TITLE, f"Skipped: PostgreSQL unavailable ({reason}).\n\nTarget: not measured.")
        return
    oversubscribed = [r["workers"] for r in rows if r["oversubscribed"]]
    verdict = ", ".join(f"{n} workers {e:.0%}" for n, e in target["efficiency_within_cores"].items() if n != "1")
    body = "\n\n".join([
        f"`python -m benchmarks.workers{' --quick' if options.quick else ''}`: {', '.join(map(str, counts))} worker "
        f"processes on one PostgreSQL study with a budget of {budget} trials; each trial sleeps {SLEEP_S * 1000:.0f} ms "
        f"over {EPOCHS} reported epochs (no Keras), random sampler, no pruner, no kept models, heartbeat every "
        f"{_heartbeat_interval()} s. Median of {repeats} interleaved run(s), each on a fresh schema; workers are "
        "spawned and prepared before a barrier starts them together.",
        report.machine_line(machine),
        table,
        "`trials_per_s`: complete trials over the span from the first trial's start to the last one's end (stored "
        "timestamps); `speedup` is against one worker, `efficiency` = speedup / workers (1 is ideal). `wall_s` runs "
        "from the barrier to the last worker's exit and `idle_tail_s` is its part after the last trial ended. "
        "`lock_wait_ms`: time a worker waited for the study-wide lock per claim; `lock_hold_ms`: time it held it "
        "(budget check, reaping, trial creation and the start of the objective). `distinct_param_sets` counts "
        "different parameter sets among the complete trials; `correct`: exactly the budget complete, none running, "
        "waiting or failed, and the workers' counts add up.",
        *([f"Runs with {', '.join(map(str, oversubscribed))} workers put more processes than cores "
           f"({machine['nproc']}) on the machine: their figures include CPU contention, not coordination alone."]
          if oversubscribed else []),
        "![trials per second by worker count](benchmarks/workers.png)",
        f"Target: up to the core count, N workers at least {TARGET_EFFICIENCY:.0%} of N× one worker's rate: {verdict} "
        f"— **{'met' if target['met'] else 'missed'}**; correctness checks "
        f"{'all passed' if target['all_correct'] else '**failed**'}.",
    ])
    report.write_section(options.out, NAME, TITLE, body)


def _heartbeat_interval() -> int:
    from gapsweep.storage.engine import heartbeat_settings

    return heartbeat_settings()[0]


if __name__ == "__main__":
    main()
