"""gapsweep's records of a trial kept as study system attributes, where no SQL table is at hand.

A worker on a journal file (``journal``) or behind a storage proxy (``proxy``) writes through
Optuna's storage API alone, so the index of a trial's kept model or checkpoint and its
per-example val losses become study system attributes under these keys. A journal's snapshot
and a proxy read them back into gapsweep's own tables (``artifacts``, ``val_losses``).
"""

from __future__ import annotations

ARTIFACT_PREFIX = "gapsweep:artifact:"
#: ``{"location": …, "epoch": …, "meta": {…}, "size": …}``, or None once dropped.
ARTIFACT_RECORD = ARTIFACT_PREFIX + "{kind}:{number}"
VAL_LOSSES_PREFIX = "gapsweep:val_losses:"
#: ``{"epoch": …, "losses": […]}``.
VAL_LOSSES_RECORD = VAL_LOSSES_PREFIX + "{number}"


def artifact_of(key: str) -> tuple[str, int] | None:
    """The (kind, trial number) an artifact record's key names; None for another key."""
    if not key.startswith(ARTIFACT_PREFIX):
        return None
    kind, number = key[len(ARTIFACT_PREFIX):].split(":")
    return kind, int(number)


def val_losses_of(key: str) -> int | None:
    """The trial number a val-loss record's key names; None for another key."""
    return int(key[len(VAL_LOSSES_PREFIX):]) if key.startswith(VAL_LOSSES_PREFIX) else None
