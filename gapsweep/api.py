"""The Python API: the same operations as the CLI, for people who sweep from scripts.

    from gapsweep import SweepConfig, DataSpec, launch, best_trials
    launch(SweepConfig(study="digits", data=DataSpec("digits"), trials=20))
    print(best_trials("digits", k=3)[0].summary())

``load_best_model`` and ``export_best`` give back the best trial's trained model. Query
functions take a storage URL (default ``sqlite:///gapsweep.db``) and open and close their
own connection pool, so they are safe to call from any process.
"""

from __future__ import annotations

from storage import queries
from storage.engine import reading
from storage.queries import ParamRange, StudySummary, TrialRecord


def best_trials(
    study: str, storage: str | None = None, k: int = 1, *, by: str = "score", params: dict[str, ParamRange] | None = None
) -> list[TrialRecord]:
    """The ``k`` best complete trials of ``study`` by ``by`` (score, val_loss, gap, train_loss),
    optionally only those whose numeric ``params`` lie in ``{name: (low, high)}``."""
    with reading(storage) as engine:
        return queries.best_trials(engine, study, k, by=by, params=params)


def list_trials(
    study: str, storage: str | None = None, *, states: list[str] | None = None, params: dict[str, ParamRange] | None = None
) -> list[TrialRecord]:
    """All trials of ``study`` in number order, optionally filtered by state and parameter ranges."""
    with reading(storage) as engine:
        return queries.list_trials(engine, study, states=states, params=params)


def list_studies(storage: str | None = None) -> list[StudySummary]:
    """Every study in the database with its trial counts per state."""
    with reading(storage) as engine:
        return queries.list_studies(engine)


def get_trial(study: str, number: int, storage: str | None = None) -> TrialRecord:
    """One trial with its parameters, score parts and per-epoch curves."""
    with reading(storage) as engine:
        return queries.get_trial(engine, study, number)
