"""The score arithmetic: val + λ·max(0, val − train), at the epoch early stopping restores."""

from __future__ import annotations

import math

import pytest

from gapsweep.sweeps.trial.score import best_score, gap, gap_score


def test_gap_is_clipped_at_zero():
    assert gap(train_loss=0.2, val_loss=0.5) == pytest.approx(0.3)
    assert gap(train_loss=0.5, val_loss=0.2) == 0.0


def test_penalty_scales_the_gap():
    assert gap_score(0.1, 0.5, penalty=0.0) == pytest.approx(0.5)
    assert gap_score(0.1, 0.5, penalty=1.0) == pytest.approx(0.9)
    assert gap_score(0.1, 0.5, penalty=2.5) == pytest.approx(0.5 + 2.5 * 0.4)
    assert gap_score(0.6, 0.5, penalty=3.0) == pytest.approx(0.5)


def test_a_lucky_memorizer_scores_worse_than_a_generalizer():
    memorizer = gap_score(train_loss=0.01, val_loss=0.30, penalty=1.0)
    generalizer = gap_score(train_loss=0.30, val_loss=0.35, penalty=1.0)
    assert memorizer > generalizer
    # With λ = 0 the plain objective prefers the memorizer: the penalty is what changes the order.
    assert gap_score(0.01, 0.30, 0.0) < gap_score(0.30, 0.35, 0.0)


def test_nan_never_looks_good():
    assert math.isnan(gap_score(math.nan, 0.3, 1.0))
    assert math.isnan(gap_score(0.3, math.nan, 1.0))


def test_best_score_picks_the_minimizing_epoch_and_its_parts():
    train = [1.0, 0.5, 0.2, 0.05, 0.01]
    val = [1.1, 0.6, 0.45, 0.40, 0.42]
    scores = [v + (v - t) for t, v in zip(train, val)]  # λ = 1
    best = best_score(train, val, penalty=1.0)
    assert best.epoch == scores.index(min(scores)) == 1
    assert best.value == pytest.approx(0.7)
    assert (best.train_loss, best.val_loss, best.gap) == pytest.approx((0.5, 0.6, 0.1))
    plain = best_score(train, val, penalty=0.0)
    assert plain.epoch == 3 and plain.value == pytest.approx(0.40)


def test_best_score_ties_go_to_the_earliest_epoch_and_skip_nan():
    assert best_score([0.1, 0.1, 0.1], [0.3, 0.3, 0.3], 0.0).epoch == 0
    assert best_score([math.nan, 0.2], [math.nan, 0.3], 1.0).epoch == 1
    with pytest.raises(ValueError):
        best_score([math.nan], [math.nan], 1.0)
