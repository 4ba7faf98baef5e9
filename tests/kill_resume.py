"""The kill -9 scenario several tests share: kill a sweep process once a trial has checkpointed,
run it again, and check that the killed trial was retried from its checkpoint, losing nothing."""

from __future__ import annotations

import subprocess
import time
from typing import Callable

import optuna
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gapsweep.storage import artifacts
from gapsweep.storage.backend import Backend

#: The checkpoints a study's index holds now, bytes read back from the study's store.
Checkpoints = Callable[[], list[artifacts.Artifact]]


def sql_checkpoints(engine: Engine, study: str) -> Checkpoints:
    def read() -> list[artifacts.Artifact]:
        try:
            numbers = artifacts.trial_numbers(engine, study, artifacts.CHECKPOINT)
        except sa.exc.OperationalError:  # the tables are not there yet
            return []
        return [found for number in numbers if (found := artifacts.load(engine, study, number, artifacts.CHECKPOINT))]

    return read


def backend_checkpoints(backend: Backend, study: str) -> Checkpoints:
    def read() -> list[artifacts.Artifact]:
        numbers = backend.trial_numbers(study, [state.name for state in optuna.trial.TrialState])
        return [found for number in sorted(numbers) if (found := backend.load_artifact(study, number, artifacts.CHECKPOINT))]

    return read


def kill_at_first_checkpoint(process: subprocess.Popen, checkpoints: Checkpoints, timeout_s: float) -> artifacts.Artifact | None:
    """SIGKILL ``process`` as soon as one of the study's trials has a checkpoint past epoch 0; the
    checkpoint the index holds once the process is dead, or None if none came in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        for checkpoint in checkpoints():
            if checkpoint.epoch is not None and checkpoint.epoch >= 1:
                process.kill()  # kill -9 in the middle of the trial
                process.wait()
                # The worker may have replaced that checkpoint by the next epoch's before the signal
                # landed: what a resume finds is the index's entry once the process is gone.
                now = [c for c in checkpoints() if c.trial_number == checkpoint.trial_number]
                return now[0] if now else checkpoint
        time.sleep(0.2)
    return None


def assert_resumed(
    storage: str | optuna.storages.BaseStorage, checkpoints: Checkpoints, study: str, killed: artifacts.Artifact, epochs: int
) -> None:
    """Both trials complete; the killed one failed once its heartbeat stopped and its retry kept
    its parameters, resumed from the checkpoint, and recorded curves of all ``epochs``; no
    checkpoint is left in the index."""
    trials = optuna.load_study(study_name=study, storage=storage).trials
    assert [t.state.name for t in trials].count("COMPLETE") == 2
    assert trials[0].state == optuna.trial.TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.trial_number]
    assert retry.params == trials[0].params and retry.user_attrs["resumed_from_epoch"] >= killed.epoch
    assert len(retry.user_attrs["curve.val_loss"]) == epochs  # the curves stay whole across the kill
    assert not checkpoints()
