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

import hashlib
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from gapsweep.errors import ConfigError
from gapsweep.search_spaces.hypermodel import Hypermodel, SpaceHypermodel
from gapsweep.search_spaces.loader import load_space
from gapsweep.storage import artifacts, queries
from gapsweep.storage.engine import describe_failure, heartbeat_settings
from gapsweep.storage.heartbeats import open_crash_safe_storage, quiet_experimental, reap
from gapsweep.storage.locks import StudyLock
from gapsweep.storage.studies import CONFIG_ATTR, REFERENCE_ATTR, create_or_load, stored_config
from gapsweep.sweeps.data import datasets
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.run.reference import fit_reference
from gapsweep.sweeps.data.datasets import Splits
from gapsweep.sweeps.trial.models import ModelKeeper
from gapsweep.sweeps.trial.objective import Objective
from gapsweep.sweeps.trial.pruning import make_pruner
from gapsweep.sweeps.trial.runtime import init_tensorflow
from gapsweep.sweeps.trial.trainer import TrainingDiverged

#: Training rows a KerasTuner hypermodel's first model is evaluated on before the study exists.
_CHECK_ROWS = 16

#: Consecutive database errors a worker rides out before it gives up.
MAX_DB_ERRORS = 5

#: Seconds an idle worker waits before it looks again for a retried trial (at most the
#: heartbeat interval): short, so the last trials of a study do not end with an idle tail.
IDLE_POLL_S = 1.0

#: Trials that use up the budget. A failed trial does not: its parameters may be retried.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class Sweep:
    """A validated configuration bound to its open study: what workers run trials against."""

    config: SweepConfig
    hypermodel: Hypermodel
    splits: Splits
    storage: optuna.storages.RDBStorage
    study: optuna.Study
    stop_requested: bool = False

    def close(self) -> None:
        """Give the connections back: many short-lived workers must not exhaust the server."""
        self.storage.engine.dispose()


def prepare(config: SweepConfig, *, salt: str | None = None) -> Sweep:
    """Validate ``config``, then create or resume its study. Nothing is written before the
    space and data have passed their checks."""
    splits = datasets.load(config.data)
    hypermodel = load_hypermodel(config, splits)
    if config.baseline is not None:
        _check_baseline(config.baseline, hypermodel)
    stored = {**config.to_dict(), **hypermodel.describe()}

    multi = config.objective.multi_objective
    directions = ["minimize", "minimize"] if multi else ["minimize"]
    storage = open_crash_safe_storage(config.storage)
    artifacts.ensure_schema(storage.engine)
    study = create_or_load(
        config.study,
        storage,
        sampler=optuna.samplers.RandomSampler(seed=0),  # replaced below once the study's size is known
        pruner=make_pruner("none" if multi else config.pruner, max_epochs=hypermodel.max_epochs),
        directions=directions,
    )
    previous = stored_config(study)
    keys = ("space", *hypermodel.describe())
    changed = [key for key in keys if previous is not None and previous.get(key) != stored.get(key)]
    if len(study.directions) != len(directions):
        storage.engine.dispose()
        kinds = {1: "single-objective", 2: "multi-objective (val loss, gap)"}
        raise ConfigError(
            f"study '{config.study}' is {kinds[len(study.directions)]}; launch it the same way or under a new --study name"
        )
    if changed:
        storage.engine.dispose()
        what = "hypermodel" if "hypermodel" in changed else "search space"
        raise ConfigError(
            f"study '{config.study}' was started with a different {what}; "
            f"resume it with the same {what} or launch under a new --study name"
        )
    if previous is None or previous != stored:
        study.set_user_attr(CONFIG_ATTR, stored)
    if REFERENCE_ATTR not in study.user_attrs:  # once per study: a resumed one keeps its reference
        reference = fit_reference(splits, cv=config.objective.cv, seed=config.seed)
        if reference is not None:
            study.set_user_attr(REFERENCE_ATTR, reference)
    n_existing = len(study.get_trials(deepcopy=False))
    study.sampler = _sampler(config, n_existing=n_existing, salt=salt)
    if config.baseline is not None and n_existing == 0:
        # The user's current configuration runs first, so every summary can compare against it.
        study.enqueue_trial(config.baseline, user_attrs={"baseline": True})
    return Sweep(config, hypermodel, splits, storage, study)


def launch(config: SweepConfig, *, progress: bool | None = None) -> optuna.Study:
    """Run ``config`` until the study holds ``config.trials`` complete or pruned trials.

    The budget is the study's, not this call's: launching the same study again continues to
    the same total, and a larger ``trials`` extends it. ``progress=None`` shows a bar only on a
    terminal.
    """
    sweep = prepare(config)
    try:
        run_trials(sweep, progress=progress)
    finally:
        sweep.close()
    return sweep.study


