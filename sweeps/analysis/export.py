"""The best trial's model out of the database: loaded (Keras safe mode), written to a file,
refit on train + val rows, or averaged with the next best trials into one ensemble file.

- Refit (``refit=True``): the chosen configuration is rebuilt from the study's stored
  configuration and the trial's parameters and trained again with its recorded seed on the train
  and val rows together, for the epochs early stopping chose (``best_epoch`` + 1), as
  scikit-learn's ``GridSearchCV(refit=True)`` does. There is no early stopping (no val rows
  remain) and the test rows are never used.
- Ensemble (``ensemble=K``): one functional Keras model whose members are the K best complete
  trials' models as sub-models, averaged by ``keras.layers.Average`` (probabilities for a
  classifier, values for regression). It holds standard layers only, so
  ``keras.models.load_model(path)`` reads it without custom objects. For cross-entropy on
  probabilities and for squared error, the averaged prediction's loss is at most the members'
  mean loss on every example (Jensen's inequality). Without refit, the members are the best
  trials that kept a trained model (``objective.keep_models``); with refit, the K best complete
  trials are each refit.

Every model written takes raw rows: the data's preprocessing (standardization, imputation,
category encoding) is inside it as Keras layers, and ``gapsweep.json`` in the file names its
inputs and classes (``gapsweep.model_info``). An ensemble averages its members' trained models
behind one copy of those layers.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gapsweep import checks
from gapsweep.storage import trial_keys
from gapsweep.errors import ConfigError, StudyNotFoundError
from gapsweep.storage import artifacts, queries
from gapsweep.storage.engine import reading
from gapsweep.storage.queries import TrialRecord
from gapsweep.storage.studies import CONFIG_ATTR
from gapsweep.sweeps.analysis.reproduce import initial_weights, train_and_val
from gapsweep.sweeps.analysis.reproduce import refit as refit_trial
from gapsweep.sweeps.data import losses
from gapsweep.sweeps.data.datasets import Splits
from gapsweep.sweeps.run.config import SweepConfig, stored_sweep_data
from gapsweep.sweeps.run.reference import chance_sentence
from gapsweep.sweeps.data.preprocessing import unwrap
from gapsweep.sweeps.trial.models import model_from_bytes, model_to_bytes, raw_input_model_bytes
from gapsweep.sweeps.trial.trainer import TrainingDiverged

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Exported:
    """What ``export_best`` wrote: the trial (or the ensemble's members, best first) and details."""

    study: str
    out: Path
    trials: list[int]
    refit: bool
    meta: dict[str, Any]
    #: Set when fewer ensemble members than asked for were available.
    note: str | None = None

    @property
    def trial_number(self) -> int:
        """The exported trial, or the best member of an ensemble."""
        return self.trials[0]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"study": self.study, "trial": self.trial_number, "out": str(self.out), "refit": self.refit}
        if len(self.trials) > 1:
            out["members"] = self.trials
        return {**out, **self.meta, "note": self.note}


def load_best_model(study: str, storage: str | None = None, *, trial: int | None = None) -> "keras.Model":
    """The stored model of the study's best trial (or of trial number ``trial``); it takes raw rows."""
    return model_from_bytes(best_artifact(study, storage, trial, retrain="export it with refit=True to train it again").data)


def export_best(
    study: str,
    out: str | os.PathLike[str],
    storage: str | None = None,
    *,
    trial: int | None = None,
    refit: bool = False,
    ensemble: int | None = None,
) -> Exported:
    """Write the best (or a given) trial's model to ``out``, a ``.keras`` file.

    ``refit=True`` trains the trial's configuration again on train + val rows for the epochs
    early stopping chose; ``ensemble=K`` writes one model averaging the K best trials' models
    (each refit when ``refit`` is also set). ``out`` is checked before anything is trained.
    """
    path = check_out(out)
    if ensemble is not None:
        if trial is not None:
            raise ConfigError("--trial exports one trial and --ensemble the K best; give one of them")
        if ensemble < 2:
            raise ConfigError(f"--ensemble needs K >= 2 members, got {ensemble}")
        data, exported = _ensemble(study, storage, ensemble, refit, path)
    elif refit:
        config, splits = stored_sweep_data(study, storage, purpose="a refit")
        with reading(storage) as engine:
            record = queries.get_trial(engine, study, _chosen(engine, study, trial))
        model, meta = _refit(config, splits, record)
        data = raw_input_model_bytes(model, splits.preprocessing)
        exported = Exported(study, path, [record.number], True, {**_recorded(record), **meta})
    else:
        artifact = best_artifact(study, storage, trial)
        data = artifact.data
        exported = Exported(study, path, [artifact.trial_number], False, artifact.meta, _chance_note(artifact))
    path.write_bytes(data)
    return exported


