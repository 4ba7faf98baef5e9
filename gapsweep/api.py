"""The Python API: the same operations as the CLI, for people who sweep from scripts.

    from gapsweep import SweepConfig, DataSpec, launch, best_trials
    launch(SweepConfig(study="digits", data=DataSpec("digits"), trials=20))
    print(best_trials("digits", k=3)[0].summary())

``load_best_model`` and ``export_best`` give back the best trial's trained model (``export_best``
also refits it on train + val rows, or averages the best trials into one ensemble);
``study_reference`` gives the linear reference fitted beside the study. Query
functions take a storage URL (default ``sqlite:///gapsweep.db``) and open and close their
own connection pool, so they are safe to call from any process.
"""

from __future__ import annotations

from typing import Any

import optuna

from gapsweep.errors import ConfigError
from gapsweep.storage import artifacts
from gapsweep.storage.engine import connect_existing, open_storage
from gapsweep.storage.heartbeats import open_crash_safe_storage, reap
from gapsweep.storage.reader import (
    baseline_trial,
    best_trials,
    get_study_config,
    get_trial,
    list_studies,
    list_trials,
    study_reference,
)
from gapsweep.storage.studies import require_study
from gapsweep.sweeps.analysis.rerank import Reranked, rerank

__all__ = [
    "baseline_trial", "best_trials", "delete_study", "get_study_config", "get_trial", "list_studies", "list_trials",
    "migrate", "reap_study", "rerank_trials", "study_reference",
]


def reap_study(study: str, storage: str | None = None) -> list[int]:
    """Fail the study's trials whose workers died (stale heartbeat) and queue them again.

    Returns the numbers of the trials it failed.
    """
    rdb = open_crash_safe_storage(storage)
    try:
        require_study(study, rdb)
        loaded = optuna.load_study(study_name=study, storage=rdb)
        running = {t.number for t in loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        reap(loaded, rdb.engine)
        still = {t.number for t in loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        return sorted(running - still)
    finally:
        rdb.engine.dispose()


def delete_study(study: str, storage: str | None = None) -> int:
    """Remove ``study``: gapsweep's stored models and checkpoints first, then the Optuna study
    (trials, curves, configuration). Returns how many stored models/checkpoints went with it.

    In that order, an interrupted delete leaves a study to delete again, never stray
    checkpoints that a new study of the same name would resume from.
    """
    connect_existing(storage).dispose()  # a missing database is reported, never created to delete from
    rdb = open_storage(storage)
    try:
        require_study(study, rdb)
        removed = artifacts.delete_all(rdb.engine, study) if artifacts.schema_version(rdb.engine) else 0
        optuna.delete_study(study_name=study, storage=rdb)
    finally:
        rdb.engine.dispose()
    return removed


def migrate(source: str, target: str, *, studies: list[str] | None = None) -> list[dict[str, Any]]:
    """Copy studies (all, or the named ones) with their trials, configuration and stored models
    from one database into another; a study that already exists in the target is refused."""
    src, dst = open_storage(source), open_storage(target)
    try:
        names = studies or [s.study_name for s in optuna.get_all_study_summaries(src, include_best_trial=False)]
        existing = {s.study_name for s in optuna.get_all_study_summaries(dst, include_best_trial=False)}
        for name in names:
            require_study(name, src)
            if name in existing:
                raise ConfigError(f"study '{name}' already exists in the target database; nothing was copied")
        copied = []
        for name in names:
            optuna.copy_study(from_study_name=name, from_storage=src, to_storage=dst)
            moved = artifacts.copy(src.engine, dst.engine, name) if artifacts.schema_version(src.engine) else 0
            n_trials = len(optuna.load_study(study_name=name, storage=dst).get_trials(deepcopy=False))
            copied.append({"study": name, "trials": n_trials, "artifacts": moved})
        return copied
    finally:
        src.engine.dispose()
        dst.engine.dispose()


def rerank_trials(
    study: str, storage: str | None = None, k: int = 1, *, gap_penalty: float, epoch: str = "best"
) -> list[Reranked]:
    """The ``k`` best complete trials for another gap penalty or epoch rule, from stored curves."""
    return rerank(list_trials(study, storage, states=["complete"]), penalty=gap_penalty, epoch=epoch)[:k]
