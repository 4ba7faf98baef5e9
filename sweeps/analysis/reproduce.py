"""Reproducibility: what a trial needs to be trained again, ``rerun`` that does it, and
``refit`` that trains its configuration once more on train + val rows.

Every trial records its seed, the data's fingerprint, the library versions, the device and the
determinism settings (user attribute ``repro``). ``rerun`` rebuilds the trial's model from the
study's stored configuration and the trial's parameters (an ``optuna.trial.FixedTrial`` stands
in for the live trial), retrains it with the recorded seed and compares the val loss.

On a CPU with gapsweep's single-threaded TensorFlow pools, the same seed gives the same weights;
``RERUN_TOLERANCE`` allows for floating-point noise across machines (oneDNN kernels differ by
CPU). On GPUs, reduction order varies and the match is looser unless op determinism is on.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import optuna

from gapsweep.storage import trial_keys
from gapsweep.errors import StudyNotFoundError
from gapsweep.storage.queries import TrialRecord
from gapsweep.storage.reader import get_trial, study_reference
from gapsweep.sweeps.data import datasets
from gapsweep.search_spaces.hypermodel import FitSettings
from gapsweep.sweeps.data.cv import k_folds
from gapsweep.sweeps.data.datasets import Splits
from gapsweep.sweeps.run.config import SweepConfig, stored_sweep
from gapsweep.sweeps.run.launch import load_hypermodel
from gapsweep.sweeps.run.reference import linear_weights
from gapsweep.sweeps.trial.runtime import fresh_session
from gapsweep.sweeps.trial.trainer import TrainResult, fit_epochs, start_from, train

if TYPE_CHECKING:
    import keras

#: Relative difference of val loss within which a rerun counts as a reproduction.
RERUN_TOLERANCE = 1e-3


def initial_weights(config: SweepConfig, record: TrialRecord, splits: Splits) -> list[np.ndarray] | None:
    """The output weights ``record``'s trial began from: for the linear start, the study's
    reference fitted on ``splits``' training rows (as the objective starts it on whatever rows it
    trains on, each fold's under ``cv``); None for every other trial."""
    if not record.attrs.get(trial_keys.LINEAR_START):
        return None
    reference = study_reference(config.study, config.storage)
    return linear_weights(splits, reference) if reference else None


def rebuild(
    config: SweepConfig, params: dict[str, Any], seed: int, splits: Splits, *, initial: Sequence[np.ndarray] | None = None
) -> tuple["keras.Model", FitSettings]:
    """The compiled, freshly seeded model of a trial of ``config`` with ``params``, and how it is
    fitted: the trial's own build, with an ``optuna.trial.FixedTrial`` for the live trial, from
    the trial's ``initial`` output weights where it had them (``initial_weights``)."""
    hypermodel = load_hypermodel(config, splits)
    fresh_session(seed)
    model, fit = hypermodel.build(optuna.trial.FixedTrial(params), splits.task)
    if initial is not None:
        start_from(model, initial)
    return model, fit


def retrain(
    config: SweepConfig, params: dict[str, Any], seed: int, splits: Splits, *, initial: Sequence[np.ndarray] | None = None
) -> TrainResult:
    """Train ``params`` again exactly as a trial of ``config`` would, without any study."""
    model, fit = rebuild(config, params, seed, splits, initial=initial)
    return train(
        model, fit, splits, scoring=config.objective.scoring, patience=config.objective.patience, seed=seed
    )


def refit(
    config: SweepConfig, params: dict[str, Any], seed: int, splits: Splits, *, epochs: int,
    initial: Sequence[np.ndarray] | None = None,
) -> "keras.Model":
    """Train ``params`` on the train and val rows together for ``epochs`` epochs, as
    scikit-learn's ``refit=True`` does after a search: the final model sees every labelled row
    the sweep had. No early stopping (no val rows remain); the test rows are never touched."""
    model, fit = rebuild(config, params, seed, splits, initial=initial)
    pooled = train_and_val(splits)
    return fit_epochs(model, fit, pooled.x_train, pooled.y_train, epochs=epochs, seed=seed)


def train_and_val(splits: Splits) -> Splits:
    """``splits`` with the val rows joined to the training rows: what a refit trains on (and
    what the linear start's reference is fitted on before a refit)."""
    return replace(
        splits, x_train=np.concatenate([splits.x_train, splits.x_val]), y_train=np.concatenate([splits.y_train, splits.y_val])
    )


@dataclass(frozen=True)
class Rerun:
    study: str
    trial: int
    recorded_val_loss: float
    rerun_val_loss: float
    recorded_fingerprint: str
    rerun_fingerprint: str
    #: The epoch the recorded trial resumed after, when a retry continued it from a checkpoint:
    #: its optimizer then restarted from saved state, so an uninterrupted rerun need not match.
    resumed_from_epoch: int | None = None

    @property
    def relative_difference(self) -> float:
        return abs(self.rerun_val_loss - self.recorded_val_loss) / max(abs(self.recorded_val_loss), 1e-12)

    @property
    def reproduced(self) -> bool:
        return self.recorded_fingerprint == self.rerun_fingerprint and self.relative_difference <= RERUN_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "trial": self.trial,
            "recorded_val_loss": self.recorded_val_loss,
            "rerun_val_loss": self.rerun_val_loss,
            "relative_difference": self.relative_difference,
            "tolerance": RERUN_TOLERANCE,
            "same_data": self.recorded_fingerprint == self.rerun_fingerprint,
            "resumed_from_epoch": self.resumed_from_epoch,
            "reproduced": self.reproduced,
        }


def rerun(study: str, number: int, storage: str | None = None, *, code_dir: str | None = None) -> Rerun:
    """Retrain trial ``number`` of ``study`` from its record and compare its val loss; a
    hypermodel is looked up in the project folder ``code_dir`` (None: the current folder)."""
    config = stored_sweep(study, storage, code_dir)
    trial = get_trial(study, number, storage)
    repro = trial.attrs.get(trial_keys.REPRO)
    if trial.state != "COMPLETE" or repro is None or trial.attrs.get(trial_keys.VAL_LOSS) is None:
        raise StudyNotFoundError(
            f"trial {number} of study '{study}' is {trial.state.lower()} or has no reproducibility record; "
            "rerun a complete trial"
        )
    splits = datasets.load(config.data, config.code_dir)
    params, seed = trial.summary()["params"], int(repro["seed"])
    # Under cv the recorded val loss is the mean over the study's folds, fold i trained with seed + i.
    folds = k_folds(splits, config.objective.cv, config.seed)[0] if config.objective.cv else [splits]
    val_loss = statistics.fmean(
        retrain(config, params, seed + index, fold, initial=initial_weights(config, trial, fold)).score.val_loss
        for index, fold in enumerate(folds)
    )
    recorded = float(trial.attrs[trial_keys.VAL_LOSS])
    resumed = trial.attrs.get(trial_keys.RESUMED_FROM_EPOCH)
    return Rerun(
        study, number, recorded, val_loss, str(repro["data_fingerprint"]), splits.fingerprint,
        resumed_from_epoch=int(resumed) if resumed is not None else None,
    )


