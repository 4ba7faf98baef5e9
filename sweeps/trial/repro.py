"""The reproducibility record every trial stores (user attribute ``repro``): seed, the data's
fingerprint, library versions, device, threads and op determinism; ``analysis.reproduce``
retrains a trial from it."""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Any

from gapsweep.sweeps.data.datasets import Splits
from gapsweep.sweeps.trial.runtime import init_tensorflow

_PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "optuna", "numpy", "gapsweep")


def record(seed: int, splits: Splits) -> dict[str, Any]:
    """The reproducibility record of a trial trained with ``seed`` on ``splits``."""
    device = init_tensorflow()  # first: TensorFlow is imported there, its settings fixed
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config  # the only getter TF offers

    return {
        "seed": seed,
        "data_fingerprint": splits.fingerprint,
        "versions": dict(_versions()),
        "device": device,
        "threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "op_determinism": bool(tf_config.is_op_determinism_enabled()),
    }


@functools.cache
def _versions() -> dict[str, str]:
    """Versions of the packages that shape training; looked up once per process (a few ms)."""
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
