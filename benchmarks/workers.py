"""Worker scaling: 1 to 64 gapsweep workers sharing one PostgreSQL study: pooled, unpooled, through the proxy.

What does it cost to coordinate workers, and how many connections do they hold? Each worker is a
separate process running gapsweep's own loop (``gapsweep.sweeps.run.launch.prepare`` then
``run_trials``: the study-wide lock around the budget check and the trial's creation, reaping of
stale trials, heartbeats) against one PostgreSQL study with a global budget. No Keras runs: the
hypermodel samples the search space and returns a stand-in model, and the trainer sleeps (2 s a
trial, spread over its epochs: a GPU-bound trial leaves its worker's CPU idle) while it reports
each epoch to Optuna, as the real one does. The objective itself is gapsweep's: it records the
curves, the score parts and the worker as user attributes. Ideally N workers finish N× as many
trials per second as one; the gap to N× is the coordination cost (and CPU contention: every
worker's database work needs a core, and this machine has few).

Each worker count runs three ways: straight to PostgreSQL with the default pool
(``$GAPSWEEP_PG_POOL`` unset: two idle connections kept per process) and with none
(``GAPSWEEP_PG_POOL=0``: connect per query), and through ``gapsweep proxy`` (Optuna's gRPC storage
proxy; the workers use ``grpc://``, the proxy alone holds connections, with the default pool). A
thread samples ``pg_stat_activity`` every 50 ms for the workers' (or the proxy's) connections.

Correctness is checked on every run: exactly the budget of COMPLETE trials, none RUNNING, none
failed, no trial run twice (the workers' own counts add up to the budget).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue
import statistics
import tempfile
import threading
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
#: Seconds a trial sleeps (full run, quick run).
SLEEP_S, QUICK_SLEEP_S = 2.0, 0.05
#: Trials in the study per worker.
TRIALS_PER_WORKER = 10
#: The ways workers reach the database: label -> $GAPSWEEP_PG_POOL (None: unset, the default).
POOLS = {"default pool": None, "no pool": "0", "proxy": None, "proxy, 2 processes": None}
#: The variants whose workers go through ``gapsweep proxy``: label -> its ``--processes``.
PROXIES = {"proxy": 1, "proxy, 2 processes": 2}
#: How the benchmark's workers name themselves to PostgreSQL, so their connections can be counted.
APPLICATION = "gapsweep-bench-workers"
#: 32 workers should reach at least this share of 32× one worker's rate.
TARGET_EFFICIENCY = 0.8
#: At most this many PostgreSQL connections with 64 workers.
TARGET_CONNECTIONS = 10


# --- What runs inside a worker process ----------------------------------------------------------


class StandInModel:
    """What the objective may call on a trained model; nothing here needs Keras. ``sleep_s``:
    how long 'training' it takes."""

    def __init__(self, sleep_s: float) -> None:
        self.sleep_s = sleep_s

    def evaluate(self, *_: Any, **__: Any) -> dict[str, float]:
        return {"loss": 0.3, "pure_loss": 0.25, "accuracy": 0.9}

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_bytes(b"stand-in model")


class SleepingHypermodel:
    """gapsweep's space, sampled as a real trial samples it, with a stand-in model to 'train'."""

    def __init__(self, real: Any, sleep_s: float) -> None:
        self.real = real
        self.sleep_s = sleep_s
        self.max_epochs = EPOCHS

    def build(self, trial: Any, task: Any) -> tuple[StandInModel, Any]:
        from gapsweep.search_spaces.hypermodel import FitSettings

        values, fixed = self.real.draw(trial)
        return StandInModel(self.sleep_s), FitSettings(epochs=EPOCHS, batch_size=int(values["batch_size"]), fixed=fixed)

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
        time.sleep(model.sleep_s / fit.epochs)
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
    from gapsweep.storage.backend import FreeLock
    from gapsweep.storage.locks import StudyLock
    from gapsweep.sweeps.trial import objective as objective_module

    def timed(acquire: Any, release: Any) -> tuple[Any, Any]:
        def timed_acquire(lock: Any) -> None:
            start = time.perf_counter()
            acquire(lock)
            clock.waits.append(time.perf_counter() - start)
            lock._bench_held_since = time.perf_counter()

        def timed_release(lock: Any) -> None:
            held_since = getattr(lock, "_bench_held_since", None)
            if held_since is not None:
                clock.holds.append(time.perf_counter() - held_since)
                lock._bench_held_since = None
            release(lock)

        return timed_acquire, timed_release

    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(objective_module, "train", sleeping_train))
        patches.enter_context(mock.patch.object(objective_module, "fresh_session", lambda seed: None))
        if hasattr(objective_module, "record"):  # the reproducibility record imports TensorFlow
            patches.enter_context(mock.patch.object(objective_module, "record", lambda seed, splits: {"seed": seed}))
        # A proxy's worker takes no lock (``FreeLock``): from "acquire" to "release" is its whole claim.
        for lock in (StudyLock, FreeLock):
            acquire, release = timed(lock.acquire, lock.release)
            patches.enter_context(mock.patch.object(lock, "acquire", acquire))
            patches.enter_context(mock.patch.object(lock, "release", release))
        yield