def _chance_note(artifact: artifacts.Artifact) -> str | None:
    """What to say when the exported model predicts no better than a constant."""
    meta = artifact.meta
    if not meta.get(trial_keys.CHANCE_LEVEL) or meta.get("val_loss") is None or meta.get(trial_keys.PRIOR_LOSS) is None:
        return None
    return chance_sentence(artifact.trial_number, float(meta["val_loss"]), float(meta[trial_keys.PRIOR_LOSS]))


def check_out(out: str | os.PathLike[str]) -> Path:
    """Refuse an ``--out`` that Keras cannot save to, before any work is done."""
    path = Path(checks.path("out (--out)", out))
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; name a .keras file, e.g. {path / 'model.keras'}")
    if path.suffix != ".keras":
        raise ConfigError(f"--out {path} must end in .keras (Keras' model file format), e.g. model.keras")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist; create it or choose another --out")
    return path


def refit_epochs(best_epoch: int) -> int:
    """Epochs of a refit: as many as early stopping kept (``best_epoch`` is 0-based), not scaled
    by the growth in rows; each epoch already takes proportionally more steps on the larger set.
    docs/export.md gives the measurement behind the choice."""
    return best_epoch + 1


def _recorded(record: TrialRecord) -> dict[str, Any]:
    """What the sweep recorded about a trial, beside a model trained anew."""
    summary = record.summary()  # its score is the gap-penalized one, also in a multi-objective study
    return {"score": summary["score"], "val_loss": summary["val_loss"], "params": summary["params"]}


def _refit(config: SweepConfig, splits: Splits, record: TrialRecord) -> tuple["keras.Model", dict[str, Any]]:
    repro = record.attrs.get(trial_keys.REPRO)
    best_epoch = record.attrs.get(trial_keys.BEST_EPOCH)
    if record.state != "COMPLETE" or not isinstance(repro, dict) or best_epoch is None:
        raise StudyNotFoundError(
            f"trial {record.number} is {record.state.lower()} or lacks its recorded seed and best epoch; "
            "refit a complete trial"
        )
    epochs = refit_epochs(int(best_epoch))
    seed = int(repro["seed"])
    try:
        # The linear start refits from the reference fitted on the same train + val rows.
        initial = initial_weights(config, record, train_and_val(splits))
        model = refit_trial(config, record.summary()["params"], seed, splits, epochs=epochs, initial=initial)
    except TrainingDiverged as exc:
        raise ConfigError(f"refitting trial {record.number} diverged ({exc}); export it without --refit") from None
    rows = len(splits.x_train) + len(splits.x_val)
    steps = int(model.optimizer.iterations.numpy())  # the exported file holds no optimizer: record it here
    return model, {"refit_epochs": epochs, "refit_rows": rows, "refit_steps": steps, "seed": seed}


def _chosen(engine: Any, study: str, trial: int | None) -> int:
    """``trial``, or the number of the study's best complete trial."""
    queries.study_id(engine, study)
    if trial is not None:
        queries.get_trial(engine, study, trial)  # a number the study never had is named as such
        return trial
    best = queries.best_values(engine, study, 1)
    if not best:
        raise StudyNotFoundError(f"study '{study}' has no complete trial yet, so it has no model; launch it first")
    return best[0].number


