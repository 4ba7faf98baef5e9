"""Train one configuration: Keras fit with the honest train loss, early stopping and pruning.

Per epoch, ``GapMonitor`` runs one inference-mode prediction (no dropout noise) of the val rows
together with a fixed subsample of training rows (as many as the val rows, drawn once per trial
from its seed; all of them when the training set is no larger) and computes each row's pure loss
(the model's own loss without the L2 term). From that single pass come the epoch's val loss, its
standard error (the bound of the penalty), for classifiers its accuracy, and the honest train
loss with its standard error, an estimate of the loss over all training rows. Keras' own
validation pass is not run, and the training rows are not evaluated in full: either costs an
``evaluate`` call per epoch, large beside a small epoch. It writes the ``score``
(``gapsweep.sweeps.trial.score``) into the epoch logs. Keras' ``EarlyStopping`` watches that
score and restores the best epoch's weights; the pruning callback reports it to Optuna. The
curves are kept whole, also for a trial that is pruned or diverges, so they can be stored and
re-ranked later. After fit, one prediction with the restored weights gives the per-example val
losses the paired selection rule compares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import optuna

from gapsweep.search_spaces.builder import build_model, resolve
from gapsweep.search_spaces.hypermodel import FitSettings
from gapsweep.sweeps.trial.checkpoints import CheckpointStore, TrainingState
from gapsweep.sweeps.trial.inference import LossFunction, accuracy, predict
from gapsweep.sweeps.data.datasets import Splits
from gapsweep.sweeps.trial.models import model_from_bytes, model_to_bytes
from gapsweep.sweeps.trial.pruning import pruning_callback
from gapsweep.sweeps.trial.runtime import fresh_session
from gapsweep.sweeps.trial.score import Score, Scoring, as_scoring, best_score, evaluate

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


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
    """Per-epoch pure losses in inference mode: train on the training subsample, val on all val rows."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    #: Standard error of each epoch's val loss: sd(per-example loss) / √n.
    val_se: list[float] = field(default_factory=list)
    #: Standard error of each epoch's train loss, an estimate from the training subsample.
    train_se: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[float]]:
        out = {"train_loss": self.train_loss, "val_loss": self.val_loss}
        for name in ("val_accuracy", "val_se", "train_se"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        return out

    def restore(self, stored: Mapping[str, list[float]]) -> None:
        """Take the curves of a checkpoint (in place, so a caller's reference stays valid)."""
        for name in ("train_loss", "val_loss", "val_accuracy", "val_se", "train_se"):
            getattr(self, name)[:] = stored.get(name, [])


def mean_curves(folds: list[Curves]) -> Curves:
    """The folds' mean curves over the epochs every fold ran."""
    length = min(len(curves.val_loss) for curves in folds)

    def mean(name: str) -> list[float]:
        rows = [getattr(curves, name)[:length] for curves in folds]
        return [float(v) for v in np.mean(rows, axis=0)] if rows and all(len(r) == length for r in rows) and length else []

    return Curves(
        train_loss=mean("train_loss"), val_loss=mean("val_loss"), val_accuracy=mean("val_accuracy"),
        val_se=mean("val_se"), train_se=mean("train_se"),
    )


@dataclass
class TrainResult:
    model: "keras.Model"
    curves: Curves
    score: Score
    #: Pure loss of every val row at the restored epoch, in the val split's row order.
    val_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))


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


def train_subsample(n_train: int, n_val: int, seed: int) -> np.ndarray:
    """The training rows whose loss stands for the whole training set: ``n_val`` of them, drawn
    once from ``seed`` (in row order), or all of them when there are no more than ``n_val``.

    As many rows as the val split give the train loss about the val loss's precision, so the gap
    is no noisier than the val loss it is added to, at the cost of one val pass."""
    if n_train <= n_val:
        return np.arange(n_train)
    return np.sort(np.random.default_rng(seed).choice(n_train, size=n_val, replace=False))


def prior_predictions(y_train: np.ndarray, n: int, width: int, classification: bool, from_logits: bool) -> np.ndarray:
    """What a model that learned nothing predicts for ``n`` rows: the train-set class frequencies
    (as logits where the loss takes logits), or the train mean for regression."""
    y = np.asarray(y_train, dtype=np.float64)
    if not classification:
        return np.broadcast_to(y.reshape(len(y), -1).mean(axis=0), (n, width)).copy()
    if width > 1:
        freq = y.mean(axis=0) if y.ndim == 2 and y.shape[1] == width else np.bincount(y.astype(int).ravel(), minlength=width)[:width] / len(y)
        probs = np.clip(freq, 1e-7, 1.0)
        probs = probs / probs.sum()
        row = np.log(probs) if from_logits else probs
    else:
        p = float(np.clip(y.mean(), 1e-7, 1 - 1e-7))
        row = np.array([math.log(p / (1 - p)) if from_logits else p])
    return np.tile(row, (n, 1))


