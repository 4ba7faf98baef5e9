"""Create, resume and look up studies by name.

gapsweep keeps a study's configuration as one study user attribute (``gapsweep.config``), inside
Optuna's schema, so the study carries everything a later launch or worker needs; the linear
reference fitted when the study was created sits beside it (``gapsweep.reference``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import optuna

from gapsweep.errors import StudyNotFoundError

CONFIG_ATTR = "gapsweep.config"
REFERENCE_ATTR = "gapsweep.reference"

#: Trials that use up the budget. A failed trial does not: its parameters may be retried.
COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def room_for_new(counts: Mapping[str, int], budget: int) -> bool:
    """Whether the budget allows a new trial beside the finished and running ones (``counts``:
    trials per state name); queued trials are run whatever the budget."""
    return sum(counts[state.name] for state in COUNTED) + counts["RUNNING"] < budget



def create_or_load(
    name: str,
    storage: optuna.storages.BaseStorage,
    *,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    directions: list[str] | None = None,
) -> optuna.Study:
    """The study ``name``, created on first use and resumed afterwards (quietly)."""
    with quiet_optuna():
        return optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            directions=directions or ["minimize"],
            load_if_exists=True,
        )


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs "A new study created" (or "Using an existing study") at INFO, a line that a
    script's output would carry before gapsweep's own."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def stored_config(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(CONFIG_ATTR)


def require_study(name: str, storage: optuna.storages.BaseStorage) -> None:
    """Raise ``StudyNotFoundError`` naming the studies that do exist."""
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if name not in names:
        known = ", ".join(sorted(names)) or "none yet"
        raise StudyNotFoundError(f"no study named '{name}' in this database (studies: {known})")
