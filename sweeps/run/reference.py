"""The linear reference beside every sweep: did the sweep beat the simplest sound model?

When a study is created, ``prepare`` fits scikit-learn's ``LogisticRegression`` (classifiers) or
``Ridge`` (regression) on the study's training rows, chooses its regularization on the val rows
from a small grid, and stores the result with the study (user attribute ``gapsweep.reference``):
the model, its parameters and its val loss, the same pure loss the trials record (cross-entropy
for classifiers, mean squared error for regression) on the same val rows. A cross-validated study
(``cv = k``) scores the reference on k folds of the training rows drawn from the study's seed, as
its trials are scored on folds. A resumed study keeps the stored reference.

Where the search space can express a linear model (``n_layers`` may be 0, no convolutions),
``linear_start`` turns the reference into a new study's first trial: the same model as a Keras
network whose output layer starts from the reference's fitted weights (``linear_weights``), so
the sweep has the simplest sound model among its own trials rather than only beside them, and
TPE starts from it. Adam from random weights needs far more steps than a small sweep gives it
to come near the exact fit (60 steps on a 71-row training split).

``best``, ``show``, the report and the launch summary put the pick's val loss beside it, and
``reference_test_losses`` gives the reference's per-example losses on a study's test rows for
benchmarks that compare picks on data no trial saw.
"""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Any, Mapping

import numpy as np

from gapsweep.errors import DataError
from gapsweep.search_spaces.space import Fixed, Int, SearchSpace
from gapsweep.storage.reader import study_reference
from gapsweep.sweeps.data import losses
from gapsweep.sweeps.data.cv import k_folds
from gapsweep.sweeps.data.datasets import Splits
from gapsweep.sweeps.run.config import stored_sweep_data
from gapsweep.sweeps.trial.trainer import prior_predictions

#: Regularization strengths tried: C of LogisticRegression (inverse strength), alpha of Ridge.
GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
#: The linear start's learning rate (clipped into the space). The trial starts from the
#: reference's fitted weights (``linear_weights``), so Adam only fine-tunes: at 1e-3 it stayed
#: within ±1 % of the reference's test loss on wine and synthetic; at 0.03 it drifted up to +3.5 %.
LINEAR_LEARNING_RATE = 1e-3


def fit_reference(splits: Splits, *, cv: int = 0, seed: int = 0) -> dict[str, Any] | None:
    """The reference for ``splits``: fitted on the training rows, its strength chosen by val loss
    (on the trials' ``cv`` folds of the training and val rows when ``cv`` > 1). None when the training rows (a
    fold's, under ``cv``) hold a single class (there is nothing to fit)."""
    parts = k_folds(splits, cv, seed)[0] if cv > 1 else [splits]
    if splits.task.task == "classification" and any(len(np.unique(part.y_train)) < 2 for part in parts):
        return None
    grid = []
    for strength in GRID:
        val = statistics.fmean(float(_val_losses(part, strength).mean()) for part in parts)
        grid.append((val, strength))
    val_loss, strength = min(grid)
    name, key = _names(splits)
    return {
        "model": name,
        "params": {key: strength},
        "val_loss": val_loss,
        "grid": [{key: s, "val_loss": v} for v, s in grid],
        "train_rows": len(splits.x_train),
        # The rows val_loss averages: under cv, every training and val row once, as the trials' folds.
        "val_rows": len(splits.x_train) + len(splits.x_val) if cv > 1 else len(splits.x_val),
        "cv": cv if cv > 1 else 0,
        # What predicting the training mean (class frequencies) scores on the val rows, in the
        # reference's loss: a trial whose own prior scores otherwise was trained on another loss.
        **({"prior_loss": _prior_loss(splits)} if cv <= 1 else {}),
    }


def _prior_loss(splits: Splits) -> float:
    """The val loss of predicting the training mean (class frequencies), as the trials' prior."""
    y = np.asarray(splits.y_train)
    classification = splits.task.task == "classification"
    width = splits.task.n_classes if classification else y.reshape(len(y), -1).shape[1]
    prior = prior_predictions(y, len(splits.y_val), width, classification, from_logits=False)
    return float(losses.per_example(splits.task, splits.y_val, prior).mean())


