"""Trial-loop overhead: gapsweep's ``launch`` against plain ``optuna.create_study().optimize()``.

No Keras model is built or trained. Three seams are stubbed: the hypermodel samples the space
as a trial does but builds a stand-in model; the per-trial Keras session reset is skipped; the
trainer returns at once with fake curves, after the trainer's storage work: one
``report``/``should_prune`` per epoch and, given a checkpoint store, a checkpoint whenever one is
due (by default every 30 s of training, so these instant trials write none).
The stand-in model is scored instantly and saves as many bytes as a trained Keras model of the
sampled shape would, in a zip laid out as Keras lays out a ``.keras`` file, so checkpoints and
kept models cost what they really cost in the database (not the Keras serialization around them). Everything else is gapsweep's own loop,
as ``launch`` runs it: storage settings, study lock and budget checks, stale-trial reaping,
heartbeats, the reproducibility record, user attributes, the model keeper, the progress
bar. TensorFlow is imported before the clock starts.

The plain-Optuna baseline samples the same parameters and reports the same epochs on the same
kind of storage; a no-op objective shows the bare loop. Diagnostic variants price the parts:
one checkpoints every epoch (``GAPSWEEP_CHECKPOINT_S=0``, the most crash safety), two switch
off the kept models and then the user attributes. Throughput is measured from the stored timestamps (first trial's start to last trial's
end), so setup is left out on both sides. SQL statements and commits per trial, counted in a
separate short pass, say where the time goes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import statistics
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from unittest import mock

import numpy as np
import optuna
import sqlalchemy as sa

from benchmarks import harness, report
from gapsweep import DataSpec, ObjectiveSettings, SweepConfig, launch
from gapsweep.search_spaces.hypermodel import FitSettings, SpaceHypermodel
from gapsweep.sweeps.data.preprocessing import Preprocessing, with_info
from gapsweep.sweeps.trial import models as models_module
from gapsweep.sweeps.trial import objective as objective_module
from gapsweep.sweeps.trial.checkpoints import CheckpointStore, TrainingState
from gapsweep.sweeps.data.datasets import Splits
from gapsweep.sweeps.trial.score import Scoring, as_scoring, best_score, evaluate, gap_score
from gapsweep.sweeps.trial.trainer import Curves, TrainResult

NAME = "overhead"
TITLE = "Trial-loop overhead"
EPOCHS = 10
#: gapsweep's loop at most this many times plain Optuna's time per trial, per backend.
TARGET_RATIO = {"sqlite": 1.05, "postgresql": 1.2}

#: Five searched parameters; epochs and batch size fixed, as a small real sweep would have.
SPACE: dict[str, dict[str, Any]] = {
    "l2": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.6},
    "units": {"type": "int", "low": 16, "high": 512, "log": True},
    "n_layers": {"type": "int", "low": 1, "high": 4},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
    "epochs": {"type": "fixed", "value": EPOCHS},
    "batch_size": {"type": "fixed", "value": 64},
}


def fake_curve(learning_rate: float, epoch: int) -> tuple[float, float]:
    """A made-up (train, val) loss pair that falls with the epochs; only its storage cost matters."""
    train = 1.0 / (1.0 + epoch * learning_rate * 100)
    return train, train + 0.05


_NOISE = os.urandom(1 << 20)


def noise(n_bytes: int) -> bytes:
    """Incompressible bytes, as weights are: a stand-in for a saved model of that size."""
    return (_NOISE * (n_bytes // len(_NOISE) + 1))[:n_bytes]


class StandInModel:
    """Duck-types what gapsweep calls on a trained model (``save``), and carries the sampled
    values the stub trainer needs."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.learning_rate = float(values["learning_rate"])
        self.weights = weight_count(int(values["units"]), int(values["n_layers"]))

    def save(self, path: str | os.PathLike[str]) -> None:
        """A zip laid out as Keras writes a ``.keras`` file (entries stored, not deflated): JSON
        metadata and config first, then the weights. The layout matters to PostgreSQL, whose
        compression gives up early on bytes that start incompressible but not on these."""
        config = json.dumps({"layers": [{"class_name": "Dense", "config": {"units": 0, "activation": "relu"}}] * 200})
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr("metadata.json", json.dumps({"keras_version": "3", "date_saved": "now"}))
            archive.writestr("config.json", config[:CONFIG_BYTES].ljust(CONFIG_BYTES))
            archive.writestr("model.weights.h5", noise(model_bytes(self.weights) - CONFIG_BYTES))


