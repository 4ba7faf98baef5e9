"""Train one configuration: Keras fit with the honest train loss, early stopping and pruning.

Per epoch, ``GapMonitor`` evaluates the *training* data in inference mode with the pure loss
metric (no dropout noise, no L2 term), reads the pure val loss, and writes the gap-penalized
``score`` into the epoch logs. Keras' ``EarlyStopping`` watches that score and restores the best
epoch's weights; the pruning callback reports it to Optuna. The curves are kept whole, also for a
trial that is pruned or diverges, so they can be stored and re-ranked later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import optuna

from gapsweep.errors import ConfigError
from gapsweep.search_spaces.builder import build_model, resolve
from gapsweep.search_spaces.hypermodel import FitSettings
from gapsweep.sweeps.trial.checkpoints import CheckpointStore, TrainingState
from gapsweep.sweeps.data.datasets import Splits
from gapsweep.sweeps.trial.models import model_from_bytes, model_to_bytes
from gapsweep.sweeps.trial.pruning import pruning_callback
from gapsweep.sweeps.trial.runtime import fresh_session
from gapsweep.sweeps.trial.score import Score, best_score, gap_score

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

_EVAL_BATCH = 1024


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or exploded; the trial fails with this reason and the
    sweep goes on."""


#: A loss this many times that of predicting a constant has exploded: 1e6 × log K for a
#: classifier, 1e6 × the target's variance for a regressor. Far above any loss a model that
#: learns anything reaches, far below the 1e18 a runaway learning rate gives.
EXPLOSION_FACTOR = 1e6


def explosion_limit(splits: Splits) -> float:
    """The loss above which a trial counts as diverged: ``EXPLOSION_FACTOR`` times the loss of a
    constant prediction (at least 1, so a near-constant target does not make it tiny)."""
    if splits.task.task == "classification":
        reference = math.log(max(splits.task.n_classes, 2))
    else:
        reference = float(np.mean(np.var(splits.y_train, axis=0))) if len(splits.y_train) else 1.0
    return EXPLOSION_FACTOR * max(reference, 1.0)


@dataclass
class Curves:
    """Per-epoch pure losses: train measured in inference mode, val as Keras reports it."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[float]]:
        out = {"train_loss": self.train_loss, "val_loss": self.val_loss}
        if self.val_accuracy:
            out["val_accuracy"] = self.val_accuracy
        return out


def mean_curves(folds: list[Curves]) -> Curves:
    """The folds' mean curves over the epochs every fold ran."""
    length = min(len(curves.val_loss) for curves in folds)

    def mean(name: str) -> list[float]:
        rows = [getattr(curves, name)[:length] for curves in folds]
        return [float(v) for v in np.mean(rows, axis=0)] if rows and all(len(r) == length for r in rows) and length else []

    return Curves(train_loss=mean("train_loss"), val_loss=mean("val_loss"), val_accuracy=mean("val_accuracy"))


@dataclass
class TrainResult:
    model: "keras.Model"
    curves: Curves
    score: Score


def _shuffled_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> "tf.data.Dataset":
    """Training rows reshuffled every epoch from ``seed``: a tf.data pipeline is about twice as
    fast per epoch as feeding numpy arrays to ``fit``."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def _datasets(splits: Splits, batch_size: int, seed: int) -> tuple["tf.data.Dataset", ...]:
    import tensorflow as tf

    train = _shuffled_batches(splits.x_train, splits.y_train, batch_size, seed)
    train_eval = tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train)).batch(_EVAL_BATCH)
    val = tf.data.Dataset.from_tensor_slices((splits.x_val, splits.y_val)).batch(_EVAL_BATCH)
    return train, train_eval, val


def _gap_monitor(train_eval: "tf.data.Dataset", curves: Curves, penalty: float, limit: float) -> Any:
    import keras

    class GapMonitor(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs if logs is not None else {}
            train = float(self.model.evaluate(train_eval, verbose=0, return_dict=True)["pure_loss"])
            val = float(logs["val_pure_loss"])
            curves.train_loss.append(train)
            curves.val_loss.append(val)
            if "val_accuracy" in logs:
                curves.val_accuracy.append(float(logs["val_accuracy"]))
            if not (math.isfinite(train) and math.isfinite(val) and math.isfinite(float(logs.get("loss", 0.0)))):
                raise TrainingDiverged(
                    f"loss became non-finite at epoch {epoch} (train {train}, val {val}); "
                    "lower the learning rate or its upper bound"
                )
            if max(train, val) > limit:
                raise TrainingDiverged(
                    f"loss exploded at epoch {epoch} (train {train:.3g}, val {val:.3g}, above {limit:.3g}); "
                    "lower the learning rate or its upper bound"
                )
            logs["train_pure_loss"] = train
            logs["score"] = gap_score(train, val, penalty)

    return GapMonitor()


def _early_stopping(patience: int, resume: TrainingState | None) -> Any:
    """Keras' EarlyStopping on the score, restoring the best epoch; resumable from a checkpoint."""
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
            super().on_train_begin(logs)
            if resume is not None:
                self.best, self.best_epoch, self.wait = resume.best, resume.best_epoch, resume.wait
                self.best_weights = resume.best_weights or None

    return ResumableEarlyStopping(monitor="score", mode="min", patience=patience, restore_best_weights=True)


