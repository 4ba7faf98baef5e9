"""The score: the one number a trial is ranked by, and early stopping and pruning watch.

Two scores, by name (``ObjectiveSettings.score``):

``bounded`` (the default) — the gap penalty, bounded by what the validation data can resolve:

    score = val + min(λ · gap, κ · SE),     gap = max(0, val − train)

where SE = sd(per-example val loss) / √n is the standard error of this epoch's val loss. The
penalty still ranks a memorizer below a generalizer whose val loss is statistically the same, but
it can never move a trial by more than κ standard errors, so it cannot buy a worse val loss: a
trial with a high train loss (one that has not learned yet) no longer wins on a small gap. The
default κ = 0.5 (``DEFAULT_KAPPA``) lets the gap reorder only trials whose val losses lie within
half an SE of each other. κ = 1, the margin of the one-standard-error rule, was measured first: it
cost 4–6 % test loss on data with val splits of 50–120 rows, because early stopping watches the
score and, once the gap exceeds the bound, each later epoch had to beat the earlier one by its SE
change; κ = 0.5 removed that cost (docs/selection.md, docs/benchmarks.md). A larger κ lets the
gap matter more (κ → ∞ is the additive score), κ = 0 or λ = 0 is plain val loss.

It also guards against chance-level models: a model whose val loss is no better than the prior's
(train-set class frequencies, or the train mean for regression, measured on the val rows) scores
above the prior's loss, and a model that beats the prior scores at most the prior's loss. So every
trial that beats the prior ranks before every trial that does not, and since this is the value
Optuna stores, ``optuna best-trial`` and ``gapsweep best`` name the same trial.

``additive`` — the earlier score, kept for comparison: score = val + λ · gap, with no bound and
no guard. When val > train it equals (1 + λ)·val − λ·train, so it *rewards a high train loss*;
measured, it picked models with higher test loss than plain val-loss selection (docs/selection.md).

Both losses are *pure* (no L2 term) and the train loss is measured in inference mode (no dropout
noise), so the gap compares like with like. A negative gap (val below train) costs nothing.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Sequence

from gapsweep import checks
from gapsweep.errors import ConfigError

SCORES = ("bounded", "additive")
#: κ: the penalty moves a trial's score by at most half a standard error of its val loss.
DEFAULT_KAPPA = 0.5


@dataclass(frozen=True)
class Scoring:
    """How an epoch is scored: the score's name, λ and (for ``bounded``) κ."""

    kind: str = "bounded"
    penalty: float = 1.0
    kappa: float = DEFAULT_KAPPA

    def __post_init__(self) -> None:
        if self.kind not in SCORES:
            raise ConfigError(f"unknown score '{self.kind}'; use one of {', '.join(SCORES)}")
        checks.number("gap_penalty", self.penalty)
        checks.number("kappa", self.kappa)


def as_scoring(scoring: "Scoring | float") -> Scoring:
    """A bare number is λ of the additive score (the arithmetic of stored studies and fakes)."""
    return scoring if isinstance(scoring, Scoring) else Scoring("additive", float(scoring))


def gap(train_loss: float, val_loss: float) -> float:
    """How far val loss sits above train loss; zero when it does not."""
    return max(0.0, val_loss - train_loss)


def gap_score(train_loss: float, val_loss: float, penalty: float) -> float:
    """The additive score ``val_loss + penalty · gap``; NaN in, NaN out."""
    return evaluate(train_loss, val_loss, Scoring("additive", penalty)).value


@dataclass(frozen=True)
class Score:
    """A trial's score with its parts, taken at one epoch (0-based).

    ``raw_penalty`` is λ·gap, ``applied_penalty`` what the score added (the bounded score caps it
    at κ·``val_se``); ``chance_level`` is whether the val loss is no better than ``prior_loss``.
    """

    value: float
    val_loss: float
    train_loss: float
    gap: float
    penalty: float
    epoch: int
    val_se: float = math.nan
    raw_penalty: float = 0.0
    applied_penalty: float = 0.0
    prior_loss: float | None = None
    chance_level: bool = False
    kind: str = "additive"
    kappa: float = DEFAULT_KAPPA

    def to_dict(self) -> dict[str, float | int | bool | str | None]:
        return asdict(self)


