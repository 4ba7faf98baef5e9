"""k-fold cross-validation on the training split, for data too small to trust one val split.

Folds are drawn once from the seed (stratified by class for classification); each fold's model trains on the other k − 1 folds and is
validated on its own. The val split of the sweep stays unused for scoring, and the test split is
never touched.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gapsweep.errors import DataError
from gapsweep.sweeps.data.datasets import Splits


def k_folds(splits: Splits, k: int, seed: int) -> list[Splits]:
    """``k`` train/val splits carved from ``splits``' training rows."""
    n = len(splits.x_train)
    if k > n // 2:
        raise DataError(f"{n} training rows cannot make {k} folds of at least 2 rows; lower --cv")
    order = np.random.default_rng(seed).permutation(n)
    if splits.task.task == "classification":
        # Dealt round the folds class by class: each fold holds every class in proportion.
        order = order[np.argsort(splits.y_train[order], kind="stable")]
        parts = [np.sort(order[start::k]) for start in range(k)]
    else:
        parts = np.array_split(order, k)
    folds = []
    for index, held in enumerate(parts):
        rest = np.concatenate([part for other, part in enumerate(parts) if other != index])
        folds.append(
            replace(
                splits,
                x_train=splits.x_train[rest], y_train=splits.y_train[rest],
                x_val=splits.x_train[held], y_val=splits.y_train[held],
            )
        )
    return folds
