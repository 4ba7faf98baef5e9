"""Create, resume and look up studies by name.

gapsweep keeps a study's configuration as one study user attribute (``gapsweep.config``), inside
Optuna's schema, so the study carries everything a later launch or worker needs.
"""

from __future__ import annotations

from typing import Any, Mapping

import optuna
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session

from gapsweep.errors import StudyNotFoundError

CONFIG_ATTR = "gapsweep.config"


def create_or_load(
    name: str,
    storage: optuna.storages.BaseStorage,
    *,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    directions: list[str] | None = None,
) -> optuna.Study:
    """The study ``name``, created on first use and resumed afterwards."""
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        directions=directions or ["minimize"],
        load_if_exists=True,
    )


def stored_config(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(CONFIG_ATTR)


def require_study(name: str, storage: optuna.storages.BaseStorage) -> None:
    """Raise ``StudyNotFoundError`` naming the studies that do exist."""
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if name not in names:
        known = ", ".join(sorted(names)) or "none yet"
        raise StudyNotFoundError(f"no study named '{name}' in this database (studies: {known})")


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Write many user attributes of a running trial in one transaction.

    Optuna's ``Trial.set_user_attr`` commits each attribute alone; a finished trial's curves and
    score parts are a dozen of them, and a commit per attribute was a third of gapsweep's
    per-trial storage time. The rows are written by Optuna's own storage code into its own
    table, exactly as ``set_user_attr`` writes them.
    """
    if not attrs:
        return
    backend: optuna.storages.RDBStorage = getattr(trial.storage, "_backend", trial.storage)  # under Optuna's cache
    with _create_scoped_session(backend.scoped_session, True) as session:
        for key, value in attrs.items():
            backend._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial._trial_id, key, value)
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what set_user_attr keeps in step
