"""Per-example val losses of complete trials, in gapsweep's table ``gapsweep_val_losses``.

Every trial of a study is validated on the same rows, so two trials can be compared row by row
(paired), which resolves far smaller differences than their val losses' own standard errors. The
objective stores each complete trial's losses at its restored epoch; ``best --rule paired`` reads
them. Losses are stored as float32 bytes (4 bytes a row), keyed by study name and trial number,
so they survive ``migrate`` like the other artifacts. Expects ``artifacts.ensure_schema``.
"""

from __future__ import annotations

import array
import sys
from datetime import datetime, timezone
from typing import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gapsweep.storage.durability import transaction
from gapsweep.storage.artifacts import ensure_schema, schema_version, val_losses_table as table


def _encode(losses: Sequence[float]) -> bytes:
    packed = array.array("f", losses)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _decode(data: bytes) -> list[float]:
    packed = array.array("f")
    packed.frombytes(data)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tolist()


def save(
    engine: Engine, study: str, trial_number: int, losses: Sequence[float], *, epoch: int | None = None, in_trial: bool = False
) -> None:
    """Store (or replace) one trial's per-example losses in a single transaction; ``in_trial``:
    written by the running trial itself (see ``durability``)."""
    where = sa.and_(table.c.study_name == study, table.c.trial_number == trial_number)
    with transaction(engine, in_trial=in_trial) as conn:
        conn.execute(sa.delete(table).where(where))
        conn.execute(
            sa.insert(table).values(
                study_name=study, trial_number=trial_number, epoch=epoch, n=len(losses), losses=_encode(losses),
                created_at=datetime.now(timezone.utc).replace(tzinfo=None),
            )
        )


def load(engine: Engine, study: str, trial_numbers: Sequence[int] | None = None) -> dict[int, list[float]]:
    """The stored losses of ``study``'s trials (all, or the given numbers), by trial number; empty
    where the database has no such table (a study from an older gapsweep)."""
    if (schema_version(engine) or 0) < 2:
        return {}
    query = sa.select(table.c.trial_number, table.c.losses).where(table.c.study_name == study)
    if trial_numbers is not None:
        query = query.where(table.c.trial_number.in_(sorted(trial_numbers)))
    with engine.connect() as conn:
        return {int(number): _decode(bytes(data)) for number, data in conn.execute(query)}


def any_stored(engine: Engine, study: str) -> bool:
    """Whether any trial of ``study`` has stored losses (one indexed lookup, no blob read)."""
    if (schema_version(engine) or 0) < 2:
        return False
    with engine.connect() as conn:
        return conn.execute(sa.select(table.c.trial_number).where(table.c.study_name == study).limit(1)).first() is not None


def copy(source: Engine, target: Engine, study: str, new_study: str | None = None) -> int:
    """Copy every stored row of ``study`` into another database (used by ``migrate``)."""
    if (schema_version(source) or 0) < 2:
        return 0
    ensure_schema(target)
    with source.connect() as conn:
        rows = conn.execute(sa.select(table).where(table.c.study_name == study)).mappings().all()
    for row in rows:
        save(target, new_study or study, row["trial_number"], _decode(bytes(row["losses"])), epoch=row["epoch"])
    return len(rows)
