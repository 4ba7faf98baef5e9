"""Run a sweep: validate everything, open the study, then claim and train trials until the
study's budget is spent.

Order matters for "bad input loses nothing": the space, the builder's parameter names and the
data are all checked before the database is touched, so a mistake never leaves a half-made
study behind.

Crash safety: the storage records a heartbeat for every running trial; a trial whose worker
died is failed once its heartbeat is older than the grace period, and Optuna's
``RetryHeartbeatStaleTrialCallback`` queues its parameters again. The retried trial resumes
from the dead one's last checkpoint (see ``gapsweep.sweeps.trial.checkpoints``).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import logging
import math
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterator, Sequence

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from gapsweep import checks, env
from gapsweep.storage import trial_keys
from gapsweep.errors import BudgetTaken, ConfigError, GapsweepError, StorageError, SweepFailedError, one_line
from gapsweep.search_spaces import code_refs
from gapsweep.search_spaces.hypermodel import Hypermodel, SpaceHypermodel
from gapsweep.search_spaces import keras_tuner
from gapsweep.search_spaces.loader import load_space
from gapsweep.search_spaces.space import Fixed
from gapsweep.storage.artifact_store import ArtifactStore, canonical, open_store
from gapsweep.storage.backend import NO_BYTES_THROUGH_PROXY, STORAGE_ERRORS, Backend, open_backend
from gapsweep.storage.engine import heartbeat_settings, pg_pool_size, sqlite_path
from gapsweep.storage.heartbeats import quiet_experimental
from gapsweep.storage.locks import lock_timeout_s
from gapsweep.storage.studies import CONFIG_ATTR, COUNTED, REFERENCE_ATTR, create_or_load, room_for_new, stored_config
from gapsweep.storage.url import journal_path, parse, proxy_address
from gapsweep.sweeps.data import datasets, in_memory
from gapsweep.sweeps.run.config import SweepConfig, stored_data
from gapsweep.sweeps.run.jobs import TRIALS_PER_PROCESS, JobPool, JobSpec, parse_gpus, usable_cores, use_device
from gapsweep.sweeps.run.reference import fit_reference, linear_start, linear_weights
from gapsweep.sweeps.data.cv import check_folds
from gapsweep.sweeps.data.datasets import Splits
from gapsweep.sweeps.trial.checkpoints import checkpoint_interval
from gapsweep.sweeps.trial.models import ModelKeeper
from gapsweep.sweeps.trial.objective import Objective
from gapsweep.sweeps.trial.pruning import make_pruner
from gapsweep.sweeps.trial.runtime import init_tensorflow, set_threads
from gapsweep.sweeps.trial.trainer import TrainingDiverged

#: Training rows a KerasTuner hypermodel's first model is evaluated on before the study exists.
_CHECK_ROWS = 16

#: Consecutive database errors a worker rides out before it gives up.
MAX_DB_ERRORS = 5

#: Seconds an idle worker waits before it looks again for a retried trial (at most the
#: heartbeat interval): short, so the last trials of a study do not end with an idle tail.
IDLE_POLL_S = 1.0


@dataclass
class Sweep:
    """A validated configuration bound to its open study: what workers run trials against."""

    config: SweepConfig
    hypermodel: Hypermodel
    splits: Splits
    #: Where the study lives: Optuna's storage and gapsweep's records beside it.
    backend: Backend
    study: optuna.Study
    #: Where this study's trained models and checkpoints keep their bytes.
    artifacts: ArtifactStore
    stop_requested: bool = False
    #: A worker's identity, mixed into its sampler's seed (None for ``launch``).
    salt: str | None = None
    #: How many trials the study holds as far as this process's sampler knows: when another
    #: process added trials meanwhile, the sampler is seeded anew (see ``_resample_if_shared``).
    trials_seen: int = 0
    #: This process is job K of ``launch --jobs``: each claim's sampler is seeded from the study's
    #: seed and the claim's position in the study, whichever job makes it (see ``_resample_if_shared``),
    #: and waits go unannounced (launch's bar shows them).
    job: int | None = None

    def close(self) -> None:
        """Give the connections back: many short-lived workers must not exhaust the server."""
        self.backend.close()


def prepare(config: SweepConfig, *, salt: str | None = None, allow_objective_change: bool = False) -> Sweep:
    """Validate ``config``, then create or resume its study. Nothing is written before the
    space and data have passed their checks, and no code is imported from outside the project.

    A resumed study must see the same search space, the same data (by fingerprint), the same
    artifact store and, unless ``allow_objective_change``, the same objective: otherwise its
    trials would mix scores that cannot be compared, or lose their models.
    """
    env.check([heartbeat_settings, lock_timeout_s, checkpoint_interval, pg_pool_size])
    config.code()  # a hypermodel or data loader file outside the project folder is refused before anything runs
    config.data_code()
    splits = datasets.load(config.data, config.code_dir)
    if config.objective.cv:
        check_folds(splits, config.objective.cv)
    hypermodel = load_hypermodel(config, splits)
    if config.baseline is not None:
        _check_baseline(config.baseline, hypermodel)
    store = open_store(config.artifacts)
    store.check()  # an unreachable or read-only store is named now, not after the first trained model
    stored = {
        **config.to_dict(), **hypermodel.describe(),
        "data_fingerprint": splits.fingerprint, "test_fingerprint": splits.test_fingerprint,
    }

    multi = config.objective.multi_objective
    directions = ["minimize", "minimize"] if multi else ["minimize"]
    backend = open_backend(config.storage)
    storage = backend.storage
    try:
        if store.in_database and not backend.holds_bytes:
            raise StorageError(NO_BYTES_THROUGH_PROXY)
        study = create_or_load(
            config.study,
            storage,
            sampler=optuna.samplers.RandomSampler(seed=0),  # replaced below once the study's size is known
            pruner=_pruner(config, hypermodel),
            directions=directions,
        )
        previous = stored_config(study)
        if len(study.directions) != len(directions):
            kinds = {1: "single-objective", 2: "multi-objective (val loss, gap)"}
            raise ConfigError(
                f"study '{config.study}' is {kinds[len(study.directions)]}; launch it the same way or under a new --study name"
            )
        if previous is not None:
            _check_resume(config, previous, stored, allow_objective_change=allow_objective_change)
        if previous is None or previous != stored:
            study.set_user_attr(CONFIG_ATTR, stored)
        if REFERENCE_ATTR not in study.user_attrs:  # once per study: a resumed one keeps its reference
            reference = fit_reference(splits, cv=config.objective.cv, seed=config.seed)
            if reference is not None:
                study.set_user_attr(REFERENCE_ATTR, reference)
        n_existing, queued = len(study.get_trials(deepcopy=False)), 0
        if n_existing == 0:
            # Under the study lock, counted again: two first launches racing on a new study
            # queue the starts once, not twice.
            with backend.lock(config.study):
                n_existing = len(study.get_trials(deepcopy=False))
                if n_existing == 0:
                    reference = study.user_attrs.get(REFERENCE_ATTR)
                    queued = _enqueue_starts(study, config, hypermodel, reference, len(splits.x_train))
        study.sampler = _sampler(config, n_existing=n_existing, salt=salt)
        n_existing += queued
    except STORAGE_ERRORS as exc:
        backend.close()
        raise backend.failure(exc.__cause__ or exc) from None
    except GapsweepError:
        backend.close()
        raise
    return Sweep(config, hypermodel, splits, backend, study, store, salt=salt, trials_seen=n_existing)


def _enqueue_starts(
    study: optuna.Study, config: SweepConfig, hypermodel: Hypermodel, reference: dict[str, Any] | None, train_rows: int
) -> int:
    """Queue a new study's first trials: the user's baseline (so every summary can compare
    against it), then the linear reference's configuration. Returns how many were queued."""
    starts = []
    if config.baseline is not None:
        starts.append((config.baseline, trial_keys.BASELINE))
    space = getattr(hypermodel, "space", None)
    if config.linear_start and reference is not None and space is not None:
        linear = linear_start(reference, space, train_rows)
        if linear is not None:
            starts.append((linear, trial_keys.LINEAR_START))
    for params, key in starts:
        study.enqueue_trial(params, user_attrs={key: True})
    return len(starts)


