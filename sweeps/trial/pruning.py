"""Pruners by name, and the Keras callback that reports every epoch to one.

The callback reports the epoch's gap-penalized score, so a trial is cut when it is hopeless (its
val loss trails the others) *or* when it starts to overfit (its gap grows the score).
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from gapsweep.errors import ConfigError

PRUNERS = ("median", "hyperband", "sha", "none")


def make_pruner(name: str, *, max_epochs: int, warmup_epochs: int = 2) -> optuna.pruners.BasePruner:
    """An Optuna pruner for ``name``; epochs are the resource Hyperband and SHA allocate."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=warmup_epochs, max_resource=max(max_epochs, warmup_epochs + 1), reduction_factor=3
        )
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup_epochs, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner '{name}'; use one of {', '.join(PRUNERS)}")


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
