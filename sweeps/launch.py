"""Run a sweep: validate everything, then open the study and train trials into it.

Order matters for "bad input loses nothing": the space, the builder's parameter names and the
data are all checked before the database is touched, so a mistake never leaves a half-made
study behind.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from gapsweep.errors import ConfigError
from search_spaces.builder import DEFAULTS, check_params
from search_spaces.loader import load_space
from search_spaces.space import Categorical, Fixed, Float, Int, SearchSpace
from storage.engine import open_storage
from storage.studies import CONFIG_ATTR, create_or_load, stored_config
from sweeps import data as datasets
from sweeps.config import SweepConfig
from sweeps.models import ModelKeeper
from sweeps.objective import Objective
from sweeps.pruning import make_pruner
from sweeps.trainer import TrainingDiverged

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def launch(config: SweepConfig, *, progress: bool | None = None) -> optuna.Study:
    """Run ``config`` until the study holds ``config.trials`` finished trials (or time is up).

    The budget is the study's, not this call's: launching the same study again continues to
    the same total, and a larger ``trials`` extends it. ``progress=None`` shows a bar only on a
    terminal.
    """
    space = load_space(config.space)
    check_params(set(space.params))
    splits = datasets.load(config.data)
    stored = {**config.to_dict(), "space": space.to_dict()}

    storage = open_storage(config.storage)
    study = create_or_load(
        config.study,
        storage,
        sampler=optuna.samplers.RandomSampler(seed=0),  # replaced below once the study's size is known
        pruner=make_pruner(config.pruner, max_epochs=_max_epochs(space)),
    )
    previous = stored_config(study)
    if previous is not None and previous.get("space") != stored["space"]:
        raise ConfigError(
            f"study '{config.study}' was started with a different search space; "
            "resume it with the same space or launch under a new --study name"
        )
    if previous is None:
        study.set_user_attr(CONFIG_ATTR, stored)
    study.sampler = _sampler(config, n_existing=len(study.get_trials(deepcopy=False)))

    remaining = config.trials - _count(study, FINISHED)
    if remaining <= 0:
        return study
    keeper = ModelKeeper(storage.engine, config.study, config.objective.keep_models)
    objective = Objective(space, splits, config.objective, seed=config.seed, keeper=keeper)
    with _progress_bar(remaining, progress) as bar:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=config.timeout,
            catch=(TrainingDiverged,),
            callbacks=[optuna.study.MaxTrialsCallback(config.trials, states=FINISHED), bar],
            gc_after_trial=False,
        )
    return study


def _sampler(config: SweepConfig, n_existing: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler; a resumed study gets a seed derived from its size so it draws anew."""
    seed = config.seed if n_existing == 0 else _derive_seed(config.seed, n_existing)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _derive_seed(seed: int, salt: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{salt}".encode()).digest()[:4], "big")


def _max_epochs(space: SearchSpace) -> int:
    """The most epochs any trial may train: the resource Hyperband divides."""
    dist = space.params.get("epochs")
    if isinstance(dist, (Int, Float)):
        return int(dist.high)
    if isinstance(dist, Categorical):
        return int(max(float(choice) for choice in dist.choices))
    if isinstance(dist, Fixed):
        return int(dist.value)
    return int(DEFAULTS["epochs"])


def _count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


class _ProgressBar:
    """An Optuna callback that advances a tqdm bar and shows the best score and state counts."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar
        self.counts = {state: 0 for state in FINISHED}

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state in self.counts:
            self.counts[trial.state] += 1
        postfix: dict[str, Any] = {
            "pruned": self.counts[TrialState.PRUNED],
            "failed": self.counts[TrialState.FAIL],
        }
        best = _best_value(study)
        if best is not None:
            postfix["best"] = f"{best:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

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


def _progress_bar(total: int, enabled: bool | None) -> _ProgressBar:
    # tqdm's disable=None turns the bar off when stderr is not a terminal (CI logs, pipes).
    return _ProgressBar(tqdm(total=total, desc="trials", unit="trial", disable=None if enabled is None else not enabled))

