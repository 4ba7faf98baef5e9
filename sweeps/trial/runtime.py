"""TensorFlow for training: imported once, quietly, with fixed thread pools; a clean session
per model.

TensorFlow is imported here and nowhere at module level, so commands that only query the
database never load it. Its import leaves some 400,000 Python objects that live as long as the
process; they are frozen out of the garbage collector (``gc.freeze``), so the collection that
frees each old model (``clear_session``) scans only what the trials created: about 20 ms instead
of 0.5–1 s per trial.
"""

from __future__ import annotations

import gc
import os

from gapsweep.quiet import without_import_noise

_device: str | None = None
#: TensorFlow threads per pool when this process starts it (``set_threads``).
_threads = 1

#: Seeds are whole numbers below this (NumPy's and Optuna's samplers take no larger).
SEED_RANGE = 2**32


def fresh_session(seed: int) -> None:
    """Free the previous model's graph and seed weights, shuffling and dropout for the next.

    A trial's seed is the study's seed plus its number, so it may pass the 2**32 that NumPy's
    generator takes; it wraps around there."""
    init_tensorflow()
    import keras

    keras.backend.clear_session(free_memory=True)
    keras.utils.set_random_seed(seed % SEED_RANGE)


def set_threads(threads: int) -> None:
    """The threads per pool TensorFlow gets when it starts in this process, which may be much
    later (with the first model): one process of several sharing the cores takes its share."""
    global _threads
    _threads = threads


def init_tensorflow(threads: int | None = None) -> str:
    """Import TensorFlow quietly, fix its thread pools and let GPU memory grow on demand.

    Must run before the first op. One thread per pool (the default, unless ``set_threads`` or
    ``threads`` says otherwise) was as fast as TensorFlow's defaults for these small models and
    lets one worker process per core scale. Returns the device that trains, e.g. ``GPU:0`` or ``CPU``.
    """
    global _device
    if _device is not None:
        return _device
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with without_import_noise():
        import keras  # noqa: F401  (its import-time objects are frozen with TensorFlow's, below)
        import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    gpus = tf.config.list_physical_devices("GPU")
    try:
        for gpu in gpus:
            # Without this one process claims all GPU memory and a second worker cannot start.
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.threading.set_intra_op_parallelism_threads(threads or _threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads or _threads)
    except RuntimeError:
        pass  # TensorFlow already ran an op in this process; its settings are fixed.
    gc.collect()
    gc.freeze()
    _device = "GPU:0" if gpus else "CPU"
    return _device
