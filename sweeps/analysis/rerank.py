"""Re-rank a finished study for another gap penalty or epoch rule, without training anything.

Every trial stores its per-epoch pure train and val losses (and, since the bounded score, each
epoch's val-loss standard error and the prior's loss), so the score of any λ at any epoch is
arithmetic on stored curves. A study launched with the bounded score is re-ranked with the
bounded score (its κ, its SE curve); one without stored SE curves with the additive score:

- ``epoch="best"``: the epoch that minimizes the new score (what early stopping would keep,
  within the epochs the trial actually ran);
- ``epoch="last"``: the last epoch the trial ran (what a run without restoring would keep).

A cross-validated trial is re-scored fold by fold and its folds' scores averaged, as it was
scored when it ran (``score.mean_score``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from gapsweep.storage import trial_keys
from gapsweep.errors import ConfigError
from gapsweep.storage.queries import TrialRecord
from gapsweep.sweeps.trial.score import DEFAULT_KAPPA, Score, Scoring, best_score, mean_score, score_at

EPOCH_RULES = ("best", "last")


@dataclass(frozen=True)
class Reranked:
    record: TrialRecord
    score: Score

    def summary(self) -> dict[str, Any]:
        """The trial's summary with every score part recomputed at the new λ and epoch (none
        left from the stored score, so score = val loss + applied penalty holds); the stored
        score kept beside."""
        score = self.score
        return {
            **self.record.summary(),
            trial_keys.SCORE: score.value,
            trial_keys.VAL_LOSS: score.val_loss,
            trial_keys.TRAIN_LOSS: score.train_loss,
            trial_keys.GAP: score.gap,
            trial_keys.GAP_PENALTY: score.penalty,
            trial_keys.BEST_EPOCH: score.epoch,
            trial_keys.VAL_SE: None if math.isnan(score.val_se) else score.val_se,
            trial_keys.RAW_PENALTY: score.raw_penalty,
            trial_keys.APPLIED_PENALTY: score.applied_penalty,
            trial_keys.CHANCE_LEVEL: score.chance_level,
            trial_keys.SCORE_KIND: score.kind,
            trial_keys.KAPPA: score.kappa,
            "stored_score": self.record.value,
        }


def rerank(
    records: Sequence[TrialRecord], *, penalty: float, epoch: str = "best", score: str = "additive",
    kappa: float = DEFAULT_KAPPA,
) -> list[Reranked]:
    """Score each record's curves with ``penalty`` (λ of the ``score`` named, with ``kappa``) at the
    ``epoch`` rule; lowest first, trials that broke ``--max-gap`` last."""
    if epoch not in EPOCH_RULES:
        raise ConfigError(f"unknown epoch rule '{epoch}'; use one of {', '.join(EPOCH_RULES)}")
    if not math.isfinite(penalty) or penalty < 0:
        raise ConfigError(f"--gap-penalty must be a number >= 0, got {penalty}")
    scoring = Scoring(score, penalty, kappa)
    ranked = []
    for record in records:
        try:
            scored = _rescored(record, scoring, epoch)
        except ValueError:  # no finite epoch: a diverged trial has no place in a ranking
            continue
        if scored is not None:
            ranked.append(Reranked(record, scored))
    # As ``best`` ranks: trials that broke the study's --max-gap after every feasible one.
    return sorted(ranked, key=lambda item: (
        item.record.attrs.get(trial_keys.FEASIBLE) is False, math.isnan(item.score.value), item.score.value, item.record.number,
    ))


def _rescored(record: TrialRecord, scoring: Scoring, epoch: str) -> Score | None:
    """``record``'s score under ``scoring`` and the epoch rule; None without stored curves."""
    attrs = record.attrs
    folds = attrs.get(trial_keys.FOLD_SCORES)
    if folds:
        # Studies from before the folds' priors were stored: the trial's prior stands for each.
        priors = attrs.get(trial_keys.FOLD_PRIORS) or [attrs.get(trial_keys.PRIOR_LOSS)] * len(folds)
        scores = [
            score for index, prior in enumerate(priors)
            if (score := _curve_score(attrs, trial_keys.fold_prefix(index), scoring, epoch, prior)) is not None
        ]
        if len(scores) != len(priors):
            return None
        se = attrs.get(trial_keys.VAL_SE)
        return mean_score(scores, val_se=math.nan if se is None else float(se))
    return _curve_score(attrs, trial_keys.CURVE_PREFIX, scoring, epoch, attrs.get(trial_keys.PRIOR_LOSS))


def _curve_score(attrs: dict[str, Any], prefix: str, scoring: Scoring, epoch: str, prior: float | None) -> Score | None:
    """The score of the curves stored under ``prefix`` at the epoch rule; None without them."""
    train = attrs.get(trial_keys.curve_key("train_loss", prefix)) or []
    val = attrs.get(trial_keys.curve_key("val_loss", prefix)) or []
    if not train or len(train) != len(val):
        return None
    se = [math.nan if v is None else float(v) for v in attrs.get(trial_keys.curve_key("val_se", prefix)) or []]
    if epoch == "best":
        return best_score(train, val, scoring, se_curve=se, prior_loss=prior)
    return score_at(train, val, scoring, len(val) - 1, se_curve=se, prior_loss=prior)
