"""The Python API: the same operations as the CLI, for people who sweep from scripts.

    from gapsweep import SweepConfig, DataSpec, launch, best_trials
    launch(SweepConfig(study="digits", data=DataSpec("digits"), trials=20))
    print(best_trials("digits", k=3)[0].summary())

``load_best_model`` and ``export_best`` give back the best trial's trained model (``export_best``
also refits it on train + val rows, or averages the best trials into one ensemble);
``study_reference`` gives the linear reference fitted beside the study; ``select_trials`` gives
the noise-aware view ``gapsweep best`` prints: the val-min trial, how many trials the val rows
cannot tell apart from it, and the paired rule's pick among them. Query functions take a
storage URL (default ``sqlite:///gapsweep.db``) or the ``pathlib.Path`` of a SQLite file, and
open and close their own connection pool, so they are safe to call from any process.
"""

from __future__ import annotations

import os
from typing import Any

import optuna

from gapsweep import checks
from gapsweep.errors import ConfigError, StorageError, StudyNotFoundError
from gapsweep.storage import artifacts, val_losses
from gapsweep.storage.backend import open_backend
from gapsweep.storage.engine import connect_existing, open_storage
from gapsweep.storage.queries import TrialRecord
from gapsweep.storage.reader import (
    baseline_trial,
    best_trials,
    get_study_config,
    get_trial,
    list_studies,
    list_trials,
    selection_candidates,
    stored_val_losses,
    study_reference,
)
from gapsweep.storage.studies import require_study
from gapsweep.storage.url import as_text, journal_path, mask_text, proxy_address
from gapsweep.sweeps.analysis.rerank import Reranked, rerank
from gapsweep.sweeps.analysis.selection import RULES, Selection, paired_select
from gapsweep.sweeps.trial.score import DEFAULT_KAPPA

__all__ = [
    "baseline_trial", "best_trial", "best_trials", "delete_study", "get_study_config", "get_trial", "list_studies",
    "list_trials", "migrate", "reap_study", "rerank_trials", "select_trials", "stored_val_losses", "study_reference",
]


def reap_study(study: str, storage: str | None = None) -> list[int]:
    """Fail the study's trials whose workers died (stale heartbeat) and queue them again.

    Returns the numbers of the trials it failed.
    """
    if proxy_address(storage) is not None:  # its workers see no heartbeats: the proxy reaps
        raise StorageError(
            "a storage proxy reaps its studies itself once a heartbeat interval; to reap now, pass the database's own URL"
        )
    backend = open_backend(storage, create=False)
    try:
        require_study(study, backend.storage)
        loaded = optuna.load_study(study_name=study, storage=backend.storage)
        running = {t.number for t in loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        backend.reap(loaded)
        still = {t.number for t in loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        return sorted(running - still)
    finally:
        backend.close()


def delete_study(study: str, storage: str | None = None) -> int:
    """Remove ``study``: gapsweep's stored models and checkpoints first, then the Optuna study
    (trials, curves, configuration). Returns how many stored models/checkpoints went with it.

    In that order, an interrupted delete leaves a study to delete again, never stray
    checkpoints that a new study of the same name would resume from.
    """
    connect_existing(storage).dispose()  # a missing database is reported, never created to delete from
    backend = open_backend(storage, create=False)
    try:
        require_study(study, backend.storage)
        return backend.delete_study(study)
    finally:
        backend.close()


def migrate(
    source: str | os.PathLike[str], target: str | os.PathLike[str], *, studies: list[str] | None = None
) -> list[dict[str, Any]]:
    """Copy studies (all, or the named ones) with their trials, configuration and stored models
    from one database into another; a study that already exists in the target is refused."""
    source, target = as_text(source), as_text(target)
    checked = connect_existing(source, flag="--from")  # a source that does not exist is named, never created empty
    # A journal is read through its SQL snapshot, which holds its models and val losses as a database would.
    src = open_storage(source if journal_path(source) is None else checked.url.render_as_string(), flag="--from")
    try:
        names = list(dict.fromkeys(studies)) if studies else [s.study_name for s in optuna.get_all_study_summaries(src, include_best_trial=False)]
        for name in names:
            try:
                require_study(name, src)
            except StudyNotFoundError as exc:
                raise StudyNotFoundError(f"source {mask_text(source)}: {exc}") from None
        dst = open_storage(target, flag="--to")  # only once the source holds what to copy
        try:
            existing = {s.study_name for s in optuna.get_all_study_summaries(dst, include_best_trial=False)}
            clash = next((name for name in names if name in existing), None)
            if clash is not None:
                raise ConfigError(f"study '{clash}' already exists in the target database; nothing was copied")
            copied = []
            for name in names:
                optuna.copy_study(from_study_name=name, from_storage=src, to_storage=dst)
                moved = artifacts.copy(src.engine, dst.engine, name) if artifacts.schema_version(src.engine) else 0
                val_losses.copy(src.engine, dst.engine, name)
                n_trials = len(optuna.load_study(study_name=name, storage=dst).get_trials(deepcopy=False))
                copied.append({"study": name, "trials": n_trials, "artifacts": moved})
            return copied
        finally:
            dst.engine.dispose()
    finally:
        src.engine.dispose()
        checked.dispose()


def rerank_trials(
    study: str, storage: str | None = None, k: int = 1, *, gap_penalty: float, epoch: str = "best"
) -> list[Reranked]:
    """The ``k`` best complete trials for another gap penalty or epoch rule, from stored curves,
    scored with the study's own score (``bounded`` or ``additive``) and κ."""
    checks.whole("k (--top)", k, 1)
    objective = get_study_config(study, storage).get("objective", {})
    # Studies from before the bounded score stored no score name: theirs was additive.
    kind, kappa = objective.get("score", "additive"), objective.get("kappa", DEFAULT_KAPPA)
    records = list_trials(study, storage, states=["complete"])
    return rerank(records, penalty=gap_penalty, epoch=epoch, score=kind, kappa=kappa)[:k]


def select_trials(study: str, storage: str | None = None) -> Selection | None:
    """The paired one-standard-error view of ``study`` (``gapsweep.sweeps.analysis.selection``)
    over its trials of lowest val loss: None when no complete trial has stored per-example val
    losses."""
    return paired_select(*selection_candidates(study, storage))


def best_trial(study: str, storage: str | None = None, *, rule: str = "score") -> TrialRecord | None:
    """The study's pick: by ``score`` Optuna's best trial (lowest objective value), by ``paired``
    the paired rule's pick; None while no trial is complete."""
    if rule not in RULES:
        raise ConfigError(f"unknown rule '{rule}'; use one of {', '.join(RULES)}")
    if rule == "score":
        top = best_trials(study, storage, 1)
        return top[0] if top else None
    selection = select_trials(study, storage)
    if selection is None:
        if not best_trials(study, storage, 1):
            return None
        raise ConfigError(
            f"study '{study}' stores no per-example val losses (launched by an older gapsweep, or every "
            "trial is chance-level); use --rule score"
        )
    return selection.pick
