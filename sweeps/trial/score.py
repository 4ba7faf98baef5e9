"""The gap-penalized score: the one number a trial is ranked by.

    score = val_loss + λ · max(0, val_loss − train_loss)

Both losses are *pure* (no L2 term) and the train loss is measured in inference mode (no dropout
noise), so the gap compares like with like. A trial whose low val loss comes with a far lower
train loss has memorized; the penalty ranks it below one that generalizes. λ = 0 gives the plain
val-loss objective. A negative gap (val below train) is no evidence of overfitting and costs
nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence


def gap(train_loss: float, val_loss: float) -> float:
    """How far val loss sits above train loss; zero when it does not."""
    return max(0.0, val_loss - train_loss)


def gap_score(train_loss: float, val_loss: float, penalty: float) -> float:
    """``val_loss + penalty · gap``; NaN in, NaN out, so a diverged epoch never looks good."""
    if math.isnan(train_loss) or math.isnan(val_loss):
        return math.nan
    return val_loss + penalty * gap(train_loss, val_loss)


@dataclass(frozen=True)
class Score:
    """A trial's score with its parts, taken at one epoch (0-based)."""

    value: float
    val_loss: float
    train_loss: float
    gap: float
    penalty: float
    epoch: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def score_at(train_curve: Sequence[float], val_curve: Sequence[float], penalty: float, epoch: int) -> Score:
    train, val = train_curve[epoch], val_curve[epoch]
    return Score(
        value=gap_score(train, val, penalty),
        val_loss=val,
        train_loss=train,
        gap=gap(train, val),
        penalty=penalty,
        epoch=epoch,
    )


def best_score(train_curve: Sequence[float], val_curve: Sequence[float], penalty: float) -> Score:
    """The score at the epoch that minimizes it: the epoch early stopping restores.

    Ties go to the earliest epoch, as Keras' ``EarlyStopping`` keeps the first best.
    """
    if not train_curve or len(train_curve) != len(val_curve):
        raise ValueError("train and val curves must be non-empty and of equal length")
    scores = [gap_score(t, v, penalty) for t, v in zip(train_curve, val_curve)]
    finite = [i for i, s in enumerate(scores) if math.isfinite(s)]
    if not finite:
        raise ValueError("no epoch has a finite score")
    epoch = min(finite, key=lambda i: scores[i])
    return score_at(train_curve, val_curve, penalty, epoch)
