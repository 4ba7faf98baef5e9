"""Render query results as a table for people, or JSON/CSV for scripts."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Sequence

from gapsweep.storage.queries import StudySummary, TrialRecord
from gapsweep.sweeps.analysis.diagnosis import diagnose_record

TRIAL_COLUMNS = ("number", "state", "score", "val_loss", "train_loss", "gap", "best_epoch", "epochs_run")


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


def plain(value: Any) -> Any:
    """A value as text and CSV cells show it: a dict or list as compact JSON, never Python's repr."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_finite(value), separators=(",", ":"), default=str)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    return str(plain(value))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table; the first row is the header."""
    cells = [list(columns)] + [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def with_diagnosis(record: TrialRecord, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """A trial summary (``record.summary()`` unless given) with its curves' diagnosis."""
    return {**(summary or record.summary()), "diagnosis": diagnose_record(record).to_dict()}


def _flat(summary: dict[str, Any]) -> dict[str, Any]:
    row = {key: value for key, value in summary.items() if key != "params"}
    if isinstance(row.get("diagnosis"), dict):
        row["diagnosis"] = row["diagnosis"]["label"]
    return {**row, **{f"param.{key}": value for key, value in summary.get("params", {}).items()}}


def trials_table(summaries: Sequence[dict[str, Any]], columns: Sequence[str] = TRIAL_COLUMNS) -> str:
    """Trial summaries as a table: the given columns (and diagnosis, if present), then params."""
    rows = [_flat(summary) for summary in summaries]
    extra = ["diagnosis"] if any("diagnosis" in row for row in rows) else []
    params = sorted({key for row in rows for key in row if key.startswith("param.")})
    return table(rows, [*columns, *extra, *params])


def trials_csv(summaries: Sequence[dict[str, Any]]) -> str:
    """Trial summaries as CSV; with none, the header alone (a script reading it still finds its columns)."""
    rows = [_flat(summary) for summary in summaries]
    columns = list(dict.fromkeys(key for row in rows for key in row)) or list(TRIAL_COLUMNS)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: plain(value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def studies_table(studies: Sequence[StudySummary]) -> str:
    rows = [study.to_dict() for study in studies]
    return table(rows, ["study", "complete", "pruned", "fail", "running", "waiting", "stale"])
