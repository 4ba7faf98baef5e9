"""The trainer: honest train loss, restored best epoch, pruning of a hopeless trial, NaN losses."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from gapsweep.search_spaces.hypermodel import SpaceHypermodel
from gapsweep.storage import artifacts
from gapsweep.storage.backend import SqlBackend
from gapsweep.storage.engine import open_storage
from gapsweep.sweeps.trial.checkpoints import CheckpointStore, TrainingState
from gapsweep.search_spaces.space import SearchSpace
from gapsweep.sweeps.data.datasets import DataSpec, load
from gapsweep.sweeps.trial.objective import Objective, ObjectiveSettings
from gapsweep.sweeps.trial.score import best_score
from gapsweep.sweeps.trial.trainer import Curves, TrainingDiverged, train_params

pytestmark = pytest.mark.slow  # every test here trains a Keras model


@pytest.fixture(scope="module")
def digits():
    return load(DataSpec("digits", train_fraction=0.3, seed=0))


def _cross_entropy(model, x, y) -> float:
    """Mean cross-entropy of the model in inference mode, computed outside Keras' loss."""
    probs = np.asarray(model(x, training=False))
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))))


def test_train_loss_is_honest_and_the_best_epoch_is_restored(digits):
    params = {"l2": 1e-2, "dropout": 0.4, "units": 32, "n_layers": 2, "learning_rate": 1e-2, "epochs": 8, "batch_size": 64}
    result = train_params(params, digits, scoring=1.0, patience=2, seed=0)
    curves = result.curves
    assert len(curves.train_loss) == len(curves.val_loss) >= 3
    # The weights left in the model are those of the best epoch, and its curve values are the
    # pure cross-entropy of those weights in inference mode: on all val rows, and on a training
    # subsample as large as the val split, which estimates the loss on all training rows.
    epoch = result.score.epoch
    assert len(digits.x_train) > len(digits.x_val)
    full_train = _cross_entropy(result.model, digits.x_train, digits.y_train)
    assert abs(full_train - result.score.train_loss) <= 2 * curves.train_se[epoch]
    assert _cross_entropy(result.model, digits.x_val, digits.y_val) == pytest.approx(result.score.val_loss, rel=1e-3, abs=1e-4)
    assert result.score.epoch == int(np.argmin([v + max(0, v - t) for t, v in zip(curves.train_loss, curves.val_loss)]))
    # Keras' own loss carries the L2 term; the honest one does not.
    keras_loss = result.model.evaluate(digits.x_train, digits.y_train, verbose=0, return_dict=True)
    assert keras_loss["loss"] > full_train + 0.01


@pytest.mark.parametrize(
    ("data", "params"),
    [
        (DataSpec("digits", seed=0), {"units": 64, "n_layers": 2, "epochs": 6}),
        (DataSpec("digits", seed=1), {"units": 16, "n_layers": 1, "dropout": 0.3, "l2": 1e-3, "epochs": 4, "learning_rate": 3e-3}),
        (DataSpec("breast_cancer", seed=2), {"units": 32, "n_layers": 1, "epochs": 5, "learning_rate": 1e-2}),
        (DataSpec("synthetic", seed=3), {"units": 64, "n_layers": 2, "epochs": 3, "l2": 1e-4}),
    ],
    ids=["digits-2x64", "digits-dropout-l2", "breast-cancer", "synthetic"],
)
def test_the_subsample_train_loss_agrees_with_a_full_evaluation(data, params):
    """The train loss of every epoch comes from as many training rows as the val split has; at the
    restored epoch it must agree with the pure loss over all training rows within its SE."""
    splits = load(data)
    result = train_params(params, splits, scoring=1.0, patience=10, seed=5)
    epoch = result.score.epoch
    se = result.curves.train_se[epoch]
    assert 0 < se < 0.5 * result.score.train_loss + 0.05
    full = result.model.evaluate(splits.x_train, splits.y_train, verbose=0, return_dict=True)["pure_loss"]
    assert abs(full - result.score.train_loss) <= 2 * se, (full, result.score.train_loss, se)


def test_the_training_subsample_is_fixed_by_the_seed_and_whole_when_small():
    from gapsweep.sweeps.trial.trainer import train_subsample

    rows = train_subsample(1000, 300, seed=7)
    assert len(rows) == len(set(rows)) == 300 and list(rows) == sorted(rows) and rows.max() < 1000
    assert np.array_equal(rows, train_subsample(1000, 300, seed=7))
    assert not np.array_equal(rows, train_subsample(1000, 300, seed=8))
    assert np.array_equal(train_subsample(200, 300, seed=7), np.arange(200))


