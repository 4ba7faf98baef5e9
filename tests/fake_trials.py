"""Gapsweep-style trials built with Optuna alone: the user attrs the objective writes, no Keras.

Reports, diagnoses and the dashboard only read what is stored, so a study of constructed trials
tests them in milliseconds where a trained one takes minutes.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from gapsweep.sweeps.trial.score import Scoring, best_score, score_at

DISTRIBUTIONS = {
    "l2": FloatDistribution(1e-6, 1e-2, log=True),
    "dropout": FloatDistribution(0.0, 0.5),
    "units": IntDistribution(8, 256, log=True),
}


def gapsweep_trial(
    params: dict[str, Any],
    train: Sequence[float],
    val: Sequence[float],
    *,
    state: TrialState = TrialState.COMPLETE,
    penalty: float = 1.0,
    score: str = "additive",
    se: Sequence[float] | None = None,
) -> FrozenTrial:
    """A trial as ``gapsweep.sweeps.trial.objective`` stores it: curves always, score parts when
    complete. ``se`` is the per-epoch val-loss SE curve (the bounded score caps its penalty by it)."""
    scoring = Scoring(score, penalty)
    scores = {epoch: score_at(train, val, scoring, epoch, se_curve=se).value for epoch in range(len(val))}
    attrs: dict[str, Any] = {"epochs_run": len(val), "curve.train_loss": list(train), "curve.val_loss": list(val)}
    if se is not None:
        attrs["curve.val_se"] = list(se)
    value = None
    if state == TrialState.COMPLETE:
        best = best_score(train, val, scoring, se_curve=se)
        value = best.value
        attrs.update(
            score=best.value, val_loss=best.val_loss, train_loss=best.train_loss, gap=best.gap,
            gap_penalty=penalty, best_epoch=best.epoch, score_kind=score, kappa=best.kappa,
            val_se=best.val_se if se is not None else None, raw_penalty=best.raw_penalty,
            applied_penalty=best.applied_penalty, prior_loss=None, chance_level=False,
        )
    elif state == TrialState.PRUNED:
        value = scores[len(val) - 1]
        attrs["prune_reason"] = f"pruned at epoch {len(val) - 1} with score {value:.4f}"
    else:
        attrs["fail_reason"] = "loss became non-finite"
    return optuna.trial.create_trial(
        params=params,
        distributions={name: DISTRIBUTIONS[name] for name in params},
        value=value,
        state=state,
        user_attrs=attrs,
        intermediate_values={epoch: s for epoch, s in scores.items() if math.isfinite(s)},
    )


#: Six trials covering every state and diagnosis the report shows.
MIXED = [
    ({"l2": 1e-4, "dropout": 0.1, "units": 32}, [1.0, 0.5, 0.32, 0.3, 0.3], [1.0, 0.55, 0.38, 0.36, 0.37]),
    ({"l2": 1e-6, "dropout": 0.0, "units": 256}, [1.0, 0.4, 0.1, 0.03, 0.01], [1.0, 0.62, 0.45, 0.5, 0.6]),
    ({"l2": 1e-2, "dropout": 0.5, "units": 8}, [2.3, 2.25, 2.2, 2.18, 2.17], [2.3, 2.26, 2.21, 2.2, 2.19]),
    ({"l2": 1e-3, "dropout": 0.3, "units": 64}, [1.2, 0.7, 0.5, 0.45, 0.44], [1.25, 0.75, 0.52, 0.5, 0.49]),
]
PRUNED = ({"l2": 5e-3, "dropout": 0.4, "units": 16}, [2.0, 1.8, 1.6], [2.0, 1.85, 1.7])
FAILED = ({"l2": 1e-6, "dropout": 0.0, "units": 128}, [1.0, float("nan")], [1.0, float("nan")])


def add_mixed_trials(study: optuna.Study) -> None:
    """Trials 0–3 complete, 4 pruned, 5 failed."""
    for params, train, val in MIXED:
        study.add_trial(gapsweep_trial(params, train, val))
    study.add_trial(gapsweep_trial(*PRUNED, state=TrialState.PRUNED))
    study.add_trial(gapsweep_trial(*FAILED, state=TrialState.FAIL))
