"""Trial listings with each trial's diagnosis, for the CLI's ``best`` and ``show``.

Kept beside ``sweeps.output`` rather than in it: the plain listings (``trials``, CSV) stay as
they are, and only the outputs that judge a trial carry the diagnosis.
"""

from __future__ import annotations

from typing import Any, Sequence

from storage.queries import TrialRecord
from sweeps.diagnosis import diagnose_record
from sweeps.output import table

_COLUMNS = ("number", "state", "score", "val_loss", "train_loss", "gap", "best_epoch", "epochs_run", "diagnosis")


def diagnosed_summary(record: TrialRecord) -> dict[str, Any]:
    """``record.summary()`` plus ``diagnosis``: ``{"label": ..., "reason": ...}``."""
    return {**record.summary(), "diagnosis": diagnose_record(record).to_dict()}


def diagnosed_table(records: Sequence[TrialRecord]) -> str:
    """The ``trials`` table with a diagnosis column before the parameters."""
    rows = []
    for record in records:
        summary = record.summary()
        params = summary.pop("params")
        rows.append({**summary, "diagnosis": diagnose_record(record).label, **{f"param.{k}": v for k, v in params.items()}})
    params = sorted({key for row in rows for key in row if key.startswith("param.")})
    return table(rows, [*_COLUMNS, *params])