def test_a_training_set_no_larger_than_the_val_split_is_evaluated_whole():
    splits = load(DataSpec("digits", train_fraction=0.15, seed=0))
    assert len(splits.x_train) <= len(splits.x_val)
    result = train_params({"units": 32, "n_layers": 1, "epochs": 3}, splits, scoring=1.0, patience=5, seed=0)
    assert _cross_entropy(result.model, splits.x_train, splits.y_train) == pytest.approx(result.score.train_loss, rel=1e-3, abs=1e-4)


def test_the_bounded_score_uses_the_val_rows_own_noise_and_the_prior(digits):
    from gapsweep.sweeps.trial.score import Scoring, evaluate

    scoring = Scoring("bounded", penalty=1.0, kappa=1.0)
    params = {"units": 32, "n_layers": 1, "epochs": 6, "learning_rate": 1e-2, "batch_size": 64}
    result = train_params(params, digits, scoring=scoring, patience=3, seed=0)
    score, curves = result.score, result.curves
    # One loss per val row at the restored epoch: their mean is the val loss, sd/√n its SE.
    losses = result.val_losses
    assert losses.shape == (len(digits.y_val),)
    assert losses.mean() == pytest.approx(score.val_loss, rel=1e-4)
    assert score.val_se == pytest.approx(losses.std(ddof=1) / np.sqrt(len(losses)), rel=1e-4)
    assert _cross_entropy(result.model, digits.x_val, digits.y_val) == pytest.approx(score.val_loss, rel=1e-3, abs=1e-4)
    assert len(curves.val_se) == len(curves.val_loss) and all(se > 0 for se in curves.val_se)
    # The prior: train-set class frequencies, scored on the val rows.
    freq = np.bincount(digits.y_train, minlength=10) / len(digits.y_train)
    assert score.prior_loss == pytest.approx(-np.mean(np.log(freq[digits.y_val])), rel=1e-4)
    assert not score.chance_level and score.val_loss < score.prior_loss
    # Early stopping restored the epoch of the lowest bounded score, and the parts add up.
    by_epoch = [
        evaluate(t, v, scoring, se=se, prior_loss=score.prior_loss).value
        for t, v, se in zip(curves.train_loss, curves.val_loss, curves.val_se)
    ]
    assert score.epoch == int(np.argmin(by_epoch))
    assert score.applied_penalty == pytest.approx(min(score.raw_penalty, score.val_se))
    assert score.value == pytest.approx(score.val_loss + score.applied_penalty)
    assert len(curves.val_accuracy) == len(curves.val_loss) and 0.5 < curves.val_accuracy[score.epoch] <= 1.0


def test_regression_uses_mean_squared_error():
    splits = load(DataSpec("diabetes", seed=1))
    result = train_params({"units": 16, "n_layers": 1, "epochs": 3, "learning_rate": 1e-2}, splits, scoring=0.5, patience=3, seed=0)
    assert splits.task.task == "regression"
    assert all(np.isfinite(result.curves.val_loss)) and result.score.val_loss > 0
    # The regression prior is the train mean, scored by squared error on the val rows.
    prior = np.mean((splits.y_val.reshape(len(splits.y_val), -1) - splits.y_train.mean()) ** 2)
    assert result.score.prior_loss == pytest.approx(prior, rel=1e-4)


def test_a_nan_loss_raises_training_diverged(digits):
    curves = Curves()
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train_params({"learning_rate": 1e6, "optimizer": "sgd", "epochs": 3, "units": 16}, digits, scoring=1.0, patience=3, seed=0, curves=curves)
    assert len(curves.val_loss) >= 1


def test_pruning_stops_a_hopeless_trial(digits, sqlite_url):
    space = SearchSpace.from_dict(
        {
            "learning_rate": {"type": "float", "low": 1e-7, "high": 1e-2, "log": True},
            "units": 32,
            "epochs": 12,
            "batch_size": 64,
        }
    )
    study = optuna.create_study(
        storage=sqlite_url, pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    )
    for rate in (1e-2, 5e-3, 1e-7):  # two healthy trials, then one that cannot learn in time
        study.enqueue_trial({"learning_rate": rate})
    settings = ObjectiveSettings(gap_penalty=1.0, patience=20, max_gap=0.0)  # the constraint is then the gap itself
    study.optimize(Objective(SpaceHypermodel(space), digits, settings, seed=0), n_trials=3)
    healthy, _, hopeless = study.get_trials()
    assert healthy.state == optuna.trial.TrialState.COMPLETE
    assert healthy.user_attrs["epochs_run"] == 12
    assert hopeless.state == optuna.trial.TrialState.PRUNED
    assert hopeless.user_attrs["epochs_run"] < 12
    assert "pruned at epoch" in hopeless.user_attrs["prune_reason"]
    assert len(hopeless.user_attrs["curve.val_loss"]) == hopeless.user_attrs["epochs_run"]
    assert len(hopeless.intermediate_values) == hopeless.user_attrs["epochs_run"]
    # Optuna's samplers see the gap constraint of both, a pruned trial's at its best epoch so far.
    assert healthy.constraints["gap"] == pytest.approx(healthy.user_attrs["gap"])
    curves = hopeless.user_attrs["curve.train_loss"], hopeless.user_attrs["curve.val_loss"]
    se_curve = hopeless.user_attrs["curve.val_se"]
    assert hopeless.constraints["gap"] == pytest.approx(best_score(*curves, settings.scoring, se_curve=se_curve).gap)