def evaluate(
    train_loss: float, val_loss: float, scoring: Scoring, *, se: float = math.nan,
    prior_loss: float | None = None, epoch: int = 0,
) -> Score:
    """Score one epoch. Without a finite ``se`` the bound is unknown and the penalty is not capped;
    without ``prior_loss`` there is no chance-level guard. NaN losses give a NaN score."""
    raw = scoring.penalty * gap(train_loss, val_loss) if not math.isnan(train_loss) and not math.isnan(val_loss) else math.nan
    applied = raw
    if scoring.kind == "bounded" and math.isfinite(se):
        applied = min(raw, scoring.kappa * se)
    value = val_loss + applied
    chance = prior_loss is not None and math.isfinite(prior_loss) and val_loss >= prior_loss
    if scoring.kind == "bounded" and prior_loss is not None and math.isfinite(prior_loss) and not math.isnan(value):
        # Every model that beats the prior ranks before every model that does not.
        value = max(value, math.nextafter(prior_loss, math.inf)) if chance else min(value, prior_loss)
    return Score(
        value=value, val_loss=val_loss, train_loss=train_loss, gap=gap(train_loss, val_loss),
        penalty=scoring.penalty, epoch=epoch, val_se=se, raw_penalty=raw, applied_penalty=applied,
        prior_loss=prior_loss, chance_level=bool(chance), kind=scoring.kind, kappa=scoring.kappa,
    )


def score_at(
    train_curve: Sequence[float], val_curve: Sequence[float], scoring: "Scoring | float", epoch: int, *,
    se_curve: Sequence[float] | None = None, prior_loss: float | None = None,
) -> Score:
    """The score of one epoch of stored curves (``se_curve`` missing: an unbounded penalty)."""
    se = se_curve[epoch] if se_curve and epoch < len(se_curve) else math.nan
    return evaluate(
        train_curve[epoch], val_curve[epoch], as_scoring(scoring), se=se, prior_loss=prior_loss, epoch=epoch
    )


def best_score(
    train_curve: Sequence[float], val_curve: Sequence[float], scoring: "Scoring | float", *,
    se_curve: Sequence[float] | None = None, prior_loss: float | None = None,
) -> Score:
    """The score at the epoch that minimizes it: the epoch early stopping restores.

    Ties go to the earliest epoch, as Keras' ``EarlyStopping`` keeps the first best.
    """
    if not train_curve or len(train_curve) != len(val_curve):
        raise ValueError("train and val curves must be non-empty and of equal length")
    scores = [
        score_at(train_curve, val_curve, scoring, epoch, se_curve=se_curve, prior_loss=prior_loss)
        for epoch in range(len(val_curve))
    ]
    finite = [s for s in scores if math.isfinite(s.value)]
    if not finite:
        raise ValueError("no epoch has a finite score")
    return min(finite, key=lambda s: (s.value, s.epoch))


def mean_score(folds: Sequence[Score], *, val_se: float) -> Score:
    """A cross-validated trial's score: the means of its folds' scores, each fold taken at its own
    epoch; ``val_se`` comes from every row's out-of-fold loss. The prior is the folds' mean (none
    when a fold had none), and the chance-level flag compares the mean val loss with it."""
    first = folds[0]
    priors = [fold.prior_loss for fold in folds if fold.prior_loss is not None]
    prior = statistics.fmean(priors) if len(priors) == len(folds) else None
    val_loss = statistics.fmean(fold.val_loss for fold in folds)
    return Score(
        value=statistics.fmean(fold.value for fold in folds),
        val_loss=val_loss,
        train_loss=statistics.fmean(fold.train_loss for fold in folds),
        gap=statistics.fmean(fold.gap for fold in folds),
        penalty=first.penalty,
        epoch=round(statistics.fmean(fold.epoch for fold in folds)),
        val_se=val_se,
        raw_penalty=statistics.fmean(fold.raw_penalty for fold in folds),
        applied_penalty=statistics.fmean(fold.applied_penalty for fold in folds),
        prior_loss=prior,
        chance_level=prior is not None and val_loss >= prior,
        kind=first.kind,
        kappa=first.kappa,
    )
