"""The Python API: the same operations as the CLI, for people who sweep from scripts.

    from gapsweep import SweepConfig, DataSpec, launch, best_trials
    launch(SweepConfig(study="digits", data=DataSpec("digits"), trials=20))
    print(best_trials("digits", k=3)[0].summary())

``load_best_model`` and ``export_best`` give back the best trial's trained model. Query
functions take a storage URL (default ``sqlite:///gapsweep.db``) and open and close their
own connection pool, so they are safe to call from any process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storage import queries
from storage.engine import heartbeat_settings, reading
from storage.queries import ParamRange, StudySummary, TrialRecord

if TYPE_CHECKING:
    from sweeps.rerank import Reranked


def best_trials(
    study: str, storage: str | None = None, k: int = 1, *, by: str = "score", params: dict[str, ParamRange] | None = None
) -> list[TrialRecord]:
    """The ``k`` best complete trials of ``study`` by ``by`` (score, val_loss, gap, train_loss),
    optionally only those whose numeric ``params`` lie in ``{name: (low, high)}``.

    For a multi-objective (val loss, gap) study with the default ranking: its whole Pareto
    front, by val loss (``k`` does not cut a front).
    """
    with reading(storage) as engine:
        if by == "score" and not params and queries.n_objectives(engine, study) > 1:
            return queries.pareto_trials(engine, study)
        return queries.best_trials(engine, study, k, by=by, params=params)


def list_trials(
    study: str, storage: str | None = None, *, states: list[str] | None = None, params: dict[str, ParamRange] | None = None
) -> list[TrialRecord]:
    """All trials of ``study`` in number order, optionally filtered by state and parameter ranges."""
    with reading(storage) as engine:
        return queries.list_trials(engine, study, states=states, params=params)


def list_studies(storage: str | None = None) -> list[StudySummary]:
    """Every study in the database with its trial counts per state; running trials of dead
    workers count as ``STALE``, not ``RUNNING``."""
    with reading(storage) as engine:
        return queries.list_studies(engine, stale_after_s=heartbeat_settings()[1])


def get_trial(study: str, number: int, storage: str | None = None) -> TrialRecord:
    """One trial with its parameters, score parts and per-epoch curves."""
    with reading(storage) as engine:
        return queries.get_trial(engine, study, number)


def reap_study(study: str, storage: str | None = None) -> list[int]:
    """Fail the study's trials whose workers died (stale heartbeat) and queue them again.

    Returns the numbers of the trials it failed.
    """
    import optuna

    from storage.studies import require_study
    from sweeps.launch import open_crash_safe_storage, reap

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


def migrate(source: str, target: str, *, studies: list[str] | None = None) -> list[dict[str, Any]]:
    """Copy studies (all, or the named ones) with their trials, configuration and stored models
    from one database into another; a study that already exists in the target is refused."""
    import optuna

    from gapsweep.errors import ConfigError
    from storage import artifacts
    from storage.engine import open_storage
    from storage.studies import require_study

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
    from sweeps.rerank import rerank

    return rerank(list_trials(study, storage, states=["complete"]), penalty=gap_penalty, epoch=epoch)[:k]


def get_study_config(study: str, storage: str | None = None) -> dict[str, Any]:
    """The configuration ``gapsweep launch`` stored with the study (space, data, objective, …)."""
    from gapsweep.errors import StudyNotFoundError
    from storage.studies import CONFIG_ATTR

    with reading(storage) as engine:
        attrs = queries.study_user_attrs(engine, study)
    if CONFIG_ATTR not in attrs:
        raise StudyNotFoundError(f"study '{study}' was not created by gapsweep launch (it has no {CONFIG_ATTR})")
    return attrs[CONFIG_ATTR]


def baseline_trial(study: str, storage: str | None = None) -> TrialRecord | None:
    """The trial that ran the user's ``--baseline`` configuration, or None."""
    with reading(storage) as engine:
        return queries.baseline_trial(engine, study)