def _check_resume(
    config: SweepConfig, previous: dict[str, Any], stored: dict[str, Any], *, allow_objective_change: bool
) -> None:
    """Refuse to resume a study with another space, other data or (unless allowed) another
    objective. Studies stored before gapsweep kept a data (or test) fingerprint are not checked for it."""
    name = config.study
    for key in ("space", "hypermodel"):
        if key in stored and previous.get(key) != stored.get(key) and not _same_code(key, previous, stored, config):
            what = "hypermodel" if key == "hypermodel" else "search space"
            raise ConfigError(
                f"study '{name}' was started with a different {what}; "
                f"resume it with the same {what} or launch under a new --study name"
            )
    before, now = previous.get("hypermodel_params"), stored.get("hypermodel_params")
    if before is not None and now is not None and before != now:  # studies from before it was stored: not checked
        changed = sorted(key for key in {*before, *now} if before.get(key) != now.get(key))
        raise ConfigError(
            f"study '{name}' was started with a hypermodel that declared its parameters otherwise (changed: "
            f"{', '.join(changed)}); resume it with the build function as it was, or launch under a new --study name"
        )
    was_kept_in = canonical(previous.get("artifacts"))
    if was_kept_in != stored["artifacts"]:
        raise ConfigError(
            f"study '{name}' keeps its models and checkpoints in {was_kept_in}; resume it with "
            f"--artifacts {was_kept_in} or launch under a new --study name"
        )
    fingerprint = previous.get("data_fingerprint")
    if fingerprint is not None and fingerprint != stored["data_fingerprint"]:
        scaled = (stored_data(previous.get("data")) or {}).get("scale_target")
        if scaled != config.data.scale_target:
            how = "standardized" if scaled else "as they are"
            raise ConfigError(
                f"study '{name}' trained on its regression targets {how}, so its losses are in those units; resume it "
                f"with data.scale_target = {str(bool(scaled)).lower()} (in a sweep file) or launch under a new --study name"
            )
        was, now = _data_name(previous.get("data")), _data_name(stored.get("data"))
        raise ConfigError(
            f"study '{name}' was started on other data ({was}, fingerprint {fingerprint}; now {now}, "
            f"{stored['data_fingerprint']}); resume it with the same data or launch under a new --study name"
        )
    test = previous.get("test_fingerprint")
    if test is not None and test != stored["test_fingerprint"]:
        raise ConfigError(
            f"study '{name}' was started with other test rows (fingerprint {test}; now {stored['test_fingerprint']}): "
            "its kept models' test metrics would not compare; resume it with the same data and split, or launch "
            "under a new --study name"
        )
    before, after = previous.get("objective") or {}, stored.get("objective") or {}
    changed = [f"{key} {before[key]!r} -> {after[key]!r}" for key in after if key in before and before[key] != after[key]]
    if changed and not allow_objective_change:
        raise ConfigError(
            f"study '{name}' was started with another objective ({', '.join(changed)}): its scores would not compare; "
            "resume with the same settings, pass --allow-objective-change to score the trials still to run the new way, "
            "or launch under a new --study name"
        )


