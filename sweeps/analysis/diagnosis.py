"""A per-trial diagnosis from its learning curves: did it overfit, underfit, fit well or diverge?

The score ranks trials; the diagnosis says *why* a trial looks the way it does, from its per-epoch
pure train and val losses (train measured in inference mode, so the two compare like with like).
The rule is scale-free — every threshold is a ratio of the trial's own losses — so it reads a
cross-entropy and a mean squared error the same way. The first rule that matches wins:

1. ``diverged``: a loss is NaN or infinite, or the last val loss is more than
   ``DIVERGED_RATIO`` (3) times the lowest val loss and above the first epoch's: training blew
   up (a val loss that rose from 5e-5 to 2e-3 is a rise, not a blow-up).
2. ``too short``: fewer than ``MIN_EPOCHS`` (3) epochs, too few to tell a trend.
3. ``overfitting``: at the best epoch the gap (val − train) is more than ``GAP_SHARE`` (0.5) of
   the val loss, i.e. val loss is more than twice the train loss: the model memorized; or, by the
   last epoch, val loss rose more than ``VAL_RISE`` (10 %) above its minimum while train loss
   kept falling: it went on memorizing after it stopped generalizing.
4. ``underfitting``: the last train loss is more than ``STALL_RATIO`` (0.8) of the first
   epoch's: the model barely learned (too much L2 or dropout, too small, too low a rate; not
   asked of a trial that started from fitted weights, the linear start); or the
   last epoch still cut train or val loss by more than ``STILL_FALLING`` (10 %) to a new low:
   training stopped (the epoch budget, or the pruner) before the model converged; a pruned
   trial's reason says the pruner judged it behind, not that it wants more epochs.
5. ``good fit``: none of the above.

The best epoch is the one early stopping restored (the trial's ``best_epoch`` attribute); a
pruned or failed trial has none, so the epoch of lowest val loss stands in. Epochs are
0-based, as ``best_epoch`` is stored.

    >>> diagnose([1.0, 0.5, 0.2, 0.05], [1.0, 0.6, 0.45, 0.5]).label
    'overfitting'
    >>> diagnose([1.0, 0.5, 0.32, 0.3], [1.0, 0.55, 0.38, 0.36]).label
    'good fit'

Pure Python: no TensorFlow, no database, so ``best`` and ``show`` stay fast.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence
from gapsweep.storage import trial_keys

if TYPE_CHECKING:
    from gapsweep.storage.queries import TrialRecord

DIVERGED = "diverged"
TOO_SHORT = "too short"
OVERFITTING = "overfitting"
UNDERFITTING = "underfitting"
GOOD_FIT = "good fit"
LABELS = (DIVERGED, TOO_SHORT, OVERFITTING, UNDERFITTING, GOOD_FIT)

MIN_EPOCHS = 3
DIVERGED_RATIO = 3.0
GAP_SHARE = 0.5
VAL_RISE = 0.10
STALL_RATIO = 0.8
STILL_FALLING = 0.10


@dataclass(frozen=True)
class Diagnosis:
    """A label from ``LABELS`` and a one-line reason with the numbers that decided it."""

    label: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.label}: {self.reason}"


def diagnose(
    train: Sequence[float], val: Sequence[float], *, best_epoch: int | None = None, warm_start: bool = False,
    pruned: bool = False,
) -> Diagnosis:
    """Apply the module's rule to one trial's curves (``warm_start``: it began from fitted weights;
    ``pruned``: the pruner stopped it for being behind, so "still falling" comes with no advice to train on)."""
    if len(train) != len(val):
        raise ValueError(f"train and val curves differ in length ({len(train)} vs {len(val)})")
    for epoch, (t, v) in enumerate(zip(train, val)):
        if not (_finite(t) and _finite(v)):
            return Diagnosis(DIVERGED, f"loss became non-finite at epoch {epoch} (train {t}, val {v})")
    lowest = min(range(len(val)), key=lambda i: val[i], default=None)
    if lowest is not None and val[-1] > DIVERGED_RATIO * val[lowest] and val[-1] > val[0]:
        return Diagnosis(
            DIVERGED,
            f"val loss ended at {val[-1]:.4g}, over {DIVERGED_RATIO:g}× its minimum {val[lowest]:.4g} "
            f"(epoch {lowest})",
        )
    if lowest is None or len(val) < MIN_EPOCHS:
        return Diagnosis(TOO_SHORT, f"{len(val)} epoch(s) recorded; the rule needs at least {MIN_EPOCHS}")
    best = best_epoch if best_epoch is not None and 0 <= best_epoch < len(val) else lowest
    gap = val[best] - train[best]
    if gap > GAP_SHARE * val[best]:
        return Diagnosis(
            OVERFITTING,
            f"at best epoch {best} val loss {val[best]:.4g} is {_times(val[best], train[best])} "
            f"train loss {train[best]:.4g} (gap {gap:.4g} > {GAP_SHARE:.0%} of val)",
        )
    if val[-1] > (1 + VAL_RISE) * val[lowest] and train[-1] < train[lowest]:
        return Diagnosis(
            OVERFITTING,
            f"val loss rose {val[-1] / val[lowest] - 1:.0%} from its minimum {val[lowest]:.4g} (epoch "
            f"{lowest}) to {val[-1]:.4g} while train loss kept falling to {train[-1]:.4g}",
        )
    if train[-1] > STALL_RATIO * train[0] and not warm_start:
        return Diagnosis(
            UNDERFITTING,
            f"train loss only fell from {train[0]:.4g} to {train[-1]:.4g} "
            f"(above {STALL_RATIO:.0%} of the first epoch's) in {len(train)} epochs",
        )
    for name, curve in (("train", train), ("val", val)):
        if curve[-1] < (1 - STILL_FALLING) * curve[-2] and curve[-1] <= min(curve):
            why = "the pruner stopped it as behind the other trials" if pruned else "more epochs would help"
            return Diagnosis(
                UNDERFITTING,
                f"{name} loss was still falling when training stopped ({curve[-2]:.4g} to {curve[-1]:.4g} "
                f"in the last epoch, {1 - curve[-1] / curve[-2]:.0%}): {why}",
            )
    return Diagnosis(
        GOOD_FIT,
        f"at best epoch {best} val loss {val[best]:.4g} tracks train loss {train[best]:.4g} "
        f"(gap {max(gap, 0.0):.4g}), and train loss fell from {train[0]:.4g} to {train[-1]:.4g}",
    )


def diagnose_record(record: TrialRecord) -> Diagnosis:
    """The diagnosis of a trial as the query layer returns it (curves from its user attrs).

    A trial's curves are written when it ends: one still running, or whose worker died before it
    ended, has none, which says nothing of how many epochs it trained. A running trial's progress
    is what it reported to the pruner so far (``record.reported``, loaded for one trial)."""
    val = record.attrs.get(trial_keys.curve_key("val_loss")) or []
    if not val and record.state == "RUNNING":
        reported = record.reported
        progress = f"{len(reported)} score(s) reported so far, the last {reported[-1]:.4g}; " if reported else ""
        return Diagnosis(TOO_SHORT, f"still running: {progress}its curves are stored when it ends")
    if not val and record.state == "FAIL":
        return Diagnosis(TOO_SHORT, "no curves stored: the trial stopped before writing them (a trial whose worker died is retried)")
    best_epoch = record.attrs.get(trial_keys.BEST_EPOCH)
    return diagnose(
        record.attrs.get(trial_keys.curve_key("train_loss")) or [],
        record.attrs.get(trial_keys.curve_key("val_loss")) or [],
        best_epoch=best_epoch if isinstance(best_epoch, int) else None,
        warm_start=bool(record.attrs.get(trial_keys.LINEAR_START)),
        pruned=record.state == "PRUNED",
    )


def _finite(value: Any) -> bool:
    """A stored curve holds floats; NaN comes back as NaN and a JSON null as None."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def _times(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.1f}×" if denominator > 0 else "far above"
