"""The Optuna objective: space → builder → trainer → score, recorded on the trial.

What a trial records (all in Optuna's own tables, so Optuna's CLI and dashboard read it):
- the searched values as Optuna params (fixed values as ``fixed.*`` user attributes);
- ``score``, ``val_loss``, ``train_loss``, ``gap``, ``gap_penalty``, ``best_epoch``,
  ``epochs_run`` and, for classifiers, ``val_accuracy`` as user attributes;
- ``curve.train_loss``, ``curve.val_loss`` (and ``curve.val_accuracy``): one value per epoch;
- ``fail_reason`` when training diverged, ``prune_reason`` when the pruner stopped it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import optuna

from search_spaces.space import SearchSpace
from sweeps.data import Splits
from sweeps.models import ModelKeeper, held_out_metrics
from sweeps.trainer import Curves, TrainingDiverged, train


@dataclass(frozen=True)
class ObjectiveSettings:
    """How a trial is scored (gap penalty λ, early stopping's patience) and how many of the
    best trials keep their trained model in the database."""

    gap_penalty: float = 1.0
    patience: int = 5
    keep_models: int = 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Objective:
    """Callable handed to ``study.optimize``; one instance serves every trial of a worker."""

    def __init__(
        self, space: SearchSpace, splits: Splits, settings: ObjectiveSettings, seed: int, keeper: ModelKeeper | None = None
    ) -> None:
        self.space = space
        self.splits = splits
        self.settings = settings
        self.seed = seed
        self.keeper = keeper

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.space.sample(trial)
        curves = Curves()
        try:
            result = train(
                params,
                self.splits,
                penalty=self.settings.gap_penalty,
                patience=self.settings.patience,
                seed=self.seed + trial.number,
                trial=trial,
                curves=curves,
            )
        except optuna.TrialPruned as pruned:
            _record_curves(trial, curves)
            trial.set_user_attr("prune_reason", str(pruned))
            raise
        except TrainingDiverged as diverged:
            _record_curves(trial, curves)
            trial.set_user_attr("fail_reason", str(diverged))
            raise
        _record_curves(trial, curves)
        score = result.score
        trial.set_user_attr("score", score.value)
        trial.set_user_attr("val_loss", score.val_loss)
        trial.set_user_attr("train_loss", score.train_loss)
        trial.set_user_attr("gap", score.gap)
        trial.set_user_attr("gap_penalty", score.penalty)
        trial.set_user_attr("best_epoch", score.epoch)
        if curves.val_accuracy:
            trial.set_user_attr("val_accuracy", curves.val_accuracy[score.epoch])
        if self.keeper is not None:
            meta = {
                "params": params,
                "score": score.value,
                "val_loss": score.val_loss,
                "train_loss": score.train_loss,
                "gap": score.gap,
                "best_epoch": score.epoch,
                **held_out_metrics(result.model, self.splits),
            }
            self.keeper.offer(trial.number, score.value, result.model, meta)
        return score.value


def _record_curves(trial: optuna.Trial, curves: Curves) -> None:
    trial.set_user_attr("epochs_run", len(curves.val_loss))
    for name, values in curves.to_dict().items():
        trial.set_user_attr(f"curve.{name}", values)