def worker(config: Any, sleep_s: float, start: Any, results: Any) -> None:
    """One worker process: prepare (untimed), wait for the others, then run gapsweep's loop."""
    from gapsweep.sweeps.run.launch import prepare, run_trials

    harness.quiet_optuna()
    clock = LockClock()
    with stubbed(clock):
        sweep = prepare(config)
        sweep.hypermodel = SleepingHypermodel(sweep.hypermodel, sleep_s)
        try:
            try:
                start.wait()
            except threading.BrokenBarrierError:  # another worker died: the run is off
                return
            began = time.time()
            ran = run_trials(sweep, progress=False)
            ended = time.time()
        finally:
            sweep.close()
    import sys

    results.put({"pid": os.getpid(), "ran": ran, "tensorflow_imported": "tensorflow" in sys.modules, "began": began, "ended": ended,
                 "lock_waits": clock.waits, "lock_holds": clock.holds})


# --- The parent: one run per worker count and pool -------------------------------------------


class ConnectionSampler:
    """Counts the workers' PostgreSQL connections every 50 ms in a thread (its own connection is
    not one of them): the peak, and the mean while the workers ran."""

    def __init__(self) -> None:
        import sqlalchemy as sa

        self.engine = sa.create_engine(harness.PG_URL, poolclass=sa.pool.NullPool)
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import sqlalchemy as sa

        query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                self.counts.append(int(conn.execute(query, {"name": APPLICATION}).scalar() or 0))
                conn.rollback()
                self._stop.wait(0.05)

    def __enter__(self) -> "ConnectionSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()


@contextlib.contextmanager
def pool_setting(value: str | None) -> Iterator[None]:
    """``$GAPSWEEP_PG_POOL`` for the worker processes spawned inside (they inherit it)."""
    before = os.environ.pop("GAPSWEEP_PG_POOL", None)
    if value is not None:
        os.environ["GAPSWEEP_PG_POOL"] = value
    try:
        yield
    finally:
        os.environ.pop("GAPSWEEP_PG_POOL", None)
        if before is not None:
            os.environ["GAPSWEEP_PG_POOL"] = before


def sweep_config(url: str, budget: int, artifacts: str) -> Any:
    from gapsweep import DataSpec, ObjectiveSettings, SweepConfig

    return SweepConfig(
        study=STUDY, space="mlp", data=DataSpec("digits"), objective=ObjectiveSettings(gap_penalty=1.0, keep_models=0),
        pruner="none", sampler="random", trials=budget, seed=0, storage=url, artifacts=artifacts,
        linear_start=False,  # every trial is a stand-in: no trial starts from a fitted model
    )