@dataclass
class PassLosses:
    """Per-example pure losses of some rows from one prediction, with a classifier's accuracy on
    them where it is wanted (the val rows)."""

    losses: np.ndarray
    accuracy: float | None

    @property
    def mean(self) -> float:
        return float(self.losses.mean()) if len(self.losses) else math.nan

    @property
    def se(self) -> float:
        """sd(per-example loss)/√n: the noise of this mean as an estimate of the mean over all
        rows like these."""
        n = len(self.losses)
        if n < 2 or not np.all(np.isfinite(self.losses)):  # a diverged epoch: no noise to speak of
            return math.nan
        return float(self.losses.std(ddof=1) / math.sqrt(n))


@dataclass
class EpochCheck:
    """One epoch's val rows and training subsample, from one prediction."""

    val: PassLosses
    train: PassLosses


class Validator:
    """Checks a model on the val rows and the training subsample in one prediction; knows the
    loss of the prior on the val rows."""

    def __init__(self, model: "keras.Model", splits: Splits, seed: int) -> None:
        self.loss = LossFunction(model)
        self.splits = splits
        self.rows = train_subsample(len(splits.x_train), len(splits.x_val), seed)
        self._x = np.concatenate([splits.x_val, splits.x_train[self.rows]])
        self._y_train = splits.y_train[self.rows]
        self._prior: float | None = None

    def __call__(self, model: "keras.Model") -> EpochCheck:
        predictions = predict(model, self._x)
        n_val = len(self.splits.x_val)
        val = predictions[:n_val]
        classification = self.splits.task.task == "classification"
        if self._prior is None and len(self.splits.y_train) and n_val:
            width = val.reshape(n_val, -1).shape[1]
            prior = prior_predictions(self.splits.y_train, n_val, width, classification, self.loss.from_logits)
            self._prior = float(self.loss(self.splits.y_val, prior.reshape(val.shape)).mean())
        share = accuracy(self.splits.y_val, val, self.loss.from_logits) if classification and n_val else None
        return EpochCheck(
            PassLosses(self.loss(self.splits.y_val, val), share),
            PassLosses(self.loss(self._y_train, predictions[n_val:]), None),
        )

    @property
    def prior_loss(self) -> float | None:
        """The prior's mean val loss (known after the first check)."""
        return self._prior


def _gap_monitor(validator: Validator, curves: Curves, scoring: Scoring, limit: float) -> Any:
    import keras

    class GapMonitor(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs if logs is not None else {}
            checked = validator(self.model)
            train, val = checked.train.mean, checked.val.mean
            curves.train_loss.append(train)
            curves.val_loss.append(val)
            curves.val_se.append(checked.val.se)
            curves.train_se.append(checked.train.se)
            if checked.val.accuracy is not None:
                curves.val_accuracy.append(checked.val.accuracy)
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
            logs["train_se"] = checked.train.se
            logs["val_pure_loss"] = val
            logs["val_se"] = checked.val.se
            if checked.val.accuracy is not None:
                logs["val_accuracy"] = checked.val.accuracy
            logs["score"] = evaluate(train, val, scoring, se=checked.val.se, prior_loss=validator.prior_loss).value

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


def start_from(model: "keras.Model", weights: Sequence[np.ndarray]) -> None:
    """Set the output layer of a depth-0 builder model to ``weights`` (kernel, bias): the linear
    start's warm start from the reference's fit."""
    layer = model.get_layer("output")
    if [w.shape for w in layer.get_weights()] != [w.shape for w in weights] or len(model.layers) > 3:
        raise ValueError(f"the linear start needs a depth-0 model; {model.name} has layers {[l.name for l in model.layers]}")
    layer.set_weights(list(weights))


def train(
    model: "keras.Model",
    fit: FitSettings,
    splits: Splits,
    *,
    scoring: Scoring | float,
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
        curves.restore(resume.curves)
    scoring = as_scoring(scoring)
    train_ds = _shuffled_batches(splits.x_train, splits.y_train, fit.batch_size, seed)
    validator = Validator(model, splits, seed)
    early_stopping = _early_stopping(patience, resume)
    callbacks: list[Any] = [_gap_monitor(validator, curves, scoring, explosion_limit(splits)), early_stopping]
    if trial is not None:
        callbacks.append(pruning_callback(trial, monitor="score"))
    if checkpoints is not None:
        callbacks.append(_checkpointer(checkpoints, early_stopping, curves))
    model.fit(
        train_ds,
        epochs=fit.epochs,
        initial_epoch=0 if resume is None else resume.epoch + 1,
        callbacks=callbacks,
        verbose=0,
        shuffle=False,
        **fit.extra,
    )
    restored = validator(model).val  # the restored epoch's per-example losses (one prediction)
    score = best_score(
        curves.train_loss, curves.val_loss, scoring, se_curve=curves.val_se, prior_loss=validator.prior_loss
    )
    return TrainResult(model=model, curves=curves, score=score, val_losses=restored.losses)


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