def test_a_model_compiled_by_the_user_is_judged_by_its_own_loss_without_l2(digits):
    import keras

    from gapsweep.search_spaces.hypermodel import FitSettings
    from gapsweep.sweeps.trial.runtime import fresh_session
    from gapsweep.sweeps.trial.trainer import train

    fresh_session(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-2)),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    result = train(model, FitSettings(epochs=4, batch_size=64), digits, scoring=1.0, patience=5, seed=0)
    assert len(result.curves.val_accuracy) == 4  # the user's own metric is kept
    full_train = _cross_entropy(result.model, digits.x_train, digits.y_train)
    assert abs(full_train - result.score.train_loss) <= 2 * result.curves.train_se[result.score.epoch]
    assert _cross_entropy(result.model, digits.x_val, digits.y_val) == pytest.approx(result.score.val_loss, rel=1e-3, abs=1e-4)


class _CountingStore(CheckpointStore):
    """A real checkpoint store that also notes which epochs it saved."""

    saved: list[int]

    def save(self, state: TrainingState) -> None:
        self.saved.append(state.epoch)
        super().save(state)


@pytest.mark.parametrize(("interval", "expected"), [(0.0, [0, 1, 2, 3]), (3600.0, [])])
def test_checkpoints_are_taken_by_time_not_by_epoch(digits, sqlite_url, interval, expected):
    storage = open_storage(sqlite_url)
    engine = storage.engine
    artifacts.ensure_schema(engine)
    store = _CountingStore(SqlBackend(storage), "ckpt", 0, interval=interval)
    store.saved = []
    params = {"units": 16, "n_layers": 1, "epochs": 4, "learning_rate": 1e-2}
    train_params(params, digits, scoring=1.0, patience=10, seed=0, checkpoints=store)
    assert store.saved == expected
    stored = artifacts.load(engine, "ckpt", 0, artifacts.CHECKPOINT)
    assert (stored.epoch if stored is not None else None) == (expected[-1] if expected else None)
    engine.dispose()


def test_prior_predictions_match_the_loss_they_feed():
    from gapsweep.sweeps.trial.trainer import prior_predictions

    labels = np.array([0, 0, 0, 1, 2, 2])
    probs = prior_predictions(labels, 4, 3, classification=True, from_logits=False)
    assert probs.shape == (4, 3) and probs[0] == pytest.approx([0.5, 1 / 6, 1 / 3])
    logits = prior_predictions(labels, 4, 3, classification=True, from_logits=True)
    softmax = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert softmax == pytest.approx(probs[0])
    one_hot = np.eye(3)[labels]
    assert prior_predictions(one_hot, 2, 3, True, False)[1] == pytest.approx(probs[0])
    binary = np.array([0, 1, 1, 1])
    assert prior_predictions(binary, 2, 1, True, False)[0] == pytest.approx([0.75])
    assert prior_predictions(binary, 2, 1, True, True)[0] == pytest.approx([np.log(3.0)])
    target = np.array([[1.0, 10.0], [3.0, 20.0]])
    assert prior_predictions(target, 3, 2, False, False)[2] == pytest.approx([2.0, 15.0])


def test_predictions_trace_the_predict_step_once_per_model(digits):
    from gapsweep.search_spaces.builder import build_model, resolve
    from gapsweep.sweeps.trial.inference import predict
    from gapsweep.sweeps.trial.runtime import fresh_session

    fresh_session(0)
    model = build_model(resolve({"units": 16, "dropout": 0.5}), digits.task)
    x = np.concatenate([digits.x_train, digits.x_val, digits.x_test])
    for rows in (700, 300, len(x)):  # fewer than one batch, and more than one with a short last one
        predictions = predict(model, x[:rows])
        assert predictions.shape == (rows, 10)
        np.testing.assert_allclose(predictions, np.asarray(model(x[:rows], training=False)), rtol=1e-5, atol=1e-6)
    assert model.predict_function.experimental_get_tracing_count() == 1


def test_a_retry_reporting_epochs_its_dead_trial_reported_raises_no_warning(recwarn):
    """Optuna's retry copies the dead trial's reports; a retry that restarts reports them again."""
    import optuna

    from gapsweep.sweeps.trial.pruning import pruning_callback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    trial.report(0.5, step=0)  # what the retry inherited
    pruning_callback(trial, monitor="score").on_epoch_end(0, {"score": 0.4})
    assert not [w for w in recwarn if "already reported" in str(w.message)]
