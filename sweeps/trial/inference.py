"""Inference-mode predictions and the per-example pure loss: what a trial is judged by.

The pure loss is the model's own compiled loss without its L2 term, computed per row from
predictions in inference mode (no dropout). Computing it from predictions, rather than from a
compiled metric, needs nothing added to a user's model and no ``evaluate`` call: one prediction
serves the val loss, its standard error, the accuracy and, on the training subsample, the
honest train loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gapsweep.errors import ConfigError

if TYPE_CHECKING:
    import keras

#: Rows per predict step: a bounded batch keeps a large split from one huge tensor.
EVAL_BATCH = 1024


class LossFunction:
    """The model's own loss, per example and without the L2 term, computed from predictions."""

    def __init__(self, model: "keras.Model") -> None:
        import keras

        if model.loss is None or isinstance(model.loss, (dict, list, tuple)):
            raise ConfigError("the model needs one loss (not none, not one per output): compile it with loss=...")
        loss = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
        self._fn = loss.call if isinstance(loss, keras.losses.Loss) else loss
        config = loss.get_config() if hasattr(loss, "get_config") else {}
        self.from_logits = bool(config.get("from_logits", False))

    def __call__(self, y: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        import keras

        if predictions.ndim == y.ndim + 1 and predictions.shape[-1] == 1:
            y = y.reshape(*y.shape, 1)  # one output unit (binary_crossentropy, a 1-unit regressor): as fit pairs them
        values = keras.ops.convert_to_numpy(self._fn(keras.ops.convert_to_tensor(y), keras.ops.convert_to_tensor(predictions)))
        return np.asarray(values, dtype=np.float64).reshape(len(y), -1).mean(axis=1)


def predict(model: "keras.Model", x: np.ndarray) -> np.ndarray:
    """Inference-mode predictions, batch by batch through the compiled predict step.

    Every batch has ``EVAL_BATCH`` rows (the last is padded, its padding's predictions dropped),
    so the step is traced once per model whatever the number of rows: tracing costs more than
    predicting a thousand rows of a small model.
    """
    batches = []
    for start in range(0, len(x), EVAL_BATCH):
        rows = x[start : start + EVAL_BATCH]
        padding = np.zeros((EVAL_BATCH - len(rows), *rows.shape[1:]), dtype=rows.dtype)
        batches.append(np.asarray(model.predict_on_batch(np.concatenate([rows, padding])))[: len(rows)])
    return np.concatenate(batches)


def accuracy(y: np.ndarray, predictions: np.ndarray, from_logits: bool) -> float:
    """The share of rows whose most likely class (or side of 0.5, for one output) is the true one."""
    if predictions.shape[-1] > 1:
        truth = y.argmax(axis=-1) if y.ndim == 2 and y.shape[-1] == predictions.shape[-1] else y.reshape(-1)
        return float(np.mean(predictions.argmax(axis=-1) == truth))
    guess = predictions.reshape(-1) > (0.0 if from_logits else 0.5)
    return float(np.mean(guess == (y.reshape(-1) > 0.5)))