def linear_start(reference: Mapping[str, Any], space: SearchSpace, train_rows: int) -> dict[str, Any] | None:
    """The reference's configuration as parameters of ``space``: depth 0, the L2 weight its
    strength stands for, the space's most epochs (early stopping ends the trial) and
    ``LINEAR_LEARNING_RATE``. None where the space cannot train a linear model.

    scikit-learn minimizes C·Σ loss + ½‖w‖² (LogisticRegression) or Σ loss + α‖w‖² (Ridge); a Keras
    model with ``l2`` minimizes mean loss + l2·‖w‖², so l2 = 1/(2·C·n) or α/n for n training rows.
    """
    params = space.params
    if "n_layers" not in params or not params["n_layers"].allows(0):
        return None
    if "conv_blocks" in params and not params["conv_blocks"].allows(0):
        return None
    (strength,) = reference["params"].values()
    l2 = 1 / (2 * strength * train_rows) if reference["model"] == "LogisticRegression" else strength / train_rows
    wanted: dict[str, Any] = {"n_layers": 0, "conv_blocks": 0, "l2": l2, "learning_rate": LINEAR_LEARNING_RATE}
    values = {name: params[name].nearest(value) for name, value in wanted.items() if name in params}
    if isinstance(params.get("epochs"), Int):
        values["epochs"] = params["epochs"].high
    # Fixed parameters are not Optuna's to set, and a value the space cannot take is left to the sampler.
    return {name: value for name, value in values.items() if value is not None and not isinstance(params[name], Fixed)}


def linear_weights(splits: Splits, reference: Mapping[str, Any]) -> list[np.ndarray]:
    """The reference fitted on ``splits``' training rows, as the kernel and bias of the output
    layer of a depth-0 model from gapsweep's builder (softmax over every class, or one unit per
    target): the same predictions, as a test checks. A class missing from the training rows gets
    a bias that leaves it no probability, as the reference gives it none."""
    (strength,) = reference["params"].values()
    model = _fit(splits, float(strength))
    features = _rows(splits.x_train).shape[1]
    if splits.task.task != "classification":
        kernel = np.asarray(model.coef_, dtype=np.float32).reshape(-1, features).T
        return [kernel, np.asarray(model.intercept_, dtype=np.float32).reshape(kernel.shape[1])]
    kernel = np.zeros((features, splits.task.n_classes), dtype=np.float32)
    bias = np.full(splits.task.n_classes, -30.0, dtype=np.float32)
    classes = model.classes_.astype(int)
    if len(classes) == 2:  # one logit for the second class: softmax over (0, logit) is the same
        kernel[:, classes[1]], bias[classes] = model.coef_[0], (0.0, model.intercept_[0])
    else:
        kernel[:, classes], bias[classes] = model.coef_.T, model.intercept_
    return [kernel, bias]


def reference_test_losses(study: str, storage: str | None = None) -> np.ndarray:
    """Per-example losses on the study's test rows of its stored reference, refit with the stored
    parameters on the study's training rows: the row a benchmark puts beside each pick."""
    reference = study_reference(study, storage)
    if reference is None:
        raise DataError(f"study '{study}' has no linear reference stored; launch it once to compute one")
    _, splits = stored_sweep_data(study, storage, purpose="scoring its reference")
    if not len(splits.x_test):
        raise DataError(f"study '{study}' has no test rows; give its data a test_fraction > 0")
    (strength,) = reference["params"].values()
    model = _fit(splits, float(strength))
    return losses.per_example(splits.task, splits.y_test, _predict(model, splits, splits.x_test))


def versus(reference: Mapping[str, Any], val_loss: float | None, prior_loss: float | None = None) -> dict[str, Any]:
    """A trial's val loss beside the reference's, as ``--json`` outputs carry it: ``beaten`` is
    whether the trial's val loss is lower; ``comparable`` is false where the trial was scored with
    another loss (a hypermodel compiled with MAE, say), told by the mean predictor's loss
    (``prior_loss``), and then nothing is beaten."""
    comparable = same_loss(reference, prior_loss)
    return {
        "model": reference["model"],
        "params": reference["params"],
        "val_loss": reference["val_loss"],
        "trial_val_loss": val_loss,
        "comparable": comparable,
        "beaten": comparable and val_loss is not None and val_loss < float(reference["val_loss"]),
    }


