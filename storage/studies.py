"""Create, resume and look up studies by name.

gapsweep keeps a study's configuration as one study user attribute (``gapsweep.config``), inside
Optuna's schema, so the study carries everything a later launch or worker needs.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models  # Optuna's own table definitions
from sqlalchemy.dialects import postgresql, sqlite

from gapsweep.errors import StudyNotFoundError

CONFIG_ATTR = "gapsweep.config"

_trials = models.TrialModel.__table__
_user_attrs = models.TrialUserAttributeModel.__table__
#: Inserts that can replace a row on a repeated key, for the databases gapsweep supports.
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


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
    """Write many user attributes of a running trial in one statement and one transaction.

    Optuna's ``Trial.set_user_attr`` looks the trial up and commits for each attribute alone; a
    finished trial's curves and score parts are a dozen of them, which made attributes the
    largest part of gapsweep's per-trial storage time. The rows are the ones ``set_user_attr``
    writes (JSON values in Optuna's own table, replaced on a repeated key), after the same
    check that the trial is still running.
    """
    if not attrs:
        return
    storage: optuna.storages.RDBStorage = getattr(trial.storage, "_backend", trial.storage)  # under Optuna's cache
    trial_id = trial._trial_id
    insert = _INSERTS[storage.engine.dialect.name](_user_attrs)
    upsert = insert.on_conflict_do_update(
        index_elements=[_user_attrs.c.trial_id, _user_attrs.c.key], set_={"value_json": insert.excluded.value_json}
    )
    rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
    with storage.engine.begin() as conn:
        state = conn.execute(sa.select(_trials.c.state).where(_trials.c.trial_id == trial_id)).scalar_one()
        storage.check_trial_is_updatable(trial_id, state)
        conn.execute(upsert, rows)
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what set_user_attr keeps in step