def _ensemble(study: str, storage: str | None, k: int, refit: bool, path: Path) -> tuple[bytes, Exported]:
    """The ensemble file's bytes: up to K trials' models (stored, or refit) averaged.

    Where stored models allow, the members are chosen on the val rows by forward selection
    (``forward_selection``), so the average never has a higher val loss than the study's pick:
    averaging in a weaker trial can cost more than the diversity gains. Without stored models, a
    refit ensemble takes the K best trials.
    """
    config, splits = stored_sweep_data(study, storage, purpose="choosing and refitting ensemble members")
    with reading(storage) as engine:
        complete = queries.state_counts(engine, study)["COMPLETE"]
        ranked = [standing.number for standing in queries.best_values(engine, study, complete)] if complete else []
        stored = set(artifacts.trial_numbers(engine, study, artifacts.MODEL)) if artifacts.schema_version(engine) else set()
        blobs = [blob for number in ranked if number in stored and (blob := artifacts.load(engine, study, number, artifacts.MODEL))]
        selected_from = len(blobs) if len(blobs) >= 2 else None  # stored models to choose among
        if selected_from is not None:
            predictions = [unwrap(model_from_bytes(blob.data, compile=False)).predict(splits.x_val, verbose=0) for blob in blobs]
            picked = forward_selection(predictions, splits, k)
            chosen, blobs = [blobs[i].trial_number for i in picked], [blobs[i] for i in picked]
        elif refit and len(ranked) >= 2:
            chosen = ranked[:k]
        else:
            where = "are complete" if refit else "have a stored model"
            found = len(ranked) if refit else len(blobs)
            raise StudyNotFoundError(
                f"only {found} trial(s) of study '{study}' {where}; an ensemble needs at least 2"
                + ("" if refit or len(ranked) < 2 else " (raise objective.keep_models, or add --refit to retrain the best trials)")
            )
        records = [queries.get_trial(engine, study, number) for number in chosen] if refit else []
    note = _members_note(k, len(chosen), selected_from, len(ranked), config.objective.keep_models)
    meta: dict[str, Any] = {}
    if refit:
        data = []
        for record in records:
            model, member_meta = _refit(config, splits, record)
            data.append(model_to_bytes(model))
            meta.setdefault("refit_rows", member_meta["refit_rows"])
            meta.setdefault("refit_epochs", []).append(member_meta["refit_epochs"])
    else:
        data = [blob.data for blob in blobs]  # stored models take raw rows: their trained part is averaged
    ensemble = average_models(data, chosen)
    if not refit:  # refit members have seen the val rows: their val loss would mean nothing
        meta.update(_val_losses(ensemble, splits, chosen))
    return raw_input_model_bytes(ensemble, splits.preprocessing), Exported(study, path, chosen, refit, meta, note)


def forward_selection(predictions: list[np.ndarray], splits: Splits, k: int) -> list[int]:
    """Positions of the ensemble's members among ``predictions`` (val-row predictions, the study's
    pick first): the pick alone, then one at a time the model whose addition lowers the average's
    val loss most, until ``k`` members or until no addition lowers it (Caruana et al., 2004,
    without repeats)."""

    def loss(members: list[int]) -> float:
        average = np.mean([predictions[i] for i in members], axis=0)
        return float(losses.per_example(splits.task, splits.y_val, average).mean())

    chosen, current = [0], loss([0])
    while len(chosen) < k:
        options = [(loss([*chosen, i]), i) for i in range(len(predictions)) if i not in chosen]
        if not options or min(options)[0] >= current:
            break
        current, best = min(options)
        chosen.append(best)
    return chosen


def _members_note(k: int, members: int, stored: int | None, complete: int, keep: int) -> str | None:
    """Why the ensemble has fewer than ``k`` members, if it has."""
    if members >= k:
        return None
    if stored is None:
        why = f"the study has {complete} complete trials"
    elif stored < k and members == stored:
        why = f"only {stored} trials have a stored model (the study keeps the best objective.keep_models = {keep})"
    else:
        why = f"adding any other of the {stored} stored models did not lower the val loss of the average"
    return f"asked for {k} members but {why}; the ensemble averages {members}"


