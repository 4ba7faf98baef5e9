"""k-fold cross-validation over every labelled row, for data too small to trust one val split.

The training and val rows are pooled and cut into k folds, drawn once from the seed (stratified
by class for classification); each fold's model trains on the other k − 1 folds and is validated
on its own, so every labelled row is validated exactly once (selection sees k times more val rows
than one holdout). The test split is
never touched.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gapsweep.errors import DataError
from gapsweep.sweeps.data.datasets import Splits


def check_folds(splits: Splits, k: int) -> None:
    """Refuse a ``k`` that leaves a fold under 2 rows: checked before a study is written, so the
    mistake leaves nothing behind in the database."""
    n = len(splits.x_train) + len(splits.x_val)
    if k > n // 2:
        raise DataError(f"{n} training and val rows cannot make {k} folds of at least 2 rows; lower --cv")


def k_folds(splits: Splits, k: int, seed: int) -> tuple[list[Splits], list[np.ndarray]]:
    """``k`` train/val splits carved from ``splits``' training and val rows, and the rows each
    fold holds out (indices into the training rows followed by the val rows)."""
    check_folds(splits, k)
    x = np.concatenate([splits.x_train, splits.x_val])
    y = np.concatenate([splits.y_train, splits.y_val])
    n = len(x)
    order = np.random.default_rng(seed).permutation(n)
    if splits.task.task == "classification":
        # Dealt round the folds class by class: each fold holds every class in proportion.
        order = order[np.argsort(y[order], kind="stable")]
        held_out = [np.sort(order[start::k]) for start in range(k)]
    else:
        held_out = [np.sort(part) for part in np.array_split(order, k)]
    folds = []
    for index, held in enumerate(held_out):
        rest = np.sort(np.concatenate([part for other, part in enumerate(held_out) if other != index]))
        folds.append(replace(splits, x_train=x[rest], y_train=y[rest], x_val=x[held], y_val=y[held]))
    return folds, held_out