def weight_count(units: int, n_layers: int, n_features: int = 64, n_classes: int = 10) -> int:
    """Weights of the MLP the builder makes for digits (64 features, 10 classes)."""
    weights, width = 0, n_features
    for _ in range(n_layers):
        weights += (width + 1) * units
        width = units
    return weights + (width + 1) * n_classes


#: About what Keras writes besides the weights (config and metadata).
CONFIG_BYTES = 25_000


def model_bytes(weights: int) -> int:
    """About what Keras writes for a trained MLP: weights plus Adam's two slots, 4 bytes each,
    plus ~25 kB of config (measured: 28 kB for 1,210 untrained weights, 3.3 MB for 826k)."""
    return 12 * weights + CONFIG_BYTES


def stub_raw_input_model_bytes(model: StandInModel, preprocessing: Preprocessing) -> bytes:
    """``models.raw_input_model_bytes`` without Keras layers: the saved stand-in with its
    ``gapsweep.json``, as a kept model is stored."""
    return with_info(models_module.model_to_bytes(model), preprocessing.info())


def stub_held_out_metrics(model: StandInModel, splits: Splits) -> dict[str, float]:
    """``models.held_out_metrics`` without a prediction: the test metrics a kept trial records."""
    return {"test_pure_loss": 0.25, "test_accuracy": 0.9}


def stub_build(self: SpaceHypermodel, trial: optuna.Trial, task: Any) -> tuple[StandInModel, FitSettings]:
    """``SpaceHypermodel.build`` without Keras: samples the space as a trial does, builds nothing."""
    values, fixed = self.draw(trial)
    return StandInModel(values), FitSettings(int(values["epochs"]), int(values["batch_size"]), fixed=fixed)


