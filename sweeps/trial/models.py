"""Trained models as bytes, and the keeper that stores the top k trials' models in the study's
artifact store (the database by default; see ``gapsweep.storage.artifact_store``).

A ``.keras`` file is a zip of config and weights; it is stored whole, so any worker or laptop
that reaches the database and the store gets a ready model. A kept model is stored behind the data's
preprocessing (``Preprocessing.wrap``), so it takes raw rows, with ``gapsweep.json`` (inputs,
class names) in the zip. Loading uses Keras' safe mode, which refuses models that would run
arbitrary code (lambda layers) on deserialization.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gapsweep.storage import artifacts, queries
from gapsweep.storage.artifact_store import ArtifactStore
from gapsweep.storage.backend import Backend
from gapsweep.sweeps.data.preprocessing import Preprocessing, with_info
from gapsweep.sweeps.trial.inference import LossFunction, accuracy, predict
from gapsweep.sweeps.trial.runtime import init_tensorflow

if TYPE_CHECKING:
    import keras

    from gapsweep.sweeps.data.datasets import Splits


def model_to_bytes(model: "keras.Model") -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


def raw_input_model_bytes(model: "keras.Model", preprocessing: Preprocessing) -> bytes:
    """The stored form of a trained model: behind ``preprocessing``, so that it takes raw rows,
    with ``gapsweep.json`` describing its inputs and classes."""
    return with_info(model_to_bytes(preprocessing.wrap(model)), preprocessing.info())


def model_from_bytes(data: bytes, *, compile: bool = True) -> "keras.Model":
    """The model in ``data``; ``compile=False`` leaves out its loss and optimizer (a model that
    only predicts, such as an ensemble member)."""
    init_tensorflow()
    import keras

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        path.write_bytes(data)
        return keras.saving.load_model(path, safe_mode=True, compile=compile)


def held_out_metrics(model: "keras.Model", splits: "Splits") -> dict[str, float]:
    """Pure loss (and a classifier's accuracy) on the test split, from one prediction: recorded
    with the model, never used to rank."""
    if not len(splits.x_test):
        return {}
    loss = LossFunction(model)
    predictions = predict(model, splits.x_test)
    metrics = {"test_pure_loss": float(loss(splits.y_test, predictions).mean())}
    if splits.task.task == "classification":
        metrics["test_accuracy"] = accuracy(splits.y_test, predictions, loss.from_logits)
    return metrics


class ModelKeeper:
    """Stores a finished trial's model when it ranks in the top ``keep``; drops the rest.

    Expects gapsweep's tables to exist (``gapsweep.storage.artifacts.ensure_schema``).
    """

    def __init__(self, backend: Backend, study: str, keep: int, store: ArtifactStore | None = None) -> None:
        """``store``: where the models' bytes go (None: the store the study was launched with)."""
        self.backend = backend
        self.study = study
        self.keep = keep
        self.store = store
        #: The ``keep``-th best standing at the last ranking. Complete trials never leave a study,
        #: so the true one can only be better: a trial behind it cannot make the top ``keep``.
        self._last_kept: queries.Standing | None = None

    def _kept(self, standing: queries.Standing | None = None) -> set[int]:
        """The trials whose models stay if this one finishes at ``standing`` (by its first
        objective value: the score, or the val loss in a multi-objective study); without it, the
        top ``keep`` of the complete trials."""
        ranked = self.backend.best_values(self.study, self.keep)
        if len(ranked) == self.keep:
            self._last_kept = ranked[-1]
        if standing is not None:
            ranked = sorted([*ranked, standing])
        return {other.number for other in ranked[: self.keep]}

    def qualifies(self, standing: queries.Standing) -> bool:
        """Whether a trial finishing at ``standing`` would be kept (asked before costly work); a
        trial behind the last ranking's ``keep``-th is refused without asking the database."""
        if self.keep < 1 or (self._last_kept is not None and standing > self._last_kept):
            return False
        return standing.number in self._kept(standing)

    def offer(
        self, standing: queries.Standing, model: "keras.Model", meta: dict[str, Any], preprocessing: Preprocessing
    ) -> bool:
        """Save ``model`` behind ``preprocessing`` if ``standing`` places it among the best; returns
        whether it was kept."""
        if not self.qualifies(standing):
            return False
        data = raw_input_model_bytes(model, preprocessing)
        self.backend.save_artifact(self.study, standing.number, artifacts.MODEL, data, meta=meta, store=self.store)
        self._drop_outranked(standing)
        return True

    def trim(self) -> None:
        """Drop the models of finished trials outside the top ``keep``: what offers left behind
        when trials of several workers finished together (a worker calls this when it stops)."""
        if self.keep >= 1:
            self._drop_outranked(None)

    def _drop_outranked(self, standing: queries.Standing | None) -> None:
        """Drop the models that the top ``keep`` (with ``standing``, a trial about to finish) leave out.

        Only trials that had finished before the ranking can be judged by it: a model that another
        worker keeps for a trial still running (or one that finishes meanwhile) stays until a later
        ranking sees it. The order of the two queries is what makes this safe.
        """
        finished = self.backend.trial_numbers(self.study, ["COMPLETE", "PRUNED", "FAIL"])
        dropped = finished - self._kept(standing)
        self.backend.delete_artifacts(
            self.study, kind=artifacts.MODEL, trial_numbers=dropped, store=self.store,
            in_trial=standing is not None,  # an offer's: the offering trial is still running
        )
