"""Data loaders: functions a study names (``data = "loaders.py:digit_images"``) so that every
worker, on any machine, loads the same data itself. A loader returns what a script could pass in
memory: ``(x, y)`` arrays, ``(train, val[, test])`` pairs, a dict of splits, or a finite
``tf.data.Dataset``/``keras.utils.PyDataset``; the study's ``data.options`` are its keyword
arguments.
"""

from __future__ import annotations

import numpy as np


def digit_images(rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as N×8×8×1 images and their labels (the first ``rows`` of them)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images[:rows, ..., None], digits.target[:rows]