def run_trials(sweep: Sweep, *, max_trials: int | None = None, progress: bool | None = None) -> int:
    """Claim and train trials until the budget, the timeout or ``max_trials`` is reached.

    Each trial is claimed under a study-wide lock that covers the budget check and the trial's
    creation, so concurrent workers never overshoot. Returns the number of trials this call
    ran.
    """
    config, study = sweep.config, sweep.study
    keeper = ModelKeeper(sweep.storage.engine, config.study, config.objective.keep_models)
    lock = StudyLock(sweep.storage.engine, config.study)
    objective = Objective(
        sweep.hypermodel, sweep.splits, config.objective, seed=config.seed, keeper=keeper,
        checkpoint_engine=sweep.storage.engine, on_start=lock.release,
    )
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    ran = db_errors = 0
    with _ProgressBar(study, config.trials, progress) as bar:
        while max_trials is None or ran < max_trials:
            if sweep.stop_requested or (deadline is not None and time.monotonic() >= deadline):
                break
            try:
                lock.acquire()
                reap(study, sweep.storage.engine)
                work = has_work(sweep)
                if work is None:
                    break
                if work:
                    study.optimize(objective, n_trials=1, catch=(TrainingDiverged,), callbacks=[bar], gc_after_trial=False)
            except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
                # A dropped connection fails at most this trial, whose parameters are queued
                # again; the pool reconnects on the next checkout (pool_pre_ping).
                error = describe_failure(sweep.storage.engine.url, exc.__cause__ or exc)
                db_errors += 1
                if db_errors > MAX_DB_ERRORS:
                    raise error from None
                print(f"gapsweep: database error {db_errors}/{MAX_DB_ERRORS}, continuing: {error}", file=sys.stderr)
                time.sleep(1.0)
                _requeue(study, objective.last_trial)
                continue
            finally:
                lock.release()
            if not work:
                # Other workers' trials are still running; if one of them died, its trial turns
                # stale and is queued again, so wait instead of leaving it behind.
                time.sleep(min(IDLE_POLL_S, heartbeat_settings()[0]))
                continue
            ran += 1
            db_errors = 0
    return ran


def _requeue(study: optuna.Study, number: int | None) -> None:
    """Queue the parameters of a trial that a database error failed, so none is lost.

    A trial left RUNNING (its final write never arrived) needs nothing: its heartbeat goes
    stale and Optuna's retry callback queues it.
    """
    if number is None:
        return
    try:
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
        # Diverged trials keep their verdict; one that failed before sampling lost nothing.
        if trial is None or trial.state != TrialState.FAIL or "fail_reason" in trial.user_attrs or not trial.params:
            return
        study.enqueue_trial(trial.params, user_attrs={"requeued_from": number})
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError):
        pass  # still unreachable: the next claim reports it


def has_work(sweep: Sweep) -> bool | None:
    """True: claim a trial now. False: nothing to claim, but other workers' trials are still
    running and may come back if their worker died. None: the study is done.

    A queued (retried or enqueued) trial is always run; a new one only within the budget.
    Counted in SQL: loading every trial (with its curves) before each claim would grow with
    the study.
    """
    counts = queries.state_counts(sweep.storage.engine, sweep.config.study)
    if counts["WAITING"] or sum(counts[state.name] for state in COUNTED) + counts["RUNNING"] < sweep.config.trials:
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


def load_hypermodel(config: SweepConfig, splits: Splits) -> Hypermodel:
    """The hypermodel ``config`` names: a KerasTuner build function or HyperModel, checked by one
    build evaluated on a few rows of ``splits``, or else its search space sampled into the MLP
    builder."""
    if config.hypermodel is None:
        return SpaceHypermodel(load_space(config.space))
    from gapsweep.search_spaces import keras_tuner

    init_tensorflow()  # the check builds a model, and TensorFlow's thread settings must come first
    hypermodel = keras_tuner.load(config.hypermodel, max_epochs=config.max_epochs)
    hypermodel.check(splits.x_train[:_CHECK_ROWS], splits.y_train[:_CHECK_ROWS])
    return hypermodel


class _ProgressBar:
    """An Optuna callback: a tqdm bar over the study's budget with best score and state counts.

    tqdm's ``disable=None`` turns the bar off when stderr is not a terminal (CI logs, pipes).
    """

    def __init__(self, study: optuna.Study, budget: int, enabled: bool | None) -> None:
        self.counts = {state: 0 for state in (*COUNTED, TrialState.FAIL)}
        self.bar = tqdm(
            total=budget, initial=min(counted(study), budget), desc="trials", unit="trial",
            disable=None if enabled is None else not enabled,
        )

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.bar.disable:
            return  # no terminal: skip the best-value query the postfix would cost every trial
        if trial.state in self.counts:
            self.counts[trial.state] += 1
        postfix: dict[str, Any] = {
            "pruned": self.counts[TrialState.PRUNED],
            "failed": self.counts[TrialState.FAIL],
        }
        if len(study.directions) > 1:
            postfix["front"] = len(study.best_trials)
        elif (best := _best_value(study)) is not None:
            postfix["best"] = f"{best:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        if trial.state in COUNTED:
            self.bar.update(1)
        else:
            self.bar.refresh()

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