@contextlib.contextmanager
def proxy_server(url: str, processes: int) -> Iterator[str]:
    """``gapsweep proxy`` in front of ``url`` on a free port, until the block ends: its URL."""
    import socket
    import subprocess
    import sys

    import optuna

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "gapsweep.cli", "proxy", "--storage", url, "--host", "127.0.0.1", "--port", str(port),
         "--processes", str(processes)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port)
        client.wait_server_ready(timeout=60)
        client.close()
        yield f"grpc://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def run(url: str, workers: int, budget: int, sleep_s: float, pool: str) -> dict[str, Any]:
    """``workers`` processes on a fresh study of ``budget`` trials; their figures and the study's."""
    from gapsweep.sweeps.run.launch import prepare

    url = f"{url}&application_name={APPLICATION}"
    with contextlib.ExitStack() as stack:
        models = stack.enter_context(tempfile.TemporaryDirectory(prefix="gapsweep-bench-models-"))
        config = sweep_config(url, budget, f"file://{models}")  # a proxy's workers need a store of their own
        prepare(config).close()  # create the study first, as `gapsweep launch --create-only` does
        if pool in PROXIES:
            config = config.override(storage=stack.enter_context(proxy_server(url, PROXIES[pool])))
        return _run_workers(url, config, workers, budget, sleep_s, pool)


def _run_workers(url: str, config: Any, workers: int, budget: int, sleep_s: float, pool: str) -> dict[str, Any]:
    import optuna
    from optuna.trial import TrialState

    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(workers + 1), context.Queue()
    with pool_setting(POOLS[pool]):
        processes = [context.Process(target=worker, args=(config, sleep_s, start, results)) for _ in range(workers)]
        for process in processes:
            process.start()
    errors: list[str] = []
    with ConnectionSampler() as connections:
        while start.n_waiting < workers:  # a worker that dies preparing (e.g. no connection left) never arrives
            dead = [p.exitcode for p in processes if p.exitcode is not None]
            if dead:
                start.abort()
                errors.append(f"{len(dead)} worker(s) died before the start (exit codes {sorted(set(dead))})")
                break
            time.sleep(0.1)
        else:
            start.wait(timeout=60)
        released = time.time()
        sampled_from = len(connections.counts)
        reports = []
        while len(reports) < len(processes) and not errors:
            try:
                reports.append(results.get(timeout=1))
            except queue.Empty:
                if all(p.exitcode is not None for p in processes) and results.empty():
                    break  # a worker died without a report: counted below
    for process in processes:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        errors.append(f"{len(failed)} worker(s) exited with {sorted(set(failed))}")
    during = connections.counts[sampled_from:] or [0]

    study = optuna.load_study(study_name=STUDY, storage=url)
    trials = study.get_trials(deepcopy=False)
    study._storage._backend.engine.dispose()  # type: ignore[attr-defined]
    states = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds() if done else 0.0
    claims = sorted(w + h for r in reports for w, h in zip(r["lock_waits"], r["lock_holds"]))
    holds = [h for r in reports for h in r["lock_holds"]]
    per_worker = sorted(r["ran"] for r in reports)
    return {
        "pool": pool,
        "workers": workers,
        "budget": budget,
        "trials_per_s": len(done) / span if span else 0.0,
        "span_s": span,
        "wall_s": max((r["ended"] for r in reports), default=released) - released,
        "connections_peak": max(connections.counts or [0]),
        "connections_mean": statistics.fmean(during),
        "claim_ms_median": 1000 * statistics.median(claims) if claims else None,
        "claim_ms_p95": 1000 * claims[int(0.95 * (len(claims) - 1))] if claims else None,
        "lock_hold_ms_median": 1000 * statistics.median(holds) if holds else None,
        "claims": len(claims),
        "per_worker": per_worker,
        "duplicates": sum(per_worker) - states["complete"],
        "states": states,
        "tensorflow_imported": any(r["tensorflow_imported"] for r in reports),
        "errors": errors,
        "correct": not errors and states["complete"] == budget and states["running"] == 0 and states["fail"] == 0
        and states["waiting"] == 0 and sum(per_worker) == budget,
    }


