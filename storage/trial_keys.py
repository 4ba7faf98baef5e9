"""The trial record's keys: every user attribute gapsweep writes on a trial, defined once.

The objective (``sweeps.trial.objective``) writes these keys into Optuna's own
``trial_user_attributes`` table, so Optuna's CLI and optuna-dashboard show them; the queries,
diagnosis, rerank, selection and the report read them through the names below. A key not
written by a trial (a pruned trial has no ``SCORE``) reads back as missing.
"""

from __future__ import annotations

from typing import Any, Mapping

# Score parts at the epoch early stopping restored (complete trials).
#: The trial's score: its Optuna value in a single-objective study.
SCORE = "score"
#: Pure (no L2 term) val loss, and train loss measured in inference mode.
VAL_LOSS = "val_loss"
TRAIN_LOSS = "train_loss"
#: ``max(0, val − train)``.
GAP = "gap"
#: λ and, for the bounded score, κ; ``SCORE_KIND`` names the score (bounded or additive).
GAP_PENALTY = "gap_penalty"
KAPPA = "kappa"
SCORE_KIND = "score_kind"
#: Standard error of the val loss (sd of the per-example losses / √n).
VAL_SE = "val_se"
#: λ·gap, and what the score actually added (at most κ·SE for the bounded score).
RAW_PENALTY = "raw_penalty"
APPLIED_PENALTY = "applied_penalty"
#: The val loss of predicting the train prior (class frequencies or mean), and whether the trial
#: did no better.
PRIOR_LOSS = "prior_loss"
CHANCE_LEVEL = "chance_level"
#: 0-based epoch early stopping restored, and how many epochs ran.
BEST_EPOCH = "best_epoch"
EPOCHS_RUN = "epochs_run"
#: Val accuracy at the restored epoch (classifiers).
VAL_ACCURACY = "val_accuracy"
#: Whether the gap is within ``max_gap`` (only with a gap constraint).
FEASIBLE = "feasible"

# Why a trial ended early.
FAIL_REASON = "fail_reason"
#: How the reason of a trial stopped at once (a second Ctrl-C) begins: not a verdict on its
#: parameters, which are queued again.
INTERRUPTED = "interrupted"
PRUNE_REASON = "prune_reason"

# Where and how it ran.
#: ``host:pid`` of the worker; the epoch a retried trial resumed from; seed, data fingerprint and
#: library versions (``sweeps.trial.repro``).
WORKER = "worker"
RESUMED_FROM_EPOCH = "resumed_from_epoch"
REPRO = "repro"
#: Set on the trial that ran the user's ``--baseline`` configuration; on a trial queued again
#: after a database error, the number of the trial it repeats.
BASELINE = "baseline"
#: Set on the trial that trains the linear reference's configuration (depth 0), queued first.
LINEAR_START = "linear_start"
REQUEUED_FROM = "requeued_from"

# Cross-validation: each fold's score and restored epoch.
FOLD_SCORES = "fold_scores"
FOLD_BEST_EPOCHS = "fold_best_epochs"
FOLD_PRIORS = "fold_priors"

#: Per-epoch curves: ``curve.train_loss``, ``curve.train_se``, ``curve.val_loss``, ``curve.val_se``,
#: ``curve.val_accuracy``; under cross-validation also ``curve.fold{i}.*`` per fold.
CURVE_PREFIX = "curve."
#: Values the space fixes (not Optuna params): ``fixed.NAME``.
FIXED_PREFIX = "fixed."


def curve_key(name: str, prefix: str = CURVE_PREFIX) -> str:
    """The attribute holding curve ``name`` (``train_loss``, ``val_loss``, …)."""
    return f"{prefix}{name}"


def fold_prefix(index: int) -> str:
    """The curve prefix of cross-validation fold ``index``."""
    return f"{CURVE_PREFIX}fold{index}."


def curves(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The curves among a trial's attributes, by name without the prefix."""
    return {key[len(CURVE_PREFIX):]: value for key, value in attrs.items() if key.startswith(CURVE_PREFIX)}


def fixed(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The fixed values among a trial's attributes, by parameter name."""
    return {key[len(FIXED_PREFIX):]: value for key, value in attrs.items() if key.startswith(FIXED_PREFIX)}


def fixed_attrs(values: Mapping[str, Any]) -> dict[str, Any]:
    """Fixed values by parameter name as the user attributes that record them (``fixed`` reverses it)."""
    return {FIXED_PREFIX + name: value for name, value in values.items()}