def same_loss(reference: Mapping[str, Any], prior_loss: float | None) -> bool:
    """Whether a trial whose mean predictor scored ``prior_loss`` uses the reference's loss
    (unknown on either side: assumed so)."""
    theirs = reference.get("prior_loss")
    if prior_loss is None or theirs is None or not math.isfinite(prior_loss):
        return True
    return math.isclose(prior_loss, float(theirs), rel_tol=1e-3)


def sentence(
    reference: Mapping[str, Any], number: int | None, val_loss: float | None, *, linear_start: bool = False,
    whole_sweep: bool = True, prior_loss: float | None = None,
) -> str:
    """One line for people: the pick's val loss beside the reference's, and plainly whether the
    sweep beat it (``linear_start``: the pick is the trial that started from the reference).
    ``whole_sweep=False``: the trial is one the user chose (``show``, a filtered ``best``), so the
    line compares it alone and says nothing of the sweep."""
    params = ", ".join(f"{key}={value:g}" for key, value in reference["params"].items())
    line = f"linear reference ({reference['model']}, {params}): val loss {float(reference['val_loss']):.4f}"
    if number is None:
        return f"{line}; no complete trial to compare yet"
    if val_loss is None:
        return f"{line}; trial {number} has no val loss to compare"
    if not same_loss(reference, prior_loss):
        return (
            f"{line}; trial {number} is scored with another loss (predicting the mean scores {prior_loss:.4g} in it, "
            f"{float(reference['prior_loss']):.4g} in the reference's), so the two are not compared"
        )
    if versus(reference, val_loss)["beaten"]:
        return f"{line}; trial {number}: val loss {val_loss:.4f}, lower"
    which = f"trial {number} (the linear start: no hidden layer, trained by Keras)" if linear_start else f"trial {number}"
    if not whole_sweep:
        return f"{line}; {which}: val loss {val_loss:.4f}, higher"
    return (
        f"{line}; {which}: val loss {val_loss:.4f}. The sweep did not beat the linear reference: "
        "prefer the simpler model, or widen the search"
    )


def chance_sentence(number: int, val_loss: float, prior_loss: float, *, whole_sweep: bool = True) -> str:
    """One line for a pick that predicts no better than a constant: no trial learned anything."""
    line = (
        f"trial {number} is at chance level: val loss {val_loss:.4f}, no better than {prior_loss:.4f}, what always "
        "predicting the training rows' class shares (or mean) scores"
    )
    if not whole_sweep:
        return line
    return f"{line}; no trial learned from these columns: check the target and the columns, or widen the search"


def _names(splits: Splits) -> tuple[str, str]:
    return ("LogisticRegression", "C") if splits.task.task == "classification" else ("Ridge", "alpha")


def _fit(splits: Splits, strength: float) -> Any:
    """The reference model with ``strength`` fitted on the training rows (deterministic)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge
    from threadpoolctl import threadpool_limits

    if splits.task.task == "classification":
        model: Any = LogisticRegression(C=strength, max_iter=1000)
    else:
        model = Ridge(alpha=strength)
    # One BLAS thread: beside TensorFlow's pools, a multi-threaded BLAS made a 64-feature fit
    # take 2.4 s instead of 0.01 s on 2 cores.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # the val loss judges the result anyway
        # scikit-learn's guess that many integer classes might be a regression: launch names the task it chose.
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        return model.fit(_rows(splits.x_train), splits.y_train)


def _rows(x: np.ndarray) -> np.ndarray:
    """Rows as flat feature vectors: images and sequences are one vector per example to a linear model."""
    return x.reshape(len(x), -1)


def _predict(model: Any, splits: Splits, x: np.ndarray) -> np.ndarray:
    """Probabilities over all the task's classes (classes missing from training get 0), or values."""
    if splits.task.task != "classification":
        return model.predict(_rows(x))
    probabilities = np.zeros((len(x), splits.task.n_classes))
    probabilities[:, model.classes_.astype(int)] = model.predict_proba(_rows(x))
    return probabilities


def _val_losses(splits: Splits, strength: float) -> np.ndarray:
    model = _fit(splits, strength)
    return losses.per_example(splits.task, splits.y_val, _predict(model, splits, splits.x_val))