def measure(counts: list[int], sleep_s: float) -> list[dict[str, Any]]:
    """Every worker count with each pool, on a fresh PostgreSQL schema each; the budget grows
    with the count (``TRIALS_PER_WORKER`` each), so every run lasts about as long."""
    rows = []
    for pool in POOLS:
        for n in counts:
            with harness.postgres_schema() as url:
                rows.append(run(url, n, TRIALS_PER_WORKER * n, sleep_s, pool))
            print(f"{pool}, {n} workers: {rows[-1]['trials_per_s']:.2f} trials/s, "
                  f"peak {rows[-1]['connections_peak']} connections, correct {rows[-1]['correct']}", flush=True)
    for row in rows:
        one = next(r for r in rows if r["pool"] == row["pool"] and r["workers"] == counts[0])
        row["speedup"] = row["trials_per_s"] / (one["trials_per_s"] / counts[0]) if one["trials_per_s"] else 0.0
        row["efficiency"] = row["speedup"] / row["workers"]
        row["connections_per_worker"] = row["connections_mean"] / row["workers"]
    return rows


def plot(rows: list[dict[str, Any]], nproc: int, sleep_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate, held) = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, pool in enumerate(POOLS):
        mine = [r for r in rows if r["pool"] == pool]
        counts = [r["workers"] for r in mine]
        rate.plot(counts, [r["trials_per_s"] for r in mine], "o-", color=f"C{i}", label=pool)
        held.plot(counts, [r["connections_peak"] for r in mine], "o-", color=f"C{i}", label=f"{pool}: peak")
        held.plot(counts, [r["connections_mean"] for r in mine], "x--", color=f"C{i}", label=f"{pool}: mean")
    counts = sorted({r["workers"] for r in rows})
    one = rows[0]["trials_per_s"] / rows[0]["workers"]
    rate.plot(counts, [one * n for n in counts], ":", color="grey", label="ideal (N × one worker)")
    held.axhline(TARGET_CONNECTIONS, color="C3", lw=0.8, ls=":", label=f"{TARGET_CONNECTIONS} connections")
    for ax, label in ((rate, "trials per second"), (held, "PostgreSQL connections")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.set_xlabel(f"worker processes ({nproc} cores)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"{sleep_s * 1000:.0f} ms sleeping trials on PostgreSQL", fontsize=10)
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    options = harness.parse_args(__doc__.splitlines()[0], argv)
    harness.quiet_optuna()
    counts, sleep_s = ([1, 2], QUICK_SLEEP_S) if options.quick else ([1, 8, 32, 64], SLEEP_S)
    started, machine = time.monotonic(), harness.machine()
    reason = harness.postgres_reason()
    rows = measure(counts, sleep_s) if reason is None else []
    skipped = {} if reason is None else {"postgresql": reason}
    if reason is None:
        machine["postgresql"] = harness.postgres_version()

    columns = ["pool", "workers", "budget", "trials_per_s", "speedup", "efficiency", "wall_s", "connections_peak",
               "connections_mean", "connections_per_worker", "claim_ms_median", "claim_ms_p95", "lock_hold_ms_median",
               "duplicates", "correct"]
    table = report.markdown_table(rows, columns)
    print(table)
    for backend, why in skipped.items():
        print(f"{backend} skipped: {why}")
    if rows:
        plot(rows, machine["nproc"], sleep_s, report.plot_path(options.out, NAME))
    harness.finish(machine, started)
    at = {(r["pool"], r["workers"]): r for r in rows}
    widest, middle = counts[-1], counts[-2] if len(counts) > 2 else counts[-1]
    target = {
        "efficiency_at_least": TARGET_EFFICIENCY,
        "efficiency": {f"{pool}, {middle}": at[(pool, middle)]["efficiency"] for pool in POOLS if (pool, middle) in at},
        "connections_at_most": TARGET_CONNECTIONS,
        "connections_peak": {f"{pool}, {widest}": at[(pool, widest)]["connections_peak"] for pool in POOLS if (pool, widest) in at},
        "all_correct": all(r["correct"] for r in rows) if rows else None,
    }
    # The targets are the proxy's: the direct rows show what it saves.
    target["efficiency_met"] = any(target["efficiency"].get(f"{p}, {middle}", 0.0) >= TARGET_EFFICIENCY for p in PROXIES)
    target["connections_met"] = any(target["connections_peak"].get(f"{p}, {widest}", math.inf) <= TARGET_CONNECTIONS for p in PROXIES)
    payload = {
        "benchmark": NAME, "quick": options.quick, "machine": machine,
        "settings": {"workers": counts, "trials_per_worker": TRIALS_PER_WORKER, "pools": POOLS,
                     "sleep_s_per_trial": sleep_s, "epochs_reported": EPOCHS,
                     "sampler": "random (seed 0, as every worker gets it)", "pruner": "none", "keep_models": 0,
                     "space": "mlp (built-in)", "heartbeat_interval_s": _heartbeat_interval()},
        "skipped": skipped, "rows": rows, "target": target,
    }
    report.write_json(options.out, NAME, payload)
    if not rows:
        report.write_section(options.out, NAME, TITLE, f"Skipped: PostgreSQL unavailable ({reason}).\n\nTarget: not measured.")
        return
    efficiency = ", ".join(f"{key} workers {value:.0%}" for key, value in target["efficiency"].items())
    peaks = ", ".join(f"{key} workers {value}" for key, value in target["connections_peak"].items())
    body = "\n\n".join([
        f"`python -m benchmarks.workers{' --quick' if options.quick else ''}`: {', '.join(map(str, counts))} worker "
        f"processes on one PostgreSQL study with a budget of {TRIALS_PER_WORKER} trials per worker; each trial sleeps "
        f"{sleep_s * 1000:.0f} ms over {EPOCHS} reported epochs (no Keras), random sampler, no pruner, no kept models, "
        f"heartbeat every {_heartbeat_interval()} s; straight to PostgreSQL with the default pool and with `GAPSWEEP_PG_POOL=0`, "
        "and through `gapsweep proxy` (workers on `grpc://`; the proxy with its own default pool, one process and two). "
        "One run each on a fresh schema; workers are spawned and prepared before a barrier starts them together.",
        report.machine_line(machine),
        table,
        "`trials_per_s`: complete trials over the span from the first trial's start to the last one's end (stored "
        "timestamps); `speedup` is against one worker the same way, `efficiency` = speedup / workers (1 is "
        "ideal). `wall_s` runs from the barrier to the last worker's exit. `connections_peak` / `_mean`: the workers' "
        "(or the proxy's) connections in `pg_stat_activity`, sampled every 50 ms (the mean while they ran). `claim_ms`: "
        "a claim from asking for the study lock to starting the trial (waiting plus holding it); `lock_hold_ms`: the "
        "holding part (budget check, reaping, trial creation and sampling). Through the proxy a worker takes no lock: "
        "both are its whole claim (counting, then Optuna's ask, which the proxy admits against the budget). `duplicates`: trials run by more than one worker; "
        "`correct`: exactly the budget complete, none running, waiting or failed, and the workers' counts add up.",
        f"Every run past {machine['nproc']} workers puts more processes than cores on the machine: the workers' "
        "database work and PostgreSQL's share them.",
        "![trials per second and connections by worker count](benchmarks/workers.png)",
        f"Target: through the proxy, {middle} workers at least {TARGET_EFFICIENCY:.0%} of {middle}× one worker's rate: {efficiency} — "
        f"**{'met' if target['efficiency_met'] else 'missed'}**; {widest} workers on at most {TARGET_CONNECTIONS} "
        f"connections: {peaks} — **{'met' if target['connections_met'] else 'missed'}**; correctness checks "
        f"{'all passed' if target['all_correct'] else '**failed**'}.",
    ])
    report.write_section(options.out, NAME, TITLE, body)


def _heartbeat_interval() -> int:
    from gapsweep.storage.engine import heartbeat_settings

    return heartbeat_settings()[0]


if __name__ == "__main__":
    main()