def stub_train(
    model: StandInModel,
    fit: FitSettings,
    splits: Splits,
    *,
    scoring: Scoring | float,
    patience: int,
    seed: int,
    trial: optuna.Trial | None = None,
    curves: Curves | None = None,
    checkpoints: CheckpointStore | None = None,
) -> TrainResult:
    """``gapsweep.sweeps.trial.trainer.train`` without Keras: fills the curves and reports each epoch to the pruner.

    Given a checkpoint store (gapsweep's crash safety), it asks for a state to resume and saves
    one whenever it is due, as the trainer does, with stand-in model bytes of the real size.
    """
    curves = curves if curves is not None else Curves()
    if checkpoints is not None:
        checkpoints.latest()
    for epoch in range(fit.epochs):
        train, val = fake_curve(model.learning_rate, epoch)
        curves.train_loss.append(train)
        curves.val_loss.append(val)
        curves.val_accuracy.append(0.9)
        if trial is not None:
            trial.report(evaluate(train, val, as_scoring(scoring)).value, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")
        if checkpoints is not None and checkpoints.due():
            checkpoints.save(stand_in_checkpoint(epoch, curves, model.weights))
    return TrainResult(model=model, curves=curves, score=best_score(curves.train_loss, curves.val_loss, scoring))


def stand_in_checkpoint(epoch: int, curves: Curves, weights: int) -> TrainingState:
    """A ``TrainingState`` as big as the trainer's: model bytes plus the best epoch's weights."""
    return TrainingState(
        epoch=epoch, curves=curves.to_dict(), best=min(curves.val_loss), best_epoch=len(curves.val_loss) - 1, wait=0,
        model=noise(model_bytes(weights)), best_weights=[np.zeros(weights, dtype="float32")],
    )


def plain_objective(trial: optuna.Trial) -> float:
    """What a hand-written Optuna objective stores for the same space: params and epoch reports."""
    trial.suggest_float("l2", 1e-6, 1e-1, log=True)
    trial.suggest_float("dropout", 0.0, 0.6)
    trial.suggest_int("units", 16, 512, log=True)
    trial.suggest_int("n_layers", 1, 4)
    learning_rate = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
    value = math.inf
    for epoch in range(EPOCHS):
        train, val = fake_curve(learning_rate, epoch)
        value = min(value, gap_score(train, val, 1.0))
        trial.report(gap_score(train, val, 1.0), step=epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def run_noop(url: str, trials: int) -> optuna.Study:
    study = optuna.create_study(study_name="noop", storage=url, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: 0.0, n_trials=trials, gc_after_trial=False)
    return study


def run_plain(url: str, trials: int) -> optuna.Study:
    study = optuna.create_study(
        study_name="plain", storage=url,
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner(),
    )
    study.optimize(plain_objective, n_trials=trials, gc_after_trial=False)
    return study


def run_gapsweep(
    url: str, trials: int, *, every_epoch: bool = False, keep_models: int | None = None, user_attrs: bool = True
) -> optuna.Study:
    """``launch`` with the stub trainer; the switches change parts only to price them."""
    settings = ObjectiveSettings(gap_penalty=1.0)
    if keep_models is not None:
        settings = dataclasses.replace(settings, keep_models=keep_models)
    config = SweepConfig(
        study="gapsweep", space=SPACE, data=DataSpec("digits"), objective=settings,
        pruner="none", sampler="random", trials=trials, seed=0, storage=url,
    )
    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(SpaceHypermodel, "build", stub_build))
        patches.enter_context(mock.patch.object(objective_module, "fresh_session", lambda seed: None))
        patches.enter_context(mock.patch.object(objective_module, "train", stub_train))
        patches.enter_context(mock.patch.object(objective_module, "held_out_metrics", stub_held_out_metrics))
        patches.enter_context(mock.patch.object(models_module, "raw_input_model_bytes", stub_raw_input_model_bytes))
        if every_epoch:
            patches.enter_context(mock.patch.dict(os.environ, {"GAPSWEEP_CHECKPOINT_S": "0"}))
        if not user_attrs:
            patches.enter_context(mock.patch.object(optuna.Trial, "set_user_attr", lambda self, key, value: None))
            patches.enter_context(mock.patch.object(objective_module, "set_user_attrs", lambda trial, attrs: None))
        return launch(config, progress=False)


VARIANTS: dict[str, Callable[[str, int], optuna.Study]] = {
    "optuna no-op": run_noop,
    "optuna same work": run_plain,
    "gapsweep launch": run_gapsweep,
    "gapsweep, checkpoint every epoch": functools.partial(run_gapsweep, every_epoch=True),
    "gapsweep − kept models": functools.partial(run_gapsweep, keep_models=0),
    "gapsweep − kept models, user attrs": functools.partial(run_gapsweep, keep_models=0, user_attrs=False),
}
BASELINE, SUBJECT = "optuna same work", "gapsweep launch"


def span_seconds(trials: list[optuna.trial.FrozenTrial]) -> float:
    """First trial's start to last trial's end, from the storage's own timestamps."""
    return (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()


@contextlib.contextmanager
def storage_url(backend: str) -> Iterator[str]:
    """A fresh, empty database of ``backend`` for one run."""
    if backend == "postgresql":
        with harness.postgres_schema() as url:
            yield url
    else:
        with harness.sqlite_file() as url:
            yield url


@contextlib.contextmanager
def sql_counter() -> Iterator[dict[str, int]]:
    """Counts every SQL statement and commit any SQLAlchemy engine issues while open."""
    counts = {"statements": 0, "commits": 0}

    def statement(*_: Any) -> None:
        counts["statements"] += 1

    def commit(*_: Any) -> None:
        counts["commits"] += 1

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", statement)
    sa.event.listen(sa.engine.Engine, "commit", commit)
    try:
        yield counts
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", statement)
        sa.event.remove(sa.engine.Engine, "commit", commit)


def timed_run(backend: str, variant: str, trials: int) -> dict[str, float]:
    with storage_url(backend) as url:
        start = time.perf_counter()
        study = VARIANTS[variant](url, trials)
        wall = time.perf_counter() - start
        done = study.get_trials(deepcopy=False)
    tail = done[-max(2, len(done) // 10):]
    loop = span_seconds(done)
    return {
        "trials": len(done), "loop_s": loop, "wall_s": wall, "trials_per_s": len(done) / loop,
        "last_tenth_trials_per_s": len(tail) / span_seconds(tail),
    }


def counted_run(backend: str, variant: str, trials: int) -> dict[str, float]:
    with storage_url(backend) as url, sql_counter() as counts:
        study = VARIANTS[variant](url, trials)
        attrs = [len(t.user_attrs) for t in study.get_trials(deepcopy=False)]
    return {
        "statements_per_trial": counts["statements"] / trials,
        "commits_per_trial": counts["commits"] / trials,
        "user_attrs_per_trial": statistics.mean(attrs),
    }


def measure(backend: str, trials: int, repeats: int, count_trials: int) -> list[dict[str, Any]]:
    """Every variant ``repeats`` times, interleaved so a burst of load hits all of them alike."""
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            runs[variant].append(timed_run(backend, variant, trials))
    rows = []
    for variant, results in runs.items():
        rates = [r["trials_per_s"] for r in results]
        rows.append({
            "backend": backend,
            "variant": variant,
            "trials": trials,
            "trials_per_s": statistics.median(rates),
            "trials_per_s_runs": rates,
            "ms_per_trial": 1000 / statistics.median(rates),
            "last_tenth_trials_per_s": statistics.median(r["last_tenth_trials_per_s"] for r in results),
            **counted_run(backend, variant, count_trials),
        })
    baseline = next(r for r in rows if r["variant"] == BASELINE)["trials_per_s"]
    for row in rows:
        row["time_ratio_vs_optuna"] = baseline / row["trials_per_s"]
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = sorted({r["backend"] for r in rows})
    variants = list(VARIANTS)
    fig, ax = plt.subplots(figsize=(8, 4))
    height = 0.8 / len(backends)
    for i, backend in enumerate(backends):
        values = [next(r["ms_per_trial"] for r in rows if r["backend"] == backend and r["variant"] == v) for v in variants]
        ax.barh([y + i * height for y in range(len(variants))], values, height, label=backend)
    ax.set_yticks([y + height * (len(backends) - 1) / 2 for y in range(len(variants))], variants, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per trial (lower is better)")
    ax.set_title("Trial-loop cost without Keras (10 epochs reported per trial)")
    ax.legend()
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    options = harness.parse_args(__doc__.splitlines()[0], argv)
    harness.prepare_process()
    trials, repeats, count_trials = (10, 1, 5) if options.quick else (100, 2, 20)
    started, machine = time.monotonic(), harness.machine()
    backends = {"sqlite": None, "postgresql": harness.postgres_reason()}
    rows: list[dict[str, Any]] = []
    for backend, reason in backends.items():
        if reason is None:
            rows += measure(backend, trials, repeats, count_trials)
    skipped = {backend: reason for backend, reason in backends.items() if reason is not None}
    if "postgresql" not in skipped:
        machine["postgresql"] = harness.postgres_version()

    ratios = {r["backend"]: r["time_ratio_vs_optuna"] for r in rows if r["variant"] == SUBJECT}
    verdict = {backend: ratio <= TARGET_RATIO[backend] for backend, ratio in ratios.items()}
    columns = ["backend", "variant", "trials_per_s", "ms_per_trial", "time_ratio_vs_optuna",
               "last_tenth_trials_per_s", "statements_per_trial", "commits_per_trial", "user_attrs_per_trial"]
    table = report.markdown_table(rows, columns)
    print(table)
    for backend, reason in skipped.items():
        print(f"{backend} skipped: {reason}")

    plot(rows, report.plot_path(options.out, NAME))
    harness.finish(machine, started)
    payload = {
        "benchmark": NAME, "quick": options.quick, "machine": machine,
        "settings": {"trials": trials, "repeats": repeats, "count_trials": count_trials, "epochs_reported": EPOCHS,
                     "sampler": "random (seed 0)", "pruner": "none", "space": SPACE},
        "skipped": skipped, "rows": rows,
        "target": {"time_ratio_at_most": TARGET_RATIO, "ratio": ratios, "met": verdict},
    }
    report.write_json(options.out, NAME, payload)
    verdicts = "; ".join(
        f"{backend}: {ratios[backend]:.2f}× (target ≤ {TARGET_RATIO[backend]:.2f}×) — **{'met' if ok else 'missed'}**"
        for backend, ok in verdict.items()
    )
    body = "\n\n".join([
        f"`python -m benchmarks.overhead{' --quick' if options.quick else ''}`: {trials} trials per run, "
        f"median of {repeats} interleaved run(s), a fresh database per run, random sampler, no pruner, "
        f"{EPOCHS} epoch reports per trial; SQL counts from a separate {count_trials}-trial pass.",
        report.machine_line(machine),
        table,
        *[f"{backend} skipped: {reason}" for backend, reason in skipped.items()],
        "![ms per trial](benchmarks/overhead.png)",
        f"Target: gapsweep's loop at most the given multiple of plain Optuna's time per trial doing the same "
        f"work. {verdicts}.",
    ])
    report.write_section(options.out, NAME, TITLE, body)


if __name__ == "__main__":
    main()
