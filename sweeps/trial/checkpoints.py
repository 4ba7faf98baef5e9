"""Checkpoints in the study's artifact store, so a retried trial resumes where its worker died.

A checkpoint holds the model after a finished epoch (weights and optimizer state), the weights
of the best epoch so far (what early stopping will restore), early stopping's counters and the
curves. It is one row in ``gapsweep_artifacts`` (its bytes in that row, or in a shared folder or
S3 that the row points at), replaced in a single transaction once the new bytes are whole, and
deleted when the trial finishes.

Checkpoints are taken by time, not by epoch: at the end of the first epoch that finishes at
least ``$GAPSWEEP_CHECKPOINT_S`` seconds (default 30) after the trial's start or its last
checkpoint. Serializing the model and writing a blob every epoch cost more than the epochs of
small models; by time, a crash loses at most that many seconds of training, and a trial shorter
than that writes none. ``0`` checkpoints every epoch, ``inf`` never.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gapsweep import env
from gapsweep.storage import artifacts
from gapsweep.storage.artifact_store import ArtifactStore
from gapsweep.storage.backend import Backend


@dataclass
class TrainingState:
    """Everything ``fit`` needs to continue after ``epoch`` (0-based) as if never stopped."""

    epoch: int
    curves: dict[str, list[float]]
    best: float
    best_epoch: int
    wait: int
    model: bytes
    best_weights: list[np.ndarray] = field(default_factory=list)

    def pack(self) -> tuple[bytes, dict[str, Any]]:
        buffer = io.BytesIO()
        arrays = {f"best_{i}": w for i, w in enumerate(self.best_weights)}
        np.savez(buffer, model=np.frombuffer(self.model, dtype=np.uint8), **arrays)
        meta = {"curves": self.curves, "best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "n_best": len(self.best_weights)}
        return buffer.getvalue(), meta

    @classmethod
    def unpack(cls, epoch: int, data: bytes, meta: dict[str, Any]) -> "TrainingState":
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            model = archive["model"].tobytes()
            best_weights = [archive[f"best_{i}"] for i in range(int(meta["n_best"]))]
        return cls(epoch, meta["curves"], float(meta["best"]), int(meta["best_epoch"]), int(meta["wait"]), model, best_weights)


def checkpoint_interval() -> float:
    """Seconds of training between checkpoints: ``$GAPSWEEP_CHECKPOINT_S``, default 30."""
    return env.number("GAPSWEEP_CHECKPOINT_S", 30, minimum=0, meaning="0: every epoch, inf: never")


class CheckpointStore:
    """The checkpoints of one trial, and of the dead trials it retries."""

    def __init__(
        self, backend: Backend, study: str, trial_number: int, retries_of: list[int] | None = None,
        *, interval: float | None = None, store: ArtifactStore | None = None,
    ) -> None:
        """``store``: where the checkpoints' bytes go (None: the store the study was launched with)."""
        self.backend = backend
        self.store = store
        self.study = study
        self.trial_number = trial_number
        self.retries_of = list(retries_of or [])
        self.interval = checkpoint_interval() if interval is None else interval
        #: The epoch training resumed after, once ``latest`` found a checkpoint.
        self.resumed_epoch: int | None = None
        self._last_saved = time.monotonic()
        self._saved_any = False

    def due(self) -> bool:
        """Whether the epoch that just ended should be saved (asked before serializing it)."""
        return time.monotonic() - self._last_saved >= self.interval

    def latest(self) -> TrainingState | None:
        """The most advanced checkpoint among this trial and the ones it retries."""
        # A trial's own number is new when it starts: only the trials it retries can have saved any.
        found = [
            artifact
            for number in reversed(self.retries_of)
            if (artifact := self.backend.load_artifact(self.study, number, artifacts.CHECKPOINT, store=self.store)) is not None
        ]
        if not found:
            return None
        best = max(found, key=lambda artifact: artifact.epoch if artifact.epoch is not None else -1)
        assert best.epoch is not None
        self.resumed_epoch = best.epoch
        return TrainingState.unpack(best.epoch, best.data, best.meta)

    def save(self, state: TrainingState) -> None:
        data, meta = state.pack()
        self.backend.save_artifact(
            self.study, self.trial_number, artifacts.CHECKPOINT, data, meta=meta, epoch=state.epoch, store=self.store,
        )
        self._last_saved = time.monotonic()
        self._saved_any = True

    def clear(self) -> None:
        """Drop this trial's checkpoints and those of the trials it retried."""
        numbers = [self.trial_number] if self._saved_any else []
        numbers += self.retries_of
        self.backend.delete_artifacts(self.study, kind=artifacts.CHECKPOINT, trial_numbers=numbers, store=self.store)
