"""The overtuning check: does the best trial by validation stay the best on fresh data?

With enough trials the best validation score is partly luck. ``verify`` retrains the top k
trials with s fresh seeds each, scores every model on the held-out test split (never seen by the
sweep), and reports validation against test with their spread.

The flag rule: the best-by-validation trial B is *overtuned* when another trial J has a lower
mean test loss by more than the noise, ``mean_B − mean_J > 2·sqrt(se_B² + se_J²)`` with
``se = std / sqrt(s)`` over the s seeds (two standard errors of the difference). The *most
robust* trial is the one with the lowest ``mean + std`` of test loss: good and stable across
seeds.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from gapsweep.storage import trial_keys
from gapsweep.errors import ConfigError, DataError
from gapsweep.storage.reader import best_trials
from gapsweep.sweeps.analysis.reproduce import initial_weights, retrain
from gapsweep.sweeps.run.config import stored_sweep_data
from gapsweep.sweeps.trial.models import held_out_metrics

#: Fresh seeds start here, far from the seeds the sweep itself used (study seed + trial number).
SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class Checked:
    """One trial's retrained results: per seed, val and test pure loss (and test accuracy)."""

    number: int
    rank: int
    stored_val_loss: float
    val_losses: list[float]
    test_losses: list[float]
    test_accuracies: list[float] = field(default_factory=list)

    @property
    def test_mean(self) -> float:
        return statistics.fmean(self.test_losses)

    @property
    def test_std(self) -> float:
        return statistics.stdev(self.test_losses) if len(self.test_losses) > 1 else 0.0

    @property
    def test_se(self) -> float:
        return self.test_std / math.sqrt(len(self.test_losses))

    def to_dict(self) -> dict[str, Any]:
        out = {
            "number": self.number,
            "rank_by_validation": self.rank,
            "stored_val_loss": self.stored_val_loss,
            "val_loss_mean": statistics.fmean(self.val_losses),
            "val_loss_std": statistics.stdev(self.val_losses) if len(self.val_losses) > 1 else 0.0,
            "test_loss_mean": self.test_mean,
            "test_loss_std": self.test_std,
            "test_losses": self.test_losses,
        }
        if self.test_accuracies:
            out["test_accuracy_mean"] = statistics.fmean(self.test_accuracies)
        return out


@dataclass(frozen=True)
class Verdict:
    overtuned: bool
    best_on_test: int
    most_robust: int
    reason: str


def judge(checked: Sequence[Checked]) -> Verdict:
    """Apply the flag rule to retrained results (the first by ``rank`` is the validation pick)."""
    if not checked:
        raise ConfigError("nothing to verify: the study has no complete trial")
    ordered = sorted(checked, key=lambda c: c.rank)
    pick = ordered[0]
    best_on_test = min(ordered, key=lambda c: c.test_mean)
    most_robust = min(ordered, key=lambda c: c.test_mean + c.test_std)
    beaten = [
        other
        for other in ordered[1:]
        if pick.test_mean - other.test_mean > 2 * math.sqrt(pick.test_se**2 + other.test_se**2)
    ]
    if beaten:
        winner = min(beaten, key=lambda c: c.test_mean)
        reason = (
            f"trial {pick.number}, best by validation, is beaten on test by trial {winner.number} "
            f"({pick.test_mean:.4f} vs {winner.test_mean:.4f}) beyond the seed noise: the pick is overtuned"
        )
    else:
        reason = f"no trial beats trial {pick.number} on test beyond the seed noise"
    return Verdict(bool(beaten), best_on_test.number, most_robust.number, reason)


def verify(
    study: str, storage: str | None = None, *, top: int = 3, seeds: int = 3, code_dir: str | None = None
) -> tuple[list[Checked], Verdict]:
    """Retrain the ``top`` trials with ``seeds`` fresh seeds each and judge them on test; a
    hypermodel is looked up in the project folder ``code_dir`` (None: the current folder)."""
    if top < 1 or seeds < 2:
        raise ConfigError(
            f"--top must be >= 1 and --seeds >= 2 (one seed gives no spread to judge against), got {top} and {seeds}"
        )
    config, splits = stored_sweep_data(study, storage, code_dir, purpose="verifying on its test rows")
    if not len(splits.x_test):
        raise DataError("the study's data has no test split to verify on; give it a test_fraction > 0")
    checked = []
    for rank, record in enumerate(best_trials(study, storage, top)):
        vals, tests, accuracies = [], [], []
        initial = initial_weights(config, record, splits)
        for index in range(seeds):
            result = retrain(config, record.summary()["params"], config.seed + SEED_OFFSET + index, splits, initial=initial)
            metrics = held_out_metrics(result.model, splits)
            vals.append(result.score.val_loss)
            tests.append(metrics["test_pure_loss"])
            if "test_accuracy" in metrics:
                accuracies.append(metrics["test_accuracy"])
        checked.append(Checked(record.number, rank, float(record.attrs[trial_keys.VAL_LOSS]), vals, tests, accuracies))
    return checked, judge(checked)