def _data_name(data: Any) -> str:
    if not isinstance(data, dict):
        return "unknown data"
    return str(data.get("source")) + (f", target {data['target']}" if data.get("target") else "")


def _pruner(config: SweepConfig, hypermodel: Hypermodel) -> optuna.pruners.BasePruner:
    """Epochs are the pruner's steps, or folds under cross-validation (a trial reports once per
    fold, so a pruner sized in epochs would wait for steps that never come)."""
    if config.objective.multi_objective:
        return make_pruner("none", max_epochs=hypermodel.max_epochs)
    if config.objective.cv:
        return make_pruner(config.pruner, max_epochs=config.objective.cv, warmup_epochs=1)
    return make_pruner(config.pruner, max_epochs=hypermodel.max_epochs)


@contextlib.contextmanager
def graceful_stop(sweep: Sweep) -> Iterator[None]:
    """First SIGTERM/SIGINT: finish the current trial, then stop. Second: stop now (the trial
    is marked failed by Optuna and queued again). Used by workers and by a one-job ``launch``,
    the CLI's and the Python API's alike (a notebook's "interrupt kernel" is a SIGINT). A job of
    ``launch --jobs`` also takes SIGHUP (its launch died), however often it comes, as the first."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if sweep.stop_requested:
            if sweep.job is None:
                tqdm.write(f"gapsweep: {signal.Signals(signum).name} again: stopping now; the running trial is queued again",
                           file=sys.stderr)
            raise KeyboardInterrupt
        sweep.stop_requested = True
        if sweep.job is not None:
            return  # launch said it once for all its jobs
        tqdm.write(f"gapsweep: {signal.Signals(signum).name}: finishing the current trial, then stopping "
                   "(send it again to stop now)", file=sys.stderr)  # on a line of its own, above the bar

    def hang_up(signum: int, frame: FrameType | None) -> None:
        sweep.stop_requested = True

    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only: a launch run from another thread keeps Python's own
        return
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    if sweep.job is not None:
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hang_up)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def launch(
    config: SweepConfig,
    *,
    jobs: int = 1,
    gpus: Sequence[str] | None = None,
    progress: bool | None = None,
    allow_objective_change: bool = False,
    log_file: str | Path | None = None,
) -> optuna.Study:
    """Run ``config`` until the study holds ``config.trials`` complete or pruned trials.

    The budget is the study's, not this call's: launching the same study again continues to
    the same total, and a larger ``trials`` extends it. ``progress=None`` shows a bar only on a
    terminal. Optuna's per-trial log (with each failed trial's traceback) goes to ``log_file``
    (default: ``default_log_path``).

    ``jobs`` > 1 trains that many trials at once, in this process and ``jobs`` − 1 worker
    processes (see ``run_parallel``); a Ctrl-C then lets them finish their trials and raises
    ``KeyboardInterrupt``. ``gpus`` (e.g. ``["0", "1"]``, or ``["none"]`` for the CPU) pins
    the jobs to GPUs in turn; with one job, this process to the first. Data passed in memory
    trains in this process only: ``jobs`` > 1 is refused for it.
    """
    if not isinstance(config, SweepConfig):
        raise ConfigError(f"config must be a SweepConfig (e.g. SweepConfig(study='digits')), got {type(config).__name__}")
    checks.whole("jobs", jobs, 1)
    if jobs > 1 and config.data.in_memory:
        raise in_memory.unreachable(config.data.to_dict()["source"], f"the job processes of jobs={jobs}")
    if jobs > 1 and config.hypermodel is not None and not isinstance(config.hypermodel, str):
        where = keras_tuner.importable_ref(config.hypermodel)
        if keras_tuner.unimportable(where) is not None:  # a note, not a reference: the job processes could not import it
            raise ConfigError(f"jobs={jobs} starts job processes that import the hypermodel, but {where[1:-1]}; or use jobs=1")
    gpus = parse_gpus(gpus, "gpus")
    with prepared(config, jobs=jobs, gpus=gpus, allow_objective_change=allow_objective_change, log_file=log_file) as (sweep, pool):
        if pool is None:
            with graceful_stop(sweep):
                run_trials(sweep, progress=progress, log_file=log_file)
            if sweep.stop_requested:
                raise KeyboardInterrupt
        elif run_parallel(sweep, pool, progress=progress, log_file=log_file):
            raise KeyboardInterrupt
    return sweep.study


@contextlib.contextmanager
def prepared(
    config: SweepConfig, *, jobs: int = 1, gpus: Sequence[str] | None = None, allow_objective_change: bool = False,
    log_file: str | Path | None = None,
) -> Iterator[tuple[Sweep, JobPool | None]]:
    """``prepare`` for a launch that trains ``jobs`` trials at once, pinned to ``gpus`` in turn.

    With ``jobs`` > 1 the other jobs' processes start first, so their TensorFlow imports overlap
    this process's preparing; they wait for ``run_parallel`` (or end unused if preparing fails).
    The study's connections and every job are closed on the way out.
    """
    check_log_file(log_file)
    threads = 1 if jobs == 1 else max(1, usable_cores() // jobs)
    set_threads(threads)  # TensorFlow starts later: with a hypermodel's check, or the first trial
    pool = JobPool(_job_spec(config, gpus, log_file), jobs - 1, threads=threads) if jobs > 1 else None
    try:
        if gpus:
            use_device(gpus[0])  # before prepare, which may build a model
        sweep = prepare(config, allow_objective_change=allow_objective_change)
        try:
            yield sweep, pool
        finally:
            sweep.close()
    finally:
        if pool is not None:
            pool.close()


def _job_spec(config: SweepConfig, gpus: Sequence[str] | None, log_file: str | Path | None) -> JobSpec:
    return JobSpec(
        study=config.study, storage=config.storage, code_dir=str(Path(config.code_dir or ".").resolve()),
        log_file=Path(log_file if log_file is not None else default_log_path(config.storage)).resolve(), gpus=gpus,
    )


def run_parallel(sweep: Sweep, pool: JobPool, *, progress: bool | None = None, log_file: str | Path | None = None) -> bool:
    """Train trials in this process, as job 0, while ``pool``'s jobs train theirs, under one
    progress bar. Returns whether a signal interrupted the sweep.

    No more jobs start than trials remain. A job that dies costs no trial (the others retry it
    once its heartbeat is stale); an error, a job's (e.g. ``max_failures`` failures in a row) or
    this process's, stops the others after their trials and is raised here as ``SweepFailedError``;
    so is the death of every job before the budget. After ``TRIALS_PER_PROCESS`` trials this
    process hands its place to a fresh job, so its memory stays flat as a worker's does.
    """
    config = sweep.config
    counts = sweep.backend.state_counts(config.study)
    if _work_in(counts, config.trials) is None:
        return False  # the study is done: nothing to start
    remaining = max(config.trials - sum(counts[state.name] for state in COUNTED), counts["WAITING"])
    # The timeout counts from here, as with one job: this process imports TensorFlow in its first
    # trial, and a job that is ready only after it starts no trial.
    stop_at = None if config.timeout is None else time.time() + config.timeout
    pool.start(remaining - 1, stop_at=stop_at)  # this process is one of the jobs
    sweep.job = 0
    training = True

    def stop_after_trial() -> None:
        sweep.stop_requested = True

    def stop_now() -> None:
        if training:
            raise KeyboardInterrupt  # run_trials queues this process's trial again

    with _ProgressBar(sweep.study, config.trials, progress) as bar:
        def poll() -> None:
            if bar.bar.disable:
                return
            # A database hiccup skips one refresh of the bar; the jobs ride it out on their own.
            with contextlib.suppress(*STORAGE_ERRORS):
                bar.show(sweep.study, sweep.backend.state_counts(config.study), since=counts)

        monitor = threading.Thread(
            target=pool.wait, kwargs={"poll": poll, "until": lambda: not training, "on_error": stop_after_trial},
            name="gapsweep-jobs", daemon=True,
        )
        with pool.passing_signals(first=stop_after_trial, again=stop_now):
            monitor.start()
            try:
                ran = run_trials(sweep, max_trials=TRIALS_PER_PROCESS, progress=False, log_file=log_file, stop_at=stop_at)
                if ran == TRIALS_PER_PROCESS and not sweep.stop_requested and has_work(sweep) is not None:
                    pool.add(0)
            except KeyboardInterrupt:
                pass  # the second signal: the jobs stop at once too
            except BaseException:
                pool.stop()  # this process failed: the jobs finish their trials and stop
                raise
            finally:
                training = False
                monitor.join()
    outcome = pool.outcome
    if outcome.error is not None:
        raise SweepFailedError(outcome.error)
    timed_out = stop_at is not None and time.time() >= stop_at
    if outcome.died and not outcome.interrupted and not timed_out and has_work(sweep) is not None:
        raise SweepFailedError(
            f"every job ended before the budget was spent ({'; '.join(outcome.died)}); launch study "
            f"'{config.study}' again to go on: the trials they were running are retried"
        )
    return outcome.interrupted


def run_trials(
    sweep: Sweep,
    *,
    max_trials: int | None = None,
    progress: bool | None = None,
    log_file: str | Path | None = None,
    stop_at: float | None = None,
) -> int:
    """Claim and train trials until the budget, the timeout, ``stop_at`` (a ``time.time()``)
    or ``max_trials`` is reached.

    Each trial is claimed under a study-wide lock that covers the budget check and the trial's
    creation, so concurrent workers never overshoot. Returns the number of trials this call
    ran. A failed trial costs one line on stderr (its traceback goes to the log file); after
    ``config.max_failures`` failures in a row the sweep stops with ``SweepFailedError``.
    """
    config, study = sweep.config, sweep.study
    keeper = ModelKeeper(sweep.backend, config.study, config.objective.keep_models, sweep.artifacts)
    lock = sweep.backend.lock(config.study)
    reference = study.user_attrs.get(REFERENCE_ATTR)
    objective = Objective(
        sweep.hypermodel, sweep.splits, config.objective, seed=config.seed, keeper=keeper,
        backend=sweep.backend, artifact_store=sweep.artifacts, on_start=lock.release,
        start_weights=functools.partial(linear_weights, reference=reference) if reference else None,
    )
    log_path = Path(log_file) if log_file is not None else default_log_path(config.storage)
    failures = _Failures(config.max_failures, log_path)
    guard = _FailureGuard(objective)
    deadlines = [time.monotonic() + config.timeout] if config.timeout is not None else []
    if stop_at is not None:
        deadlines.append(time.monotonic() + stop_at - time.time())
    deadline = min(deadlines, default=None)
    ran = db_errors = 0
    waiting_said = False
    # A trial turns stale only after the grace period (3 heartbeats), so reaping once a heartbeat
    # interval finds every stale trial in time, and spares claims that follow each other closely.
    reaped_at = -math.inf
    # Behind a storage proxy, which admits each new trial against the budget itself, a worker
    # whose last claim was admitted claims again without counting the study first: a count reads
    # every running trial back through the proxy. A refusal (BudgetTaken) turns counting back on.
    admitted = False
    with _trial_log(log_path, config.study), _ProgressBar(study, config.trials, progress) as bar:
        while max_trials is None or ran < max_trials:
            if sweep.stop_requested or (deadline is not None and time.monotonic() >= deadline):
                break
            try:
                lock.acquire()
                if time.monotonic() - reaped_at >= heartbeat_settings()[0]:
                    sweep.backend.reap(study)
                    reaped_at = time.monotonic()
                if admitted and not sweep.backend.claims_in_turn:
                    work = True
                else:
                    counts = sweep.backend.state_counts(config.study)
                    work = _work_in(counts, config.trials)
                    if work is None:
                        break
                    if work:
                        _resample_if_shared(sweep, counts)
                if work:
                    # No Optuna callbacks: they would cost a reload of the whole trial, and the guard
                    # already knows how it ended.
                    try:
                        study.optimize(guard, n_trials=1, catch=(TrainingDiverged, TrialFailed), gc_after_trial=False)
                    except BudgetTaken:  # a storage proxy saw other claims take the budget first
                        admitted = work = False
                        counts = sweep.backend.state_counts(config.study)
                        if _work_in(counts, config.trials) is None:
                            break
                    else:
                        admitted = True
                        bar.ended(study, guard.state)
                        failures.ended(guard.number, guard.state, guard.reason)
            except KeyboardInterrupt:
                # Stopped at once (a second Ctrl-C): the trial Optuna just failed is queued again.
                _requeue(study, objective.last_trial)
                raise
            except (*STORAGE_ERRORS, AssertionError, UnboundLocalError) as exc:
                # A dropped connection fails at most this trial, whose parameters are queued
                # again; the pool reconnects on the next checkout (pool_pre_ping).
                cause = _database_failure(exc)
                if cause is None:
                    raise
                error = sweep.backend.failure(cause)
                db_errors += 1
                if db_errors > MAX_DB_ERRORS:
                    raise error from None
                print(f"gapsweep: database error {db_errors}/{MAX_DB_ERRORS}, continuing: {error}", file=sys.stderr)
                sweep.backend.recover()
                _requeue(study, objective.last_trial)
                continue
            finally:
                lock.release()
            if not work:
                # Other workers' trials are still running; if one of them died, its trial turns
                # stale and is queued again, so wait instead of leaving it behind.
                if not waiting_said and sweep.job is None:
                    waiting_said = True
                    tqdm.write(
                        f"gapsweep: the budget is taken; waiting for {counts['RUNNING']} running trial(s) to finish "
                        f"(a trial whose worker died is retried after {heartbeat_settings()[1]} s without a heartbeat)",
                        file=sys.stderr,
                    )
                time.sleep(min(IDLE_POLL_S, heartbeat_settings()[0]))
                continue
            ran += 1
            db_errors = 0
            if failures.exhausted:
                raise SweepFailedError(failures.verdict(ran))
    with contextlib.suppress(*STORAGE_ERRORS):  # tidying only: the next worker's offers or trim do it
        keeper.trim()
    return ran


class TrialFailed(RuntimeError):
    """A trial raised an error that is neither a user mistake nor a database failure (a Keras
    error for some parameters, memory): that trial fails with its reason and the sweep goes on."""


class _FailureGuard:
    """The objective, with any trial error other than pruning, divergence, a user mistake or a
    database failure turned into ``TrialFailed`` with its reason recorded as ``fail_reason``.

    It also notes how the last trial ended (``number``, ``state``, ``reason``), as Optuna will
    record it: a pruned trial is PRUNED, a raised one FAIL, a returned NaN FAIL (Optuna refuses
    it), any other returned value COMPLETE.
    """

    def __init__(self, objective: Callable[[optuna.Trial], Any]) -> None:
        self.objective = objective
        self.number = -1
        self.state = TrialState.FAIL
        self.reason: str | None = None

    def __call__(self, trial: optuna.Trial) -> Any:
        self.number, self.state, self.reason = trial.number, TrialState.FAIL, None
        try:
            value = self.objective(trial)
        except optuna.TrialPruned:
            self.state = TrialState.PRUNED
            raise
        except TrainingDiverged as exc:
            self.reason = str(exc)
            raise
        except (GapsweepError, *STORAGE_ERRORS):
            raise
        except Exception as exc:
            self.reason = one_line(exc)
            trial.set_user_attr(trial_keys.FAIL_REASON, self.reason)
            raise TrialFailed(self.reason) from exc
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(math.isnan(float(v)) for v in values):
            self.reason = "the objective returned NaN"
        else:
            self.state = TrialState.COMPLETE
        return value


class _Failures:
    """One stderr line per failed trial, and a count of failures in a row."""

    def __init__(self, limit: int, log_path: Path) -> None:
        self.limit = limit
        self.log_path = log_path
        self.in_a_row: list[str] = []
        self.succeeded = False

    def ended(self, number: int, state: TrialState, reason: str | None) -> None:
        """Count trial ``number``, which ended in ``state`` (``reason``: why it failed, if known)."""
        if state in COUNTED:
            self.in_a_row.clear()
            self.succeeded = True
        elif state == TrialState.FAIL:
            reason = reason or f"see {self.log_path}"
            self.in_a_row.append(reason)
            tqdm.write(f"gapsweep: trial {number} failed: {reason}", file=sys.stderr)

    @property
    def exhausted(self) -> bool:
        return len(self.in_a_row) >= self.limit

    def verdict(self, ran: int) -> str:
        """One line: how many failed, their most common reason, and where the tracebacks are."""
        kinds = collections.Counter(_reason_kind(reason) for reason in self.in_a_row)
        kind, count = kinds.most_common(1)[0]
        example = next(reason for reason in reversed(self.in_a_row) if _reason_kind(reason) == kind)
        head = (
            f"every trial failed ({len(self.in_a_row)} of {ran})" if not self.succeeded and ran == len(self.in_a_row)
            else f"the last {len(self.in_a_row)} trials failed in a row"
        )
        share = "" if count == len(self.in_a_row) else f" ({count} of them)"
        return f"{head}, so the sweep stopped: {example}{share}; tracebacks in {self.log_path} (raise max_failures to go on longer)"


def _reason_kind(reason: str) -> str:
    """A failure reason without its numbers, so the same failure at other epochs reads as one."""
    return re.sub(r"[-+]?(\d[\d.]*(e[-+]?\d+)?|nan|inf)", "#", reason)


def default_log_path(storage: str | None) -> Path:
    """Where a sweep's Optuna log goes: beside a SQLite database (``sweeps.db`` →
    ``sweeps.log``) or a journal (``sweeps.log`` → ``sweeps.log.errors``), else ``gapsweep.log``
    in the working folder."""
    journal = journal_path(storage)
    if journal is not None:
        return Path(f"{journal}.errors")
    if proxy_address(storage) is not None:
        return Path("gapsweep.log")
    path = sqlite_path(parse(storage))
    return path.with_suffix(".log") if path is not None else Path("gapsweep.log")


def check_log_file(log_file: str | Path | None) -> None:
    """Refuse a log file that cannot be written before anything runs: it is opened on the first
    failed trial, where a missing folder would end the sweep in a traceback."""
    if log_file is None:
        return
    path = Path(log_file)
    if path.is_dir():
        raise ConfigError(f"--log-file {path} is a folder; name a file in it, e.g. {path / 'gapsweep.log'}")
    if not path.parent.is_dir():
        raise ConfigError(f"--log-file {path}: the folder {path.parent} does not exist; create it or choose another path")


@contextlib.contextmanager
def _trial_log(path: Path, study: str) -> Iterator[None]:
    """Send Optuna's warnings (a traceback per failed trial) to ``path`` instead of the console.
    The file is opened on the first record, so a sweep that logs nothing writes no file. Optuna's
    per-trial "finished" lines stay off: the database holds the same, and composing each one
    costs Optuna a best-trial query."""
    logger = logging.getLogger("optuna")
    handler = logging.FileHandler(path, delay=True, encoding="utf-8")
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{study}] %(message)s"))
    optuna.logging.disable_default_handler()
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)
        optuna.logging.enable_default_handler()


def _resample_if_shared(sweep: Sweep, counts: dict[str, int]) -> None:
    """Seed the sampler anew when another process added trials since this one last claimed.

    Two ``launch`` processes on one study start from the same seed; without this both would
    draw the same parameters. Claims happen under the study lock, so the study's size at a claim
    is unique to that claim, and a seed derived from it is too. A lone process never reseeds,
    so its draws stay those of its seed. Behind a storage proxy claims interleave, so two jobs
    may see the same size: each mixes in its own identity then, as other workers do.
    """
    total = sum(counts.values())
    if sweep.job is not None and sweep.backend.claims_in_turn:
        # Jobs of one launch: the draw depends on where the claim falls in the study, not on
        # which job makes it, so the same seed gives the same trials however the jobs interleave.
        sweep.study.sampler = _sampler(sweep.config, n_existing=total, salt="jobs")
    elif total != sweep.trials_seen:
        sweep.study.sampler = _sampler(sweep.config, n_existing=total, salt=sweep.salt)
    sweep.trials_seen = total + (0 if counts["WAITING"] else 1)


def _database_failure(exc: BaseException) -> BaseException | None:
    """The database error behind ``exc``, or None where it is not one.

    When the write of a trial's result fails, Optuna (5.1) reads the trial back, finds it still
    running and raises ``AssertionError("Should not reach.")`` over the database error; when that
    read fails too (a proxy that is away), an ``UnboundLocalError`` of its own. Both are database
    failures.
    """
    if isinstance(exc, (AssertionError, UnboundLocalError)):
        context = exc.__context__
        if not isinstance(context, STORAGE_ERRORS):
            return None
        exc = context
    return exc.__cause__ or exc


def _requeue(study: optuna.Study, number: int | None) -> None:
    """Queue the parameters of a trial that a database error or an interrupt failed, so none is lost.

    A trial left RUNNING (its final write never arrived) needs nothing: its heartbeat goes
    stale and Optuna's retry callback queues it.
    """
    if number is None:
        return
    try:
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
        # Diverged trials keep their verdict; one that failed before sampling lost nothing.
        reason = str(trial.user_attrs.get(trial_keys.FAIL_REASON, "")) if trial is not None else ""
        verdict = bool(reason) and not reason.startswith(trial_keys.INTERRUPTED)
        if trial is None or trial.state != TrialState.FAIL or verdict or not trial.params:
            return
        study.enqueue_trial(trial.params, user_attrs={trial_keys.REQUEUED_FROM: number})
    except STORAGE_ERRORS:
        pass  # still unreachable: the next claim reports it


def has_work(sweep: Sweep) -> bool | None:
    """True: claim a trial now. False: nothing to claim, but other workers' trials are still
    running and may come back if their worker died. None: the study is done.

    A queued (retried or enqueued) trial is always run; a new one only within the budget.
    Counted in SQL: loading every trial (with its curves) before each claim would grow with
    the study.
    """
    return _work_in(sweep.backend.state_counts(sweep.config.study), sweep.config.trials)


def _work_in(counts: dict[str, int], budget: int) -> bool | None:
    if counts["WAITING"] or room_for_new(counts, budget):
        return True
    return False if counts["RUNNING"] else None


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def _sampler(config: SweepConfig, n_existing: int, salt: str | None = None) -> optuna.samplers.BaseSampler:
    """A seeded sampler. A resumed study gets a seed derived from its size so it draws anew;
    a worker mixes in its own identity (``salt``), so workers that start together on the same
    study do not draw the same parameters. TPE's constant liar steers concurrent workers apart;
    it reads ``max_gap`` from the constraint each trial records."""
    seed = config.seed if n_existing == 0 and salt is None else _derive_seed(config.seed, f"{n_existing}:{salt}")
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with quiet_experimental():
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _derive_seed(seed: int, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{salt}".encode()).digest()[:4], "big")


def _check_baseline(baseline: dict[str, Any], hypermodel: Hypermodel) -> None:
    space = getattr(hypermodel, "space", None)
    unknown = sorted(set(baseline) - set(space.params)) if space is not None else []
    if unknown:
        raise ConfigError(f"baseline names parameter(s) {', '.join(unknown)} that the search space does not have")
    for name, value in baseline.items():
        # A fixed value is no Optuna parameter, so the enqueued baseline would quietly train with the space's.
        dist = space.params.get(name) if space is not None else None
        if isinstance(dist, Fixed) and not dist.allows(value):
            raise ConfigError(
                f"baseline sets {name} = {value!r}, but the search space fixes it at {dist.value!r}; "
                "drop it from the baseline or make it a range or choice in the space"
            )


def _same_code(key: str, previous: dict[str, Any], stored: dict[str, Any], config: SweepConfig) -> bool:
    """An older study's absolute hypermodel path and today's relative one name the same file:
    not a change (the study then stores the relative one)."""
    return key == "hypermodel" and all(isinstance(d.get(key), str) for d in (previous, stored)) and code_refs.same_file(
        previous[key], stored[key], config.code_dir
    )


def load_hypermodel(config: SweepConfig, splits: Splits) -> Hypermodel:
    """The hypermodel ``config`` names: a KerasTuner build function or HyperModel (a file found
    inside the project folder), checked by one build evaluated on a few rows of ``splits``, or
    else its search space sampled into the built-in builder (checked against the data's shape)."""
    if config.hypermodel is None:
        space_hypermodel = SpaceHypermodel(load_space(config.space))
        space_hypermodel.check(splits.task)
        return space_hypermodel
    init_tensorflow()  # the check builds a model, and TensorFlow's thread settings must come first
    hypermodel = keras_tuner.load(config.code() or config.hypermodel, max_epochs=config.max_epochs)
    hypermodel.check(splits.x_train[:_CHECK_ROWS], splits.y_train[:_CHECK_ROWS], splits.task)
    return hypermodel


class _ProgressBar:
    """A tqdm bar over the study's budget with best score and state counts.

    tqdm's ``disable=None`` turns the bar off when stderr is not a terminal (CI logs, pipes).
    """

    def __init__(self, study: optuna.Study, budget: int, enabled: bool | None) -> None:
        self.counts = {state: 0 for state in (*COUNTED, TrialState.FAIL)}
        self.bar = tqdm(
            total=budget, initial=min(counted(study), budget), desc="trials", unit="trial",
            disable=None if enabled is None else not enabled,
        )

    def ended(self, study: optuna.Study, state: TrialState) -> None:
        """One trial of this process ended in ``state``."""
        if self.bar.disable:
            return  # no terminal: skip the best-value query the postfix would cost every trial
        if state in self.counts:
            self.counts[state] += 1
        self._postfix(study, {"pruned": self.counts[TrialState.PRUNED], "failed": self.counts[TrialState.FAIL]})
        if state in COUNTED:
            self.bar.update(1)
        else:
            self.bar.refresh()

    def show(self, study: optuna.Study, counts: dict[str, int], *, since: dict[str, int]) -> None:
        """Other processes' trials, from the study's state counts; pruned and failed since ``since``."""
        if self.bar.disable:
            return
        self._postfix(study, {
            "running": counts["RUNNING"],
            "pruned": counts["PRUNED"] - since["PRUNED"],
            "failed": counts["FAIL"] - since["FAIL"],
        })
        self.bar.n = min(sum(counts[state.name] for state in COUNTED), self.bar.total)
        self.bar.refresh()

    def _postfix(self, study: optuna.Study, postfix: dict[str, Any]) -> None:
        if len(study.directions) > 1:
            postfix["front"] = len(study.best_trials)
        elif (best := _best_value(study)) is not None:
            postfix["best"] = f"{best:.4f}"
        self.bar.set_postfix(postfix, refresh=False)

    def __enter__(self) -> "_ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _best_value(study: optuna.Study) -> float | None:
    try:
        value = study.best_value
    except ValueError:
        return None
    return value if math.isfinite(value) else None
