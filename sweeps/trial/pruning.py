"""Pruners by name, and the Keras callback that reports every epoch to one.

The callback reports the epoch's gap-penalized score, so a trial is cut when it is hopeless (its
val loss trails the others) *or* when it starts to overfit (its gap grows the score).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from gapsweep.errors import ConfigError

PRUNERS = ("median", "hyperband", "sha", "none")


def make_pruner(name: str, *, max_epochs: int, warmup_epochs: int = 2) -> optuna.pruners.BasePruner:
    """An Optuna pruner for ``name``; epochs are the resource Hyperband and SHA allocate."""
    if name == "median":
        return CompletedSnapshot(optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup_epochs))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=warmup_epochs, max_resource=max(max_epochs, warmup_epochs + 1), reduction_factor=3
        )
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup_epochs, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner '{name}'; use one of {', '.join(PRUNERS)}")


#: How late a trial that another worker completes joins the comparisons of a running trial.
SNAPSHOT_MAX_AGE_S = 10.0


class CompletedSnapshot(optuna.pruners.BasePruner):
    """Runs a pruner that compares against the study's completed trials (median, percentile)
    on a copy of them read once per trial, and again only after ``SNAPSHOT_MAX_AGE_S``.

    Optuna's percentile pruners ask the storage for the completed trials at every
    ``should_prune``; on a database that reads the running trials back with all their rows, a
    few ms an epoch, as long as a small model's whole epoch. The completed trials change only
    when a trial ends: never within a trial of a lone process, and with several workers the
    snapshot misses those that ended in the last few seconds, as if they had ended a little later.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner) -> None:
        self.pruner = pruner
        self._for: tuple[str, int] | None = None
        self._read_at = -math.inf
        self._completed: list[FrozenTrial] = []

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        now = time.monotonic()
        if self._for != (study.study_name, trial.number) or now - self._read_at >= SNAPSHOT_MAX_AGE_S:
            self._completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._for, self._read_at = (study.study_name, trial.number), now
        return bool(self.pruner.prune(_CompletedView(study, self._completed), trial))


class _CompletedView:
    """The study as a pruner sees it, with its completed trials taken from a snapshot."""

    def __init__(self, study: optuna.Study, completed: list[FrozenTrial]) -> None:
        self._study = study
        self._completed = completed

    def get_trials(self, deepcopy: bool = True, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        if states is not None and tuple(states) == (TrialState.COMPLETE,):
            return list(self._completed)
        return self._study.get_trials(deepcopy=deepcopy, states=states)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


def pruning_callback(trial: optuna.Trial, monitor: str = "score") -> Any:
    """A Keras callback that reports ``logs[monitor]`` each epoch and raises ``TrialPruned``.

    Built on demand because it subclasses ``keras.callbacks.Callback`` (TensorFlow is imported
    only by code that trains).
    """
    import keras

    class PruningCallback(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            value = (logs or {}).get(monitor)
            if value is None:
                raise KeyError(f"pruning monitor '{monitor}' is not in the epoch logs: {sorted(logs or {})}")
            with warnings.catch_warnings():
                # A retry that restarts without a checkpoint reports epochs its dead trial already
                # reported (Optuna's retry copies them over); the pruner keeps those, which is fine.
                warnings.filterwarnings("ignore", message="The reported value is ignored because this")
                trial.report(float(value), step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch} with {monitor} {value:.4f}")

    return PruningCallback()