def _checkpointer(store: CheckpointStore, early_stopping: Any, curves: Curves) -> Any:
    """Saves the training state after an epoch when one is due (after early stopping has updated
    its own)."""
    import keras

    class Checkpointer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            if not store.due():
                return
            store.save(
                TrainingState(
                    epoch=epoch,
                    curves={key: list(values) for key, values in curves.to_dict().items()},
                    best=float(early_stopping.best),
                    best_epoch=int(early_stopping.best_epoch),
                    wait=int(early_stopping.wait),
                    model=model_to_bytes(self.model),
                    best_weights=list(early_stopping.best_weights or []),
                )
            )

    return Checkpointer()


def ensure_pure_loss(model: "keras.Model") -> None:
    """Give a user-compiled model the ``pure_loss`` metric: its own loss without the L2 term.

    The MLP builder compiles with it already; another model (a KerasTuner hypermodel's) is
    recompiled with its own optimizer, loss and metrics plus this one, before any training.
    """
    import keras

    compiled = getattr(model, "_compile_config", None)
    metrics = list((compiled.config.get("metrics") if compiled is not None else None) or [])
    if any(getattr(metric, "name", metric) == "pure_loss" for metric in metrics):
        return
    if model.loss is None:
        raise ConfigError("the hypermodel's model has no loss: compile it with a loss in build(hp)")
    loss = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
    pure = keras.metrics.MeanMetricWrapper(fn=loss, name="pure_loss")
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=[pure, *metrics])


def train(
    model: "keras.Model",
    fit: FitSettings,
    splits: Splits,
    *,
    penalty: float,
    patience: int,
    seed: int,
    trial: optuna.Trial | None = None,
    curves: Curves | None = None,
    checkpoints: CheckpointStore | None = None,
) -> TrainResult:
    """Fit ``model`` as ``fit`` says; prune through ``trial`` when one is given.

    ``curves`` is filled in place, so a caller still holds them when pruning or divergence
    interrupts ``fit`` with an exception. With ``checkpoints``, the training state is saved
    whenever a checkpoint is due (``gapsweep.sweeps.trial.checkpoints``), and training resumes from the latest
    saved state if there is one (the checkpointed model then replaces ``model``).
    """
    resume = checkpoints.latest() if checkpoints is not None else None
    curves = curves if curves is not None else Curves()
    if resume is not None:
        model = model_from_bytes(resume.model)
        curves.train_loss[:], curves.val_loss[:] = resume.curves["train_loss"], resume.curves["val_loss"]
        curves.val_accuracy[:] = resume.curves.get("val_accuracy", [])
    ensure_pure_loss(model)
    train_ds, train_eval, val_ds = _datasets(splits, fit.batch_size, seed)
    early_stopping = _early_stopping(patience, resume)
    callbacks: list[Any] = [_gap_monitor(train_eval, curves, penalty, explosion_limit(splits)), early_stopping]
    if trial is not None:
        callbacks.append(pruning_callback(trial, monitor="score"))
    if checkpoints is not None:
        callbacks.append(_checkpointer(checkpoints, early_stopping, curves))
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=fit.epochs,
        initial_epoch=0 if resume is None else resume.epoch + 1,
        callbacks=callbacks,
        verbose=0,
        shuffle=False,
        **fit.extra,
    )
    return TrainResult(model=model, curves=curves, score=best_score(curves.train_loss, curves.val_loss, penalty))


def fit_epochs(
    model: "keras.Model", fit: FitSettings, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int
) -> "keras.Model":
    """Fit ``model`` on ``(x, y)`` for exactly ``epochs`` epochs, with no validation data and no
    early stopping: the refit on train + val rows, where no rows remain to stop on."""
    history = model.fit(
        _shuffled_batches(x, y, fit.batch_size, seed), epochs=epochs, verbose=0, shuffle=False, **fit.extra
    )
    losses = history.history.get("loss", [])
    if losses and not math.isfinite(float(losses[-1])):
        raise TrainingDiverged(f"loss became non-finite while fitting {epochs} epochs on {len(x)} rows")
    return model


def train_params(params: Mapping[str, Any], splits: Splits, *, seed: int, **kwargs: Any) -> TrainResult:
    """Build the MLP ``params`` describe (missing values take the builder's defaults) and train it
    from a fresh, seeded session: one configuration retrained outside a sweep."""
    fresh_session(seed)
    values = resolve(params)
    model = build_model(values, splits.task)
    return train(model, FitSettings(int(values["epochs"]), int(values["batch_size"])), splits, seed=seed, **kwargs)
