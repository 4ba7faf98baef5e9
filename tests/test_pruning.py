"""The median pruner compares against a snapshot of the completed trials, read once per trial."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from gapsweep.sweeps.trial import pruning
from gapsweep.sweeps.trial.pruning import CompletedSnapshot, make_pruner

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(url: str, finished: list[list[float]]) -> optuna.Study:
    """A study with one completed trial per curve of losses (one value per epoch)."""
    study = optuna.create_study(storage=url, study_name="pruning")
    for curve in finished:
        trial = study.ask()
        for epoch, value in enumerate(curve):
            trial.report(value, epoch)
        study.tell(trial, curve[-1])
    return study


def _running(study: optuna.Study) -> optuna.trial.FrozenTrial:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))[-1]


def test_the_snapshot_prunes_exactly_as_the_median_pruner(any_url):
    curves = [[1.0 - 0.05 * e + 0.01 * t for e in range(8)] for t in range(5)]
    study = _study(any_url, curves)
    median, snapshot = optuna.pruners.MedianPruner(3, 2), make_pruner("median", max_epochs=8)
    assert isinstance(snapshot, CompletedSnapshot)
    running = study.ask()
    decisions = []
    for epoch, value in enumerate([0.99, 0.96, 0.93, 0.90, 0.95, 0.97, 1.2, 1.3]):
        running.report(value, epoch)
        frozen = _running(study)
        decisions.append(bool(median.prune(study, frozen)))
        assert snapshot.prune(study, frozen) == decisions[-1], f"epoch {epoch}"
    assert decisions[:2] == [False, False] and decisions[-1]  # both outcomes were compared


def test_a_trial_reads_the_completed_trials_once(sqlite_url):
    study = _study(sqlite_url, [[1.0, 0.9, 0.8]] * 4)
    pruner = make_pruner("median", max_epochs=3)
    running = study.ask()
    running.report(0.5, 0)
    pruner.prune(study, _running(study))
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        for epoch in (1, 2):
            frozen = _running(study)  # read before counting: what is counted is the pruner's own reads
            statements.clear()
            pruner.prune(study, frozen)
            assert statements == []
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)


@pytest.mark.parametrize("max_age_s, pruned", [(3600.0, False), (0.0, True)])
def test_a_trial_completed_meanwhile_joins_once_the_snapshot_ages(sqlite_url, monkeypatch, max_age_s, pruned):
    monkeypatch.setattr(pruning, "SNAPSHOT_MAX_AGE_S", max_age_s)
    study = _study(sqlite_url, [[0.5, 0.4, 0.3]] * 2)  # two: fewer than the pruner's 3 startup trials
    pruner = make_pruner("median", max_epochs=3)
    running = study.ask()
    for epoch in range(3):
        running.report(5.0, epoch)
    assert pruner.prune(study, _running(study)) is False
    other = study.ask()  # another worker's trial ends: now there are 3 to compare against
    for epoch, value in enumerate([0.5, 0.4, 0.3]):
        other.report(value, epoch)
    study.tell(other, 0.3)
    assert pruner.prune(study, _running(study)) is pruned
