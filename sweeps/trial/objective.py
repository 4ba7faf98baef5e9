"""The Optuna objective: hypermodel → trainer → score, recorded on the trial.

A trial records its searched values as Optuna params and everything else as user attributes in
Optuna's own tables (so Optuna's CLI and dashboard read them), under the keys
``gapsweep.storage.trial_keys`` defines: score parts at the restored epoch, the score's noise
and chance-level guard, per-epoch curves, why it stopped, where it ran and how to reproduce it.
The per-example val losses at the restored epoch go to gapsweep's own records beside Optuna's
(``gapsweep.storage.backend``), for the paired selection rule of ``best``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import optuna

from gapsweep import checks
from gapsweep.errors import ConfigError
from gapsweep.storage import queries, trial_keys
from gapsweep.search_spaces.hypermodel import Hypermodel
from gapsweep.storage.artifact_store import ArtifactStore
from gapsweep.storage.backend import Backend
from gapsweep.storage.optuna_tables import set_user_attrs, trial_system_attrs
from gapsweep.sweeps.trial.checkpoints import CheckpointStore
from gapsweep.sweeps.data.datasets import Splits
from gapsweep.sweeps.trial.models import ModelKeeper, held_out_metrics
from gapsweep.sweeps.trial.repro import record
from gapsweep.sweeps.data.cv import k_folds
from gapsweep.sweeps.trial.score import DEFAULT_KAPPA, Score, Scoring, best_score, mean_score
from gapsweep.sweeps.trial.runtime import fresh_session
from gapsweep.sweeps.trial.trainer import Curves, TrainingDiverged, TrainResult, mean_curves, start_from, train


@dataclass(frozen=True)
class ObjectiveSettings:
    """How a trial is scored (the score's name, gap penalty λ and bound κ, or a gap constraint,
    early stopping's patience, cross-validation) and how many of the best trials keep their
    trained model."""

    gap_penalty: float = 1.0
    #: ``bounded`` (val + min(λ·gap, κ·SE), chance-level models last) or ``additive`` (val + λ·gap).
    score: str = "bounded"
    #: κ: the bounded penalty moves a score by at most κ standard errors of its val loss.
    kappa: float = DEFAULT_KAPPA
    patience: int = 5
    keep_models: int = 3
    #: Instead of (or beside) the penalty: trials whose gap exceeds this are infeasible.
    max_gap: float | None = None
    #: k > 1 scores each trial by k-fold cross-validation over the training and val rows together.
    cv: int = 0
    #: Minimize (val loss, gap) together: the study keeps a Pareto front, and Optuna refuses
    #: ``trial.report`` in such studies, so trials run with early stopping only (no pruning).
    multi_objective: bool = False

    def __post_init__(self) -> None:
        self.scoring  # Scoring refuses an unknown score, and a gap_penalty or kappa that is no number >= 0
        checks.whole("patience", self.patience, 1)
        checks.whole("keep_models", self.keep_models, 0)
        if self.max_gap is not None:
            checks.number("max_gap", self.max_gap)
        if self.cv:
            checks.whole("cv", self.cv, 2)
        if not isinstance(self.multi_objective, bool):
            raise ConfigError(f"multi_objective must be true or false, got {self.multi_objective!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def scoring(self) -> Scoring:
        return Scoring(self.score, self.gap_penalty, self.kappa)


class Objective:
    """Callable handed to ``study.optimize``; one instance serves every trial of a worker."""

    def __init__(
        self,
        hypermodel: Hypermodel,
        splits: Splits,
        settings: ObjectiveSettings,
        seed: int,
        keeper: ModelKeeper | None = None,
        *,
        backend: Backend | None = None,
        artifact_store: ArtifactStore | None = None,
        on_start: Callable[[], None] | None = None,
        start_weights: Callable[[Splits], Sequence[np.ndarray]] | None = None,
    ) -> None:
        """``backend`` keeps gapsweep's records of a trial: checkpoints, and the per-example val
        losses of complete trials; ``artifact_store`` holds the checkpoints' bytes (None: the
        store the study was launched with); ``start_weights`` gives the output weights the
        linear start trial begins from on the splits it trains on (the reference fitted on their
        training rows; called when that trial runs)."""
        self.hypermodel = hypermodel
        self.splits = splits
        self.settings = settings
        self.seed = seed
        self.keeper = keeper
        self.backend = backend
        self.artifact_store = artifact_store
        self.on_start = on_start
        self.start_weights = start_weights
        #: The number of the trial this objective ran last (to requeue it after a database error).
        self.last_trial: int | None = None

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        self.last_trial = trial.number
        if self.on_start is not None:
            self.on_start()
        retry = _retry_attrs(trial)
        # A retried trial trains with its original trial's seed, so a resumed run matches.
        seed = self.seed + int(retry.get("failed_trial", trial.number))
        # Written with the fixed values once the first model is built: one transaction, not two.
        start = {trial_keys.WORKER: f"{socket.gethostname()}:{os.getpid()}", trial_keys.REPRO: record(seed, self.splits)}
        attrs: dict[str, Any] = {}  # what the finished trial records, written in one transaction
        if self.settings.cv:
            score, curves, losses = self._cross_validate(trial, seed, attrs, start)
            model = None
        else:
            checkpoints = self._checkpoints(trial, retry.get("retry_history", []))
            curves = Curves()
            on_prune = functools.partial(self._constrain_pruned, trial, curves)
            with _recorded(trial, curves, checkpoints, attrs, on_prune=on_prune):
                result = self._fit(
                    trial, self.splits, seed, curves, record=start, checkpoints=checkpoints,
                    prune=not self.settings.multi_objective, initial=self._initial(trial, self.splits),
                )
            score, model, losses = result.score, result.model, result.val_losses
        if self.backend is not None and len(losses):
            self.backend.save_val_losses(trial.study.study_name, trial.number, losses.tolist(), epoch=score.epoch)
        scored = _score_attrs(score, curves, self.settings)
        set_user_attrs(trial, {**scored, **attrs})  # attrs last: under cv, the epochs its folds ran
        self._constrain(trial, score)
        # Models are ranked by the study's first value: the score, or val loss when multi-objective.
        rank = score.val_loss if self.settings.multi_objective else score.value
        standing = queries.Standing(scored.get(trial_keys.FEASIBLE) is False, rank, trial.number)
        if self.keeper is not None and self.keeper.qualifies(standing):
            if model is None:  # cross-validated: the kept model trains on all training data
                model = self._fit(trial, self.splits, seed, Curves(), initial=self._initial(trial, self.splits)).model
            meta = {
                "params": {**trial.params, **_fixed(trial)},
                "score": score.value,
                "val_loss": score.val_loss,
                "train_loss": score.train_loss,
                "gap": score.gap,
                "best_epoch": score.epoch,
                trial_keys.PRIOR_LOSS: score.prior_loss,
                trial_keys.CHANCE_LEVEL: score.chance_level,
                **held_out_metrics(model, self.splits),
            }
            self.keeper.offer(standing, model, meta, self.splits.preprocessing)
        if self.settings.multi_objective:
            return score.val_loss, score.gap
        return score.value

    def _initial(self, trial: optuna.Trial, splits: Splits) -> Sequence[np.ndarray] | None:
        """The output weights a linear start trial begins from when it trains on ``splits``: the
        reference fitted on their training rows (under ``cv``, each fold's own, so no fold starts
        from rows it holds out); None for every other trial."""
        if self.start_weights is None or not trial.user_attrs.get(trial_keys.LINEAR_START):
            return None
        return self.start_weights(splits)

    def _fit(
        self, trial: optuna.Trial, splits: Splits, seed: int, curves: Curves, *, record: dict[str, Any] | None = None,
        checkpoints: CheckpointStore | None = None, prune: bool = False, initial: Sequence[np.ndarray] | None = None,
    ) -> TrainResult:
        """Build and train one model. ``record``: user attributes to write together with the
        values the space fixed, which are known once the model is built (written even if the
        build fails, so a failed trial still names its worker)."""
        fresh_session(seed)
        fixed: dict[str, Any] = {}
        try:
            model, fit = self.hypermodel.build(trial, splits.task)
            fixed = fit.fixed
        finally:
            if record is not None:
                set_user_attrs(trial, {**record, **trial_keys.fixed_attrs(fixed)})
        if initial is not None:
            start_from(model, initial)
        return train(
            model, fit, splits,
            scoring=self.settings.scoring, patience=self.settings.patience, seed=seed,
            trial=trial if prune else None, curves=curves, checkpoints=checkpoints,
        )

    def _cross_validate(
        self, trial: optuna.Trial, seed: int, attrs: dict[str, Any], start: dict[str, Any]
    ) -> tuple[Score, Curves, "np.ndarray"]:
        """k folds of the training and val rows together; the pruner sees the running mean.

        The folds are drawn from the study's seed, so every trial sees the same folds and their
        out-of-fold losses are comparable row by row. Per-epoch pruning is off inside a fold; after
        fold i the running mean is reported at step i, to a pruner sized in folds (``launch._pruner``).
        Each fold's curves are stored (``curve.fold{i}.*``); the trial's own curves are the folds'
        mean over the epochs every fold ran, and its score parts are the folds' means. Its
        per-example losses are every row's out-of-fold loss, in row order (train rows, then val).
        """
        scores: list[Score] = []
        fold_curves: list[Curves] = []
        folds, held_out = k_folds(self.splits, self.settings.cv, self.seed)
        losses = np.zeros(sum(len(rows) for rows in held_out))
        for index, fold in enumerate(folds):
            curves = Curves()
            fold_curves.append(curves)
            with _recorded(trial, curves, None, attrs, prefix=trial_keys.fold_prefix(index)):
                result = self._fit(
                    trial, fold, seed + index, curves, record=start if index == 0 else None, initial=self._initial(trial, fold)
                )
                scores.append(result.score)
                losses[held_out[index]] = result.val_losses
                running = statistics.fmean(s.value for s in scores)
                if not self.settings.multi_objective:
                    trial.report(running, step=index)
                    # After the last fold there is nothing left to save: a trained trial completes.
                    if index < self.settings.cv - 1 and trial.should_prune():
                        raise optuna.TrialPruned(f"pruned after fold {index} with mean score {running:.4f}")
        attrs[trial_keys.FOLD_SCORES] = [s.value for s in scores]
        attrs[trial_keys.FOLD_BEST_EPOCHS] = [s.epoch for s in scores]
        # The trial's curves are the folds' mean over the epochs every fold ran; it ran as many
        # epochs as its longest fold, which holds the mean best epoch its score reports.
        attrs[trial_keys.EPOCHS_RUN] = max(len(curves.val_loss) for curves in fold_curves)
        attrs[trial_keys.FOLD_PRIORS] = [s.prior_loss for s in scores]  # for re-ranking fold by fold
        score = mean_score(scores, val_se=float(losses.std(ddof=1) / np.sqrt(len(losses))) if len(losses) > 1 else float("nan"))
        return score, mean_curves(fold_curves), losses

    def _constrain(self, trial: optuna.Trial, score: Score) -> None:
        """With ``max_gap``, tell Optuna's samplers the trial's gap − τ (feasible when <= 0)."""
        if self.settings.max_gap is not None:
            trial.set_constraint("gap", score.gap - self.settings.max_gap)

    def _constrain_pruned(self, trial: optuna.Trial, curves: Curves) -> None:
        """A pruned trial is judged by its best epoch so far."""
        self._constrain(trial, best_score(curves.train_loss, curves.val_loss, self.settings.scoring, se_curve=curves.val_se))

    def _checkpoints(self, trial: optuna.Trial, history: list[int]) -> CheckpointStore | None:
        if self.backend is None:
            return None
        return CheckpointStore(
            self.backend, trial.study.study_name, trial.number, retries_of=history, store=self.artifact_store
        )


def _finite_or_none(value: float) -> float | None:
    """JSON (Optuna's user attrs) has no NaN: an unknown standard error is stored as null."""
    return value if np.isfinite(value) else None


def _fixed(trial: optuna.Trial) -> dict[str, Any]:
    """Values a space fixes (recorded as ``fixed.*`` user attributes, not Optuna params)."""
    return trial_keys.fixed(trial.user_attrs)


def _retry_attrs(trial: optuna.Trial) -> dict[str, Any]:
    """What ``RetryHeartbeatStaleTrialCallback`` wrote on a retried trial (empty otherwise)."""
    attrs = trial_system_attrs(trial)
    return {key: attrs[key] for key in ("failed_trial", "retry_history") if key in attrs}


@contextlib.contextmanager
def _recorded(
    trial: optuna.Trial, curves: Curves, checkpoints: CheckpointStore | None, attrs: dict[str, Any], *,
    prefix: str = trial_keys.CURVE_PREFIX, on_prune: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Add the curves to ``attrs`` however training ends. A trial that stops here (pruned,
    diverged, interrupted) writes them at once with its reason, since no score follows; an
    ended one drops its checkpoints (a killed worker's stay for its retry)."""
    ended = stopped = True
    try:
        yield
        stopped = False
    except optuna.TrialPruned as pruned:
        attrs[trial_keys.PRUNE_REASON] = str(pruned)
        if on_prune is not None:
            on_prune()
        raise
    except TrainingDiverged as diverged:
        attrs[trial_keys.FAIL_REASON] = str(diverged)
        raise
    except BaseException as stopped_by:
        ended = False  # not finished: keep the checkpoint for a retry
        if isinstance(stopped_by, KeyboardInterrupt):
            attrs[trial_keys.FAIL_REASON] = f"{trial_keys.INTERRUPTED}: stopped at once (a second Ctrl-C or SIGTERM); queued again"
        raise
    finally:
        if checkpoints is not None and checkpoints.resumed_epoch is not None:
            attrs[trial_keys.RESUMED_FROM_EPOCH] = checkpoints.resumed_epoch
        attrs.update(_curve_attrs(curves, prefix))
        if stopped:
            set_user_attrs(trial, attrs)
        if checkpoints is not None and ended:
            checkpoints.clear()


def _curve_attrs(curves: Curves, prefix: str = trial_keys.CURVE_PREFIX) -> dict[str, Any]:
    attrs: dict[str, Any] = {trial_keys.curve_key(name, prefix): list(values) for name, values in curves.to_dict().items()}
    if prefix == trial_keys.CURVE_PREFIX:
        attrs[trial_keys.EPOCHS_RUN] = len(curves.val_loss)
    return attrs


def _score_attrs(score: Score, curves: Curves, settings: ObjectiveSettings) -> dict[str, Any]:
    attrs = _curve_attrs(curves) if settings.cv else {}  # the folds' mean curves
    attrs.update({
        trial_keys.SCORE: score.value, trial_keys.VAL_LOSS: score.val_loss, trial_keys.TRAIN_LOSS: score.train_loss,
        trial_keys.GAP: score.gap, trial_keys.GAP_PENALTY: score.penalty, trial_keys.BEST_EPOCH: score.epoch,
        trial_keys.SCORE_KIND: score.kind, trial_keys.KAPPA: score.kappa, trial_keys.VAL_SE: _finite_or_none(score.val_se),
        trial_keys.RAW_PENALTY: score.raw_penalty, trial_keys.APPLIED_PENALTY: score.applied_penalty,
        trial_keys.PRIOR_LOSS: score.prior_loss, trial_keys.CHANCE_LEVEL: score.chance_level,
    })
    if settings.max_gap is not None:
        attrs[trial_keys.FEASIBLE] = score.gap <= settings.max_gap
    if curves.val_accuracy and score.epoch < len(curves.val_accuracy):
        attrs[trial_keys.VAL_ACCURACY] = curves.val_accuracy[score.epoch]
    return attrs
