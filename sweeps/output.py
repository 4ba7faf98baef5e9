"""Render query results as a table for people, or JSON/CSV for scripts."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Sequence

from storage.queries import StudySummary, TrialRecord

_TRIAL_COLUMNS = ("number", "state", "score", "val_loss", "train_loss", "gap", "best_epoch", "epochs_run")


def to_json(payload: Any) -> str:
    """Strict JSON: NaN and infinities (a diverged trial's curve) become null."""
    return json.dumps(_finite(payload), indent=2, default=str, allow_nan=False)


def _finite(payload: Any) -> Any:
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {key: _finite(value) for key, value in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [_finite(value) for value in payload]
    return payload


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table; the first row is the header."""
    cells = [list(columns)] + [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _flat(record: TrialRecord) -> dict[str, Any]:
    summary = record.summary()
    params = summary.pop("params")
    return {**summary, **{f"param.{key}": value for key, value in params.items()}}


def trials_table(records: Sequence[TrialRecord]) -> str:
    rows = [_flat(record) for record in records]
    params = sorted({key for row in rows for key in row if key.startswith("param.")})
    return table(rows, list(_TRIAL_COLUMNS) + params)


def trials_csv(records: Sequence[TrialRecord]) -> str:
    rows = [_flat(record) for record in records]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def studies_table(studies: Sequence[StudySummary]) -> str:
    rows = [study.to_dict() for study in studies]
    return table(rows, ["study", "complete", "pruned", "fail", "running", "waiting", "stale"])
