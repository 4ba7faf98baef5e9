"""Reads by storage URL: each call opens its own connection pool and closes it, so scripts and
CLI commands can query any gapsweep database from any process, without TensorFlow."""

from __future__ import annotations

from typing import Any

from gapsweep import checks
from gapsweep.errors import EmptyDatabaseError, StudyNotFoundError
from gapsweep.storage import queries, val_losses
from gapsweep.storage.engine import heartbeat_settings, reading
from gapsweep.storage.queries import ParamRange, StudySummary, TrialRecord
from gapsweep.storage.backend import open_backend
from gapsweep.storage.studies import CONFIG_ATTR, REFERENCE_ATTR, require_study
from gapsweep.storage.url import proxy_address


def best_trials(
    study: str, storage: str | None = None, k: int = 1, *, by: str = "score", params: dict[str, ParamRange] | None = None
) -> list[TrialRecord]:
    """The ``k`` best complete trials of ``study`` by ``by`` (score, val_loss, gap, train_loss),
    optionally only those whose numeric ``params`` lie in ``{name: (low, high)}``.

    For a multi-objective (val loss, gap) study with the default ranking: its whole Pareto
    front, by val loss (``k`` does not cut a front).
    """
    checks.whole("k (--top)", k, 1)
    with reading(storage) as engine:
        if by == "score" and not params and queries.n_objectives(engine, study) > 1:
            return queries.pareto_trials(engine, study)
        return queries.best_trials(engine, study, k, by=by, params=params)


def list_trials(
    study: str, storage: str | None = None, *, states: list[str] | str | None = None,
    params: dict[str, ParamRange] | None = None,
) -> list[TrialRecord]:
    """All trials of ``study`` in number order, optionally filtered by state and parameter ranges."""
    with reading(storage) as engine:
        return queries.list_trials(engine, study, states=states, params=params)


def list_studies(storage: str | None = None) -> list[StudySummary]:
    """Every study in the database with its trial counts per state; running trials of dead
    workers count as ``STALE``, not ``RUNNING``. An empty database (no tables yet) has none."""
    try:
        with reading(storage) as engine:
            return queries.list_studies(engine, stale_after_s=heartbeat_settings()[1])
    except EmptyDatabaseError:
        return []


def get_trial(study: str, number: int, storage: str | None = None) -> TrialRecord:
    """One trial with its parameters, score parts and per-epoch curves."""
    with reading(storage) as engine:
        return queries.get_trial(engine, study, number)


def get_study_config(study: str, storage: str | None = None) -> dict[str, Any]:
    """The configuration ``gapsweep launch`` stored with the study (space, data, objective, …);
    through a storage proxy too, where a worker finds it."""
    if proxy_address(storage) is not None:
        backend = open_backend(storage)
        try:
            require_study(study, backend.storage)
            attrs = backend.storage.get_study_user_attrs(backend.storage.get_study_id_from_name(study))
        finally:
            backend.close()
    else:
        with reading(storage) as engine:
            attrs = queries.study_user_attrs(engine, study)
    if CONFIG_ATTR not in attrs:
        raise StudyNotFoundError(f"study '{study}' was not created by gapsweep launch (it has no {CONFIG_ATTR})")
    return attrs[CONFIG_ATTR]


def baseline_trial(study: str, storage: str | None = None) -> TrialRecord | None:
    """The trial that ran the user's ``--baseline`` configuration, or None."""
    with reading(storage) as engine:
        return queries.baseline_trial(engine, study)


def study_reference(study: str, storage: str | None = None) -> dict[str, Any] | None:
    """The linear reference stored when the study was created (model, params, val loss), or None
    for a study made before gapsweep fitted one."""
    with reading(storage) as engine:
        return queries.study_user_attrs(engine, study).get(REFERENCE_ATTR)


def stored_val_losses(study: str, storage: str | None = None) -> dict[int, list[float]]:
    """The per-example val losses of ``study``'s complete trials, by trial number."""
    with reading(storage) as engine:
        queries.study_id(engine, study)  # a missing study is named as such
        return val_losses.load(engine, study)


#: How many trials of lowest val loss the paired rule compares (a trial tied with the val-min
#: trial lies within about two SE of it, far inside this many in any study of ordinary size).
PAIRED_CANDIDATES = 100


def selection_candidates(
    study: str, storage: str | None = None, k: int = PAIRED_CANDIDATES
) -> tuple[list[TrialRecord], dict[int, list[float]]]:
    """The ``k`` complete trials of lowest val loss with their stored per-example val losses;
    nothing is loaded for a study that stores none, so ``best`` stays one query on such studies."""
    with reading(storage) as engine:
        queries.study_id(engine, study)
        if not val_losses.any_stored(engine, study):
            return [], {}
        records = queries.best_trials(engine, study, k, by="val_loss")
        return records, val_losses.load(engine, study, [record.number for record in records])
