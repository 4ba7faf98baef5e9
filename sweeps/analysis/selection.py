"""The paired one-standard-error rule: among trials the val rows cannot tell apart, the smallest gap.

Every trial of a study is validated on the same rows, so a trial is compared with the trial of
lowest val loss row by row: dᵢ = ℓᵢ(trial) − ℓᵢ(val-min trial). The trial is *tied* with the
val-min trial when mean(d) ≤ sd(d)/√n — its extra loss is within one standard error of the paired
difference (the one-standard-error rule of CART and glmnet's ``lambda.1se``, on the paired SE,
which is far tighter than either trial's own SE). Among the tied trials the rule prefers the
smallest train/val gap, then the lower val loss. Chance-level trials (no better than the prior)
are never picked. The standard error of the val-min trial's own val loss is reported beside it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from gapsweep.storage import trial_keys
from gapsweep.storage.queries import TrialRecord

RULES = ("score", "paired")


@dataclass(frozen=True)
class Selection:
    """The paired view of a study: the val-min trial, the trials tied with it and the pick."""

    val_min: TrialRecord
    pick: TrialRecord
    #: sd(ℓ)/√n of the val-min trial's per-example val losses.
    se: float
    tied: list[int] = field(default_factory=list)
    n_rows: int = 0
    #: Paired mean difference and its SE for every compared trial, by number.
    differences: dict[int, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": "paired one-standard-error: tied when mean(d) <= sd(d)/sqrt(n), then the smallest gap",
            "val_min_trial": self.val_min.number,
            "val_min_val_loss": self.val_min.attrs.get(trial_keys.VAL_LOSS),
            "se": self.se,
            "n_rows": self.n_rows,
            "n_tied": len(self.tied),
            "tied_trials": list(self.tied),
            "paired_pick": self.pick.number,
            "paired_pick_val_loss": self.pick.attrs.get(trial_keys.VAL_LOSS),
            "paired_pick_gap": self.pick.attrs.get(trial_keys.GAP),
        }


def paired_difference(losses: Sequence[float], reference: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error) of the row-by-row difference ``losses − reference``."""
    d = np.asarray(losses, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf
    return float(d.mean()), se


def paired_select(records: Sequence[TrialRecord], losses: Mapping[int, Sequence[float]]) -> Selection | None:
    """Apply the paired rule to the complete ``records`` whose per-example ``losses`` are known
    (all of the same length); None when no such trial beats the prior."""
    rows: dict[int, np.ndarray] = {}
    for record in records:
        values = np.asarray(losses.get(record.number, []), dtype=np.float64)
        if len(values) and np.all(np.isfinite(values)) and not record.attrs.get(trial_keys.CHANCE_LEVEL, False):
            rows[record.number] = values
    if not rows:
        return None
    # Trials compare on the rows they share: those validated on the study's usual number of rows.
    n = Counter(len(values) for values in rows.values()).most_common(1)[0][0]
    rows = {number: values for number, values in rows.items() if len(values) == n}
    by_number = {record.number: record for record in records}
    best = min(rows, key=lambda number: (float(rows[number].mean()), number))
    differences = {number: paired_difference(values, rows[best]) for number, values in rows.items()}
    tied = sorted(number for number, (mean, se) in differences.items() if number == best or mean <= se)

    def preference(number: int) -> tuple[float, float, int]:
        gap = by_number[number].attrs.get(trial_keys.GAP)
        return (float(gap) if gap is not None else math.inf, float(rows[number].mean()), number)

    own = rows[best]
    return Selection(
        val_min=by_number[best],
        pick=by_number[min(tied, key=preference)],
        se=float(own.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
        tied=tied,
        n_rows=n,
        differences=differences,
    )
