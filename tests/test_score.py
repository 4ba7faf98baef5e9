"""The score arithmetic at the epoch early stopping restores: the bounded default
val + min(λ·gap, κ·SE) with its chance-level guard, and the additive val + λ·gap kept by name."""

from __future__ import annotations

import math

import pytest

from gapsweep.errors import ConfigError
from gapsweep.sweeps.trial.score import Scoring, best_score, evaluate, gap, gap_score

BOUNDED = Scoring("bounded", penalty=1.0, kappa=1.0)


def test_gap_is_clipped_at_zero():
    assert gap(train_loss=0.2, val_loss=0.5) == pytest.approx(0.3)
    assert gap(train_loss=0.5, val_loss=0.2) == 0.0


def test_additive_penalty_scales_the_gap():
    assert gap_score(0.1, 0.5, penalty=0.0) == pytest.approx(0.5)
    assert gap_score(0.1, 0.5, penalty=1.0) == pytest.approx(0.9)
    assert gap_score(0.1, 0.5, penalty=2.5) == pytest.approx(0.5 + 2.5 * 0.4)
    assert gap_score(0.6, 0.5, penalty=3.0) == pytest.approx(0.5)


def test_the_bounded_penalty_never_exceeds_kappa_standard_errors():
    # A large gap: λ·gap = 0.4, but the val data resolve only 0.05 (SE), so the penalty is 0.05.
    score = evaluate(0.1, 0.5, BOUNDED, se=0.05)
    assert (score.raw_penalty, score.applied_penalty, score.value) == pytest.approx((0.4, 0.05, 0.55))
    # A gap smaller than the bound is penalized in full.
    small = evaluate(0.48, 0.5, BOUNDED, se=0.05)
    assert small.applied_penalty == pytest.approx(0.02) and small.value == pytest.approx(0.52)
    # κ scales the bound; κ = 0 or λ = 0 is the plain val loss.
    assert evaluate(0.1, 0.5, Scoring("bounded", 1.0, kappa=3.0), se=0.05).value == pytest.approx(0.65)
    assert evaluate(0.1, 0.5, Scoring("bounded", 1.0, kappa=0.0), se=0.05).value == pytest.approx(0.5)
    assert evaluate(0.1, 0.5, Scoring("bounded", 0.0), se=0.05).value == pytest.approx(0.5)
    # Over a grid, the score moves val by at most min(λ·gap, κ·SE), never more.
    for train in (0.0, 0.2, 0.49, 0.7):
        for se in (0.0, 0.01, 0.3):
            for lam in (0.0, 1.0, 10.0):
                moved = evaluate(train, 0.5, Scoring("bounded", lam, 1.0), se=se).value - 0.5
                assert 0.0 <= moved <= min(lam * gap(train, 0.5), se) + 1e-12


def test_a_high_train_loss_no_longer_buys_a_worse_val_loss():
    # The additive score ranks a model that has not learned (train ≈ val, val high) above a better
    # model with a gap; the bounded score lets the gap matter only within the noise.
    learner = dict(train_loss=0.05, val_loss=0.30)
    slow = dict(train_loss=0.42, val_loss=0.45)
    assert gap_score(**slow, penalty=1.0) < gap_score(**learner, penalty=1.0)
    assert evaluate(**learner, scoring=BOUNDED, se=0.03).value < evaluate(**slow, scoring=BOUNDED, se=0.03).value
    # Within noise the gap still breaks the tie: a memorizer ranks below a generalizer.
    memorizer = evaluate(0.01, 0.30, BOUNDED, se=0.03)
    generalizer = evaluate(0.30, 0.31, BOUNDED, se=0.03)
    assert memorizer.value > generalizer.value


def test_without_a_standard_error_the_penalty_is_not_capped():
    assert evaluate(0.1, 0.5, BOUNDED).value == pytest.approx(0.9)


