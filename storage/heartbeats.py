"""Crash safety through Optuna's heartbeats: a running trial whose worker stopped beating is
failed and its parameters are queued again, so a killed worker loses no trial."""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator

import optuna
from optuna.trial import FrozenTrial
from sqlalchemy.engine import Engine

from gapsweep.storage import queries, trial_keys
from gapsweep.storage.optuna_tables import LightHeartbeatStorage, reaping, set_finished_trial_user_attrs
from gapsweep.storage.engine import heartbeat_settings, open_storage


def open_crash_safe_storage(
    url: str | None, kind: type[LightHeartbeatStorage] = LightHeartbeatStorage
) -> optuna.storages.RDBStorage:
    """A storage (of class ``kind``) with heartbeats on and stale trials queued again (at most 3
    times each)."""
    interval, grace = heartbeat_settings()
    with quiet_experimental():
        return open_storage(
            url, kind=kind, heartbeat_interval=interval, grace_period=grace,
            heartbeat_stale_trial_callback=_Explained(retry_stale_trials(), grace),
        )


def retry_stale_trials() -> Callable[[optuna.Study, FrozenTrial], None]:
    """Optuna's callback that queues a stale trial's parameters again, at most 3 times each."""
    with quiet_experimental():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3, inherit_intermediate_values=True)


class _Explained:
    """Optuna's stale-trial callback, after recording on the failed trial why it failed: Optuna
    fails it without a word, and ``show`` or ``trials --state fail`` would give no reason."""

    def __init__(self, retry: Callable[[optuna.Study, FrozenTrial], None], grace: int) -> None:
        self.retry = retry
        self.reason = (
            f"its worker sent no heartbeat for over {grace} s (killed, crashed or cut off from the database); "
            "queued again (up to 3 times)"
        )

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        set_finished_trial_user_attrs(study, trial, {trial_keys.FAIL_REASON: self.reason})
        self.retry(study, trial)


def reap(study: optuna.Study, engine: Engine) -> None:
    """Fail trials whose worker stopped sending heartbeats, and queue their parameters again.

    The only place stale trials are looked for (Optuna's own look before every trial is skipped,
    ``optuna_tables.LightHeartbeatStorage``): a claim calls this once a heartbeat interval, and
    ``gapsweep reap`` for a study whose last worker died.
    A trial whose worker died before its first heartbeat counts as last seen when it started.
    """
    queries.backdate_silent_trials(engine, study.study_name, older_than_s=heartbeat_settings()[1])
    with quiet_experimental(), reaping(study):
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Heartbeats and retries are stable in practice but still flagged experimental by Optuna."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
