"""gapsweep: hyperparameter sweeps for Keras models that hunt for models which generalize.

The sub-packages, in the order data flows through them (each imports only those after it in
docs/architecture.md's layers):
- ``gapsweep.search_spaces``: what is searched (spaces, files, the Keras model builder);
- ``gapsweep.sweeps``: how a sweep runs (``data``, ``trial``, ``run``) and how its results are
  judged (``analysis``);
- ``gapsweep.storage``: where results live and how they are queried (SQLite, PostgreSQL).
``gapsweep.api`` and ``gapsweep.cli`` sit on top of them.

This module re-exports the public Python API lazily, so ``import gapsweep`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "launch": "gapsweep.sweeps.run.launch",
    "SweepConfig": "gapsweep.sweeps.run.config",
    "load_sweep_file": "gapsweep.sweeps.run.config",
    "DataSpec": "gapsweep.sweeps.data.datasets",
    "ObjectiveSettings": "gapsweep.sweeps.trial.objective",
    "SearchSpace": "gapsweep.search_spaces.space",
    "Float": "gapsweep.search_spaces.space",
    "Int": "gapsweep.search_spaces.space",
    "Categorical": "gapsweep.search_spaces.space",
    "Fixed": "gapsweep.search_spaces.space",
    "load_space": "gapsweep.search_spaces.loader",
    "best_trials": "gapsweep.api",
    "list_trials": "gapsweep.api",
    "list_studies": "gapsweep.api",
    "get_trial": "gapsweep.api",
    "study_reference": "gapsweep.api",
    "load_best_model": "gapsweep.sweeps.analysis.export",
    "export_best": "gapsweep.sweeps.analysis.export",
    "model_info": "gapsweep.sweeps.data.preprocessing",
    "GapsweepError": "gapsweep.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gapsweep' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name]), name)