def outputs_logits(model: "keras.Model") -> bool:
    """Whether the trained model inside ``model`` ends in logits (its loss has ``from_logits=True``)."""
    return _from_logits(unwrap(model).get_compile_config())


def _from_logits(compile_config: dict[str, Any] | None) -> bool:
    loss = (compile_config or {}).get("loss")
    return isinstance(loss, dict) and bool(loss.get("config", {}).get("from_logits"))


def average_models(blobs: list[bytes], numbers: list[int]) -> "keras.Model":
    """One functional model averaging the outputs of the models in ``blobs`` (trials ``numbers``)
    on the preprocessed features; a stored model's raw-input layers are taken off first.

    The members are loaded without their optimizers; the ensemble is compiled like the first
    member, so ``evaluate`` reports the same metrics (its ``loss`` adds every member's L2 term,
    its ``pure_loss`` metric does not).
    """
    import keras

    compile_config = unwrap(model_from_bytes(blobs[0])).get_compile_config()
    if _from_logits(compile_config):
        raise ConfigError(
            f"trial {numbers[0]}'s model outputs logits (its loss has from_logits=True); averaging needs "
            "probabilities: end the model with a softmax/sigmoid layer"
        )
    members = [unwrap(model_from_bytes(blob, compile=False)) for blob in blobs]
    if any(len(member.inputs) != 1 for member in members):
        raise ConfigError("an ensemble needs models with one input each")
    inputs = keras.Input(shape=tuple(members[0].inputs[0].shape[1:]), name="features")
    for number, member in zip(numbers, members):
        member.name = member_name(number)  # sub-models need distinct names
    outputs = [member(inputs) for member in members]
    output = keras.layers.Average(name="average")(outputs) if len(outputs) > 1 else outputs[0]
    ensemble = keras.Model(inputs, output, name="gapsweep_ensemble")
    if compile_config is not None:
        ensemble.compile_from_config(compile_config)
    return ensemble


def member_name(number: int) -> str:
    """The name of trial ``number``'s sub-model inside an ensemble (``ensemble.get_layer(name)``)."""
    return f"trial_{number}"


def _val_losses(ensemble: "keras.Model", splits: Splits, numbers: list[int]) -> dict[str, Any]:
    """The ensemble's and each member's pure val loss on the study's val rows."""
    predictions = [ensemble.get_layer(member_name(number)).predict(splits.x_val, verbose=0) for number in numbers]
    average = ensemble.predict(splits.x_val, verbose=0)
    members = [float(losses.per_example(splits.task, splits.y_val, p).mean()) for p in predictions]
    return {
        "val_loss": float(losses.per_example(splits.task, splits.y_val, average).mean()),
        "member_val_losses": dict(zip(map(str, numbers), members)),
        "members_mean_val_loss": statistics.fmean(members),
    }


def best_artifact(
    study: str, storage: str | None, trial: int | None, *, retrain: str = "add --refit to train it again"
) -> artifacts.Artifact:
    """The stored model of the best (or a given) trial; ``retrain`` says, for a complete trial
    without one, how the caller's command trains it again."""
    with reading(storage) as engine:
        trial = _chosen(engine, study, trial)
        found = artifacts.load(engine, study, trial, artifacts.MODEL) if artifacts.schema_version(engine) else None
        state = queries.get_trial(engine, study, trial).state if found is None else "COMPLETE"
        objective = (queries.study_user_attrs(engine, study).get(CONFIG_ATTR) or {}).get("objective") or {}
    if found is None:
        # Refit retrains a complete trial only; a pruned or failed one has no best epoch to retrain to.
        status = "it failed" if state == "FAIL" else f"it is {state.lower()}"  # Optuna's FAIL is no adjective
        fix = f", or {retrain}" if state == "COMPLETE" else f" ({status}: no refit can train it again either)"
        if objective.get("keep_models") == 0 and state == "COMPLETE":
            raise StudyNotFoundError(f"study '{study}' keeps no trained models (objective.keep_models = 0); {retrain}")
        raise StudyNotFoundError(
            f"trial {trial} of study '{study}' has no stored model (models are kept for the top trials only); "
            f"pass --trial with one of the best trials{fix}"
        )
    return found
