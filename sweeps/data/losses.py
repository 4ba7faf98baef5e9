"""Per-example pure losses from predictions, outside Keras: cross-entropy for classifiers, squared
error for regression. Their mean is what the builder's ``pure_loss`` metric reports, so a model
that is not a Keras model (the linear reference) or an averaged ensemble is judged on the same
scale as the trials.
"""

from __future__ import annotations

import numpy as np

from gapsweep.search_spaces.builder import TaskSpec

#: Keras' backend epsilon: its cross-entropy clips probabilities to [ε, 1 − ε] before the log.
EPSILON = 1e-7


def class_probabilities(predictions: np.ndarray) -> np.ndarray:
    """A classifier's outputs as one column per class: a single column is read as p(class 1)."""
    probabilities = np.asarray(predictions, dtype="float64").reshape(len(predictions), -1)
    if probabilities.shape[1] == 1:
        probabilities = np.concatenate([1.0 - probabilities, probabilities], axis=1)
    return probabilities


def per_example(task: TaskSpec, y: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """One loss per row: −log p(true class) for a classifier's probabilities (a single column is
    read as p(class 1)), the mean squared error over the outputs for regression."""
    predictions = np.asarray(predictions, dtype="float64")
    if task.task == "classification":
        probabilities = class_probabilities(predictions)
        probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
        picked = probabilities[np.arange(len(y)), np.asarray(y, dtype="int64")]
        return -np.log(np.clip(picked, EPSILON, 1.0 - EPSILON))
    errors = predictions.reshape(len(y), -1) - np.asarray(y, dtype="float64").reshape(len(y), -1)
    return np.mean(errors**2, axis=1)
