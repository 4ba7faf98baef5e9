"""gapsweep's own tables, beside Optuna's: trained models and per-epoch checkpoints, and the
per-example val losses of complete trials (``gapsweep.storage.val_losses``).

Optuna has no place for binary blobs that every worker can reach (its artifact store needs a
shared file system), so models live in ``gapsweep_artifacts`` in the same database. Rows are
keyed by study *name* and trial number, so they survive ``copy_study`` into another database.
``gapsweep_schema`` holds the version of these tables; Optuna's schema is left to Optuna.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gapsweep.errors import StorageError

SCHEMA_VERSION = 2
MODEL = "model"
CHECKPOINT = "checkpoint"

metadata = sa.MetaData()
schema_table = sa.Table(
    "gapsweep_schema",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
)
artifacts_table = sa.Table(
    "gapsweep_artifacts",
    metadata,
    sa.Column("artifact_id", sa.Integer, primary_key=True),
    sa.Column("study_name", sa.String(512), nullable=False),
    sa.Column("trial_number", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("epoch", sa.Integer, nullable=True),
    sa.Column("meta_json", sa.Text, nullable=False, default="{}"),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("study_name", "trial_number", "kind", name="uq_gapsweep_artifact"),
)

#: Per-example val losses of a complete trial at its restored epoch (float32, little-endian):
#: the paired selection rule compares trials row by row on the val rows they all share.
val_losses_table = sa.Table(
    "gapsweep_val_losses",
    metadata,
    sa.Column("study_name", sa.String(512), primary_key=True),
    sa.Column("trial_number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("epoch", sa.Integer, nullable=True),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("losses", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

#: Upgrades from version N to N + 1; the list grows with the schema and never shrinks.
_UPGRADES: list[Callable[[Connection], None]] = [
    lambda conn: val_losses_table.create(conn, checkfirst=True),  # 1 → 2: per-example val losses
]


@dataclass(frozen=True)
class Artifact:
    study: str
    trial_number: int
    kind: str
    epoch: int | None
    meta: dict[str, Any]
    data: bytes


def ensure_schema(engine: Engine) -> None:
    """Create gapsweep's tables, or bring older ones up to ``SCHEMA_VERSION``."""
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        version = conn.execute(sa.select(schema_table.c.version).where(schema_table.c.id == 1)).scalar()
        if version is None:
            conn.execute(sa.insert(schema_table).values(id=1, version=SCHEMA_VERSION))
            return
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"this database's gapsweep tables are version {version}, newer than this gapsweep "
                f"understands ({SCHEMA_VERSION}); upgrade gapsweep"
            )
        for step in _UPGRADES[version - 1 : SCHEMA_VERSION - 1]:
            step(conn)
        conn.execute(sa.update(schema_table).where(schema_table.c.id == 1).values(version=SCHEMA_VERSION))


def schema_version(engine: Engine) -> int | None:
    """The version of gapsweep's tables, or None where they were never created."""
    if not sa.inspect(engine).has_table("gapsweep_schema"):
        return None
    with engine.connect() as conn:
        return conn.execute(sa.select(schema_table.c.version).where(schema_table.c.id == 1)).scalar()


def _where(study: str, trial_number: int | None = None, kind: str | None = None) -> Any:
    clauses = [artifacts_table.c.study_name == study]
    if trial_number is not None:
        clauses.append(artifacts_table.c.trial_number == trial_number)
    if kind is not None:
        clauses.append(artifacts_table.c.kind == kind)
    return sa.and_(*clauses)


def save(
    engine: Engine, study: str, trial_number: int, kind: str, data: bytes, *, meta: dict[str, Any] | None = None, epoch: int | None = None
) -> None:
    """Store (or replace) one artifact in a single transaction: never half-written."""
    with engine.begin() as conn:
        conn.execute(sa.delete(artifacts_table).where(_where(study, trial_number, kind)))
        conn.execute(
            sa.insert(artifacts_table).values(
                study_name=study,
                trial_number=trial_number,
                kind=kind,
                epoch=epoch,
                meta_json=json.dumps(meta or {}),
                data=data,
                created_at=datetime.now(timezone.utc).replace(tzinfo=None),
            )
        )


def load(engine: Engine, study: str, trial_number: int, kind: str) -> Artifact | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(artifacts_table.c.epoch, artifacts_table.c.meta_json, artifacts_table.c.data).where(
                _where(study, trial_number, kind)
            )
        ).first()
    if row is None:
        return None
    return Artifact(study, trial_number, kind, row.epoch, json.loads(row.meta_json), bytes(row.data))


def trial_numbers(engine: Engine, study: str, kind: str) -> list[int]:
    """Trials of ``study`` that hold an artifact of ``kind``, without reading the blobs."""
    with engine.connect() as conn:
        return sorted(
            conn.execute(sa.select(artifacts_table.c.trial_number).where(_where(study, kind=kind))).scalars().all()
        )


def delete(engine: Engine, study: str, *, kind: str, keep: set[int] | None = None, trial_number: int | None = None) -> int:
    """Drop artifacts of ``kind`` (all but ``keep``, or just one trial's); returns how many."""
    condition = _where(study, trial_number, kind)
    if keep:
        condition = sa.and_(condition, artifacts_table.c.trial_number.not_in(sorted(keep)))
    with engine.begin() as conn:
        return conn.execute(sa.delete(artifacts_table).where(condition)).rowcount or 0


def delete_all(engine: Engine, study: str) -> int:
    """Drop every row gapsweep stored for ``study`` (models, checkpoints, per-example val losses)
    in one transaction; returns how many models and checkpoints went."""
    with engine.begin() as conn:
        if (schema_version(engine) or 0) >= 2:
            conn.execute(sa.delete(val_losses_table).where(val_losses_table.c.study_name == study))
        return conn.execute(sa.delete(artifacts_table).where(_where(study))).rowcount or 0


def copy(source: Engine, target: Engine, study: str, new_study: str | None = None) -> int:
    """Copy every artifact of ``study`` into another database (used by ``migrate``)."""
    ensure_schema(target)
    moved = 0
    with source.connect() as conn:
        rows = conn.execute(sa.select(artifacts_table).where(_where(study))).mappings().all()
    for row in rows:
        save(
            target, new_study or study, row["trial_number"], row["kind"], bytes(row["data"]),
            meta=json.loads(row["meta_json"]), epoch=row["epoch"],
        )
        moved += 1
    return moved