def test_a_chance_level_model_ranks_after_every_model_that_beats_the_prior():
    prior = 2.30
    chance = evaluate(2.29, 2.31, BOUNDED, se=0.01, prior_loss=prior)
    assert chance.chance_level and chance.value > prior
    exactly = evaluate(2.30, 2.30, BOUNDED, se=0.0, prior_loss=prior)
    assert exactly.chance_level and exactly.value > prior
    # A model that beats the prior, however large its penalty, scores at most the prior's loss.
    barely = evaluate(0.0, 2.29, Scoring("bounded", 5.0, kappa=100.0), se=0.5, prior_loss=prior)
    assert not barely.chance_level and barely.value <= prior < exactly.value
    assert evaluate(0.2, 0.3, BOUNDED, se=0.01, prior_loss=prior).value == pytest.approx(0.31)
    # The additive score, kept for comparison, flags chance level but does not reorder.
    additive = evaluate(2.29, 2.31, Scoring("additive", 1.0), se=0.01, prior_loss=prior)
    assert additive.chance_level and additive.value == pytest.approx(2.33)


def test_nan_never_looks_good():
    assert math.isnan(gap_score(math.nan, 0.3, 1.0))
    assert math.isnan(gap_score(0.3, math.nan, 1.0))
    assert math.isnan(evaluate(0.3, math.nan, BOUNDED, se=0.01, prior_loss=2.3).value)


def test_best_score_picks_the_minimizing_epoch_and_its_parts():
    train = [1.0, 0.5, 0.2, 0.05, 0.01]
    val = [1.1, 0.6, 0.45, 0.40, 0.42]
    scores = [v + (v - t) for t, v in zip(train, val)]  # additive, λ = 1
    best = best_score(train, val, 1.0)
    assert best.epoch == scores.index(min(scores)) == 1
    assert best.value == pytest.approx(0.7)
    assert (best.train_loss, best.val_loss, best.gap) == pytest.approx((0.5, 0.6, 0.1))
    plain = best_score(train, val, 0.0)
    assert plain.epoch == 3 and plain.value == pytest.approx(0.40)
    # The bounded score (SE 0.02 each epoch) stops where val is lowest, not where the model has
    # barely learned: epoch 3 scores 0.40 + 0.02, epoch 1 scores 0.60 + 0.02.
    bounded = best_score(train, val, BOUNDED, se_curve=[0.02] * 5)
    assert bounded.epoch == 3 and bounded.value == pytest.approx(0.42) and bounded.val_se == 0.02


def test_best_score_ties_go_to_the_earliest_epoch_and_skip_nan():
    assert best_score([0.1, 0.1, 0.1], [0.3, 0.3, 0.3], 0.0).epoch == 0
    assert best_score([math.nan, 0.2], [math.nan, 0.3], 1.0).epoch == 1
    with pytest.raises(ValueError):
        best_score([math.nan], [math.nan], 1.0)


def test_scoring_refuses_unknown_names_and_negative_values():
    with pytest.raises(ConfigError, match="unknown score 'ladder'"):
        Scoring("ladder")
    with pytest.raises(ConfigError, match="kappa must be a number >= 0"):
        Scoring("bounded", 1.0, kappa=-1.0)


def test_the_score_is_chosen_by_name_in_a_sweep_file_and_by_flag(tmp_path, capsys):
    from gapsweep.api import get_study_config
    from gapsweep.cli import main
    from gapsweep.sweeps.run.config import SweepConfig, load_sweep_file

    assert SweepConfig().objective.score == "bounded" and SweepConfig().objective.kappa == 0.5
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('study = "s"\n[objective]\nscore = "additive"\ngap_penalty = 0.5\n')
    assert load_sweep_file(sweep).objective.scoring == Scoring("additive", 0.5, 0.5)
    sweep.write_text('study = "s"\n[objective]\nscore = "ladder"\n')
    with pytest.raises(ConfigError, match="unknown score 'ladder'"):
        load_sweep_file(sweep)
    with pytest.raises(ConfigError, match="kappa must be a number >= 0"):
        SweepConfig.from_dict({"objective": {"kappa": -1}})
    url = f"sqlite:///{tmp_path / 'flags.db'}"
    assert main(["launch", "--study", "f", "--storage", url, "--score", "bounded", "--kappa", "2", "--create-only"]) == 0
    objective = get_study_config("f", url)["objective"]
    assert (objective["score"], objective["kappa"], objective["gap_penalty"]) == ("bounded", 2.0, 1.0)
