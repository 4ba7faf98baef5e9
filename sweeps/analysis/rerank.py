"""Re-rank a finished study for another gap penalty or epoch rule, without training anything.

Every trial stores its per-epoch pure train and val losses, so the score of any λ at any epoch
is arithmetic on stored curves:

- ``epoch="best"``: the epoch that minimizes the new score (what early stopping would keep,
  within the epochs the trial actually ran);
- ``epoch="last"``: the last epoch the trial ran (what a run without restoring would keep).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from gapsweep.errors import ConfigError
from gapsweep.storage.queries import TrialRecord
from gapsweep.sweeps.trial.score import Score, best_score, score_at

EPOCH_RULES = ("best", "last")


@dataclass(frozen=True)
class Reranked:
    record: TrialRecord
    score: Score

    def summary(self) -> dict[str, Any]:
        """The trial's summary with the recomputed score parts; the stored score kept beside."""
        return {
            **self.record.summary(),
            "score": self.score.value,
            "val_loss": self.score.val_loss,
            "train_loss": self.score.train_loss,
            "gap": self.score.gap,
            "gap_penalty": self.score.penalty,
            "best_epoch": self.score.epoch,
            "stored_score": self.record.value,
        }


def rerank(records: Sequence[TrialRecord], *, penalty: float, epoch: str = "best") -> list[Reranked]:
    """Score each record's curves with ``penalty`` at the ``epoch`` rule; lowest first."""
    if epoch not in EPOCH_RULES:
        raise ConfigError(f"unknown epoch rule '{epoch}'; use one of {', '.join(EPOCH_RULES)}")
    if not math.isfinite(penalty) or penalty < 0:
        raise ConfigError(f"--gap-penalty must be a number >= 0, got {penalty}")
    ranked = []
    for record in records:
        train = record.attrs.get("curve.train_loss") or []
        val = record.attrs.get("curve.val_loss") or []
        if not train or len(train) != len(val):
            continue
        try:
            score = best_score(train, val, penalty) if epoch == "best" else score_at(train, val, penalty, len(val) - 1)
        except ValueError:  # no finite epoch: a diverged trial has no place in a ranking
            continue
        ranked.append(Reranked(record, score))
    return sorted(ranked, key=lambda item: (math.isnan(item.score.value), item.score.value, item.record.number))
