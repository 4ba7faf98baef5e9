"""gapsweep's own tables, beside Optuna's: the index of trained models and per-epoch
checkpoints, and the per-example val losses of complete trials (``gapsweep.storage.val_losses``).

``gapsweep_artifacts`` says which trial holds which kind of artifact, its epoch, size and
metadata, and where its bytes are: in the row's ``data`` for a study whose artifact store is the
database (the default), or under ``location`` in the study's artifact store (a shared folder or
S3, ``gapsweep.storage.artifact_store``), so queries stay fast and Optuna's schema stays Optuna's.
Rows are keyed by study *name* and trial number, so they survive ``copy_study`` into another
database. ``gapsweep_schema`` holds the version of these tables.

Crash safety with a store: the bytes are written first, under an id of their own, then the row
that points at them, in one transaction; the bytes a row replaced or dropped are removed only
after that commits. A worker killed mid-write leaves at most unreferenced bytes, never a row
that points at half a file.
"""

from __future__ import annotations

import contextlib
import json
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Collection

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gapsweep.errors import StorageError
from gapsweep.storage.artifact_store import ArtifactStore, artifact_name, study_store
from gapsweep.storage.durability import transaction
from gapsweep.storage.locks import schema_lock

SCHEMA_VERSION = 4
MODEL = "model"
CHECKPOINT = "checkpoint"
#: File name endings in a store, so a person browsing the folder or bucket knows what is what.
SUFFIXES = {MODEL: ".keras", CHECKPOINT: ".npz"}

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
    #: The bytes, for the database store; empty where ``location`` names them in the study's store.
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("location", sa.String(1024), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
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
    lambda conn: _add_location(conn),  # 2 → 3: bytes in an artifact store, and every artifact's size
    lambda conn: _store_uncompressed(conn),  # 3 → 4: PostgreSQL stops trying to compress the blobs
]


def _store_uncompressed(conn: Connection) -> None:
    """Keep the blob columns out of PostgreSQL's compression (``STORAGE EXTERNAL``).

    A ``.keras`` file or a checkpoint is float weights, which ``pglz`` cannot shrink, yet by
    default PostgreSQL tries on every row over 2 kB: measured here, storing a 2.3 MB model took
    50–60 ms that way and 12–20 ms uncompressed, for the same bytes on disk. It applies to rows
    written from then on; SQLite never compresses.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ALTER TABLE gapsweep_artifacts ALTER COLUMN data SET STORAGE EXTERNAL"))
        conn.execute(sa.text("ALTER TABLE gapsweep_val_losses ALTER COLUMN losses SET STORAGE EXTERNAL"))


def _add_location(conn: Connection) -> None:
    if "location" in {column["name"] for column in sa.inspect(conn).get_columns("gapsweep_artifacts")}:
        return  # created whole by this version's create_all
    conn.execute(sa.text("ALTER TABLE gapsweep_artifacts ADD COLUMN location VARCHAR(1024)"))
    conn.execute(sa.text("ALTER TABLE gapsweep_artifacts ADD COLUMN size BIGINT"))
    conn.execute(sa.update(artifacts_table).values(size=sa.func.length(artifacts_table.c.data)))


@dataclass(frozen=True)
class Artifact:
    study: str
    trial_number: int
    kind: str
    epoch: int | None
    meta: dict[str, Any]
    data: bytes
    #: Its id in the study's artifact store; None where the bytes sat in the database.
    location: str | None = None


def ensure_schema(engine: Engine) -> None:
    """Create gapsweep's tables, or bring older ones up to ``SCHEMA_VERSION``, one process at a time."""
    with schema_lock(engine, "gapsweep_schema"):
        _create_or_upgrade(engine)


def _create_or_upgrade(engine: Engine) -> None:
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        version = conn.execute(sa.select(schema_table.c.version).where(schema_table.c.id == 1)).scalar()
        if version is None:
            _store_uncompressed(conn)
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
    """The version of gapsweep's tables, or None where they were never created.

    Tables at this gapsweep's version never go back to an older one, so once an engine has seen
    them there it is not asked again: every artifact read asks, and each asking is two round trips.
    """
    if engine in _current:
        return SCHEMA_VERSION
    if not sa.inspect(engine).has_table("gapsweep_schema"):
        return None
    with engine.connect() as conn:
        version = conn.execute(sa.select(schema_table.c.version).where(schema_table.c.id == 1)).scalar()
    if version == SCHEMA_VERSION:
        _current.add(engine)
    return version


#: Engines whose database holds gapsweep's tables at ``SCHEMA_VERSION``.
_current: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def _where(study: str, trial_number: int | None = None, kind: str | None = None) -> Any:
    clauses = [artifacts_table.c.study_name == study]
    if trial_number is not None:
        clauses.append(artifacts_table.c.trial_number == trial_number)
    if kind is not None:
        clauses.append(artifacts_table.c.kind == kind)
    return sa.and_(*clauses)


def save(
    engine: Engine, study: str, trial_number: int, kind: str, data: bytes, *, meta: dict[str, Any] | None = None,
    epoch: int | None = None, store: ArtifactStore | None = None, in_trial: bool = False,
) -> None:
    """Store (or replace) one artifact: its bytes in ``store`` (None: the study's own), then its
    row in one transaction. Never half-written; the replaced bytes go once the row is in.
    ``in_trial``: written by a running trial (see ``durability``)."""
    store = store or study_store(engine, study)
    location = None if store.in_database else store.put(artifact_name(study, trial_number, kind), data, SUFFIXES.get(kind, ""))
    try:
        with transaction(engine, in_trial=in_trial) as conn:
            replaced = _locations(conn, _where(study, trial_number, kind))
            conn.execute(sa.delete(artifacts_table).where(_where(study, trial_number, kind)))
            conn.execute(
                sa.insert(artifacts_table).values(
                    study_name=study,
                    trial_number=trial_number,
                    kind=kind,
                    epoch=epoch,
                    meta_json=json.dumps(meta or {}),
                    data=data if location is None else b"",
                    location=location,
                    size=len(data),
                    created_at=datetime.now(timezone.utc).replace(tzinfo=None),
                )
            )
    except BaseException:
        if location is not None:
            with contextlib.suppress(Exception):
                store.remove([location])
        raise
    store.remove(replaced)


def record_row(study: str, trial_number: int, kind: str, entry: dict[str, Any], *, data: bytes | None = None) -> dict[str, Any]:
    """The row of an artifact a ``records`` entry describes: its bytes in the row (``data``), or
    (None) at the entry's location in the study's store."""
    return {
        "study_name": study, "trial_number": trial_number, "kind": kind, "epoch": entry["epoch"],
        "meta_json": json.dumps(entry["meta"]), "data": b"" if data is None else data,
        "location": entry["location"] if data is None else None, "size": entry["size"],
    }


def index_rows(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Index artifacts whose bytes are stored already (``location``) or come with the row
    (``data``), in one transaction: how a journal's snapshot rebuilds its index."""
    if rows:
        with engine.begin() as conn:
            _insert_rows(conn, rows)


def set_index(engine: Engine, study: str, trial_number: int, kind: str, entry: dict[str, Any] | None) -> None:
    """Point one artifact's row at bytes a worker stored already (``entry``: a ``records``
    artifact record) or, for None, drop the row, in one transaction: how a storage proxy
    mirrors its workers' records."""
    with engine.begin() as conn:
        conn.execute(sa.delete(artifacts_table).where(_where(study, trial_number, kind)))
        if entry:
            _insert_rows(conn, [record_row(study, trial_number, kind, entry)])


def _insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    created = datetime.now(timezone.utc).replace(tzinfo=None)
    conn.execute(sa.insert(artifacts_table), [{**row, "created_at": created} for row in rows])


def load(engine: Engine, study: str, trial_number: int, kind: str, *, store: ArtifactStore | None = None) -> Artifact | None:
    """One artifact with its bytes, read from ``store`` (None: the study's own) when not in its row."""
    columns = artifacts_table.c
    query = sa.select(columns.epoch, columns.meta_json, columns.data, _location(engine)).where(_where(study, trial_number, kind))
    missing = None
    while True:
        with engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        if row.location is None:
            data = bytes(row.data)
            break
        if row.location == missing:
            raise StorageError(f"artifact store {store.url} has no {missing}, which trial {trial_number}'s {kind} points at")
        store = store or study_store(engine, study)
        found = store.get(row.location)
        if found is not None:
            data = found
            break
        # Replaced meanwhile (a newer checkpoint, a model that left the top k): its row tells.
        missing = row.location
    return Artifact(study, trial_number, kind, row.epoch, json.loads(row.meta_json), data, row.location)


def trial_numbers(engine: Engine, study: str, kind: str) -> list[int]:
    """Trials of ``study`` that hold an artifact of ``kind``, without reading the blobs."""
    with engine.connect() as conn:
        return sorted(
            conn.execute(sa.select(artifacts_table.c.trial_number).where(_where(study, kind=kind))).scalars().all()
        )


def delete(
    engine: Engine, study: str, *, kind: str, trial_numbers: Collection[int], store: ArtifactStore | None = None,
    in_trial: bool = False,
) -> int:
    """Drop the artifacts of ``kind`` that belong to ``trial_numbers``; returns how many.

    Deleting named trials only, never "all but these", is what keeps concurrent workers safe: a
    model saved for a trial that the caller did not know about is never swept away with the rest.
    The rows go first, in one transaction, then their bytes in ``store`` (None: the study's own).
    ``in_trial``: asked by a running trial (see ``durability``)."""
    if not trial_numbers:
        return 0
    condition = sa.and_(_where(study, kind=kind), artifacts_table.c.trial_number.in_(sorted(trial_numbers)))
    with transaction(engine, in_trial=in_trial) as conn:
        dropped = _locations(conn, condition)
        count = conn.execute(sa.delete(artifacts_table).where(condition)).rowcount or 0
    if dropped:
        (store or study_store(engine, study)).remove(dropped)
    return count


def delete_all(engine: Engine, study: str) -> int:
    """Drop everything gapsweep stored for ``study`` (models, checkpoints, per-example val
    losses); returns how many models and checkpoints went.

    The bytes in the study's store go first, then every row in one transaction: an interrupted
    delete leaves rows to delete again, never rows that a new study of the same name resumes from.
    """
    if (schema_version(engine) or 0) >= 3:
        with engine.connect() as conn:
            locations = _locations(conn, _where(study))
        if locations:
            study_store(engine, study).remove(locations)
    with engine.begin() as conn:
        if (schema_version(engine) or 0) >= 2:
            conn.execute(sa.delete(val_losses_table).where(val_losses_table.c.study_name == study))
        return conn.execute(sa.delete(artifacts_table).where(_where(study))).rowcount or 0


def _location(engine: Engine) -> Any:
    """The ``location`` column, or NULL in a database whose gapsweep tables predate it (read by
    ``export``, ``delete`` or ``migrate`` before any launch upgraded them)."""
    return artifacts_table.c.location if (schema_version(engine) or 0) >= 3 else sa.null().label("location")


def _locations(conn: Connection, condition: Any) -> list[str]:
    """Where the bytes of the rows matching ``condition`` live in the study's store."""
    query = sa.select(artifacts_table.c.location).where(sa.and_(condition, artifacts_table.c.location.is_not(None)))
    return list(conn.execute(query).scalars().all())


def copy(source: Engine, target: Engine, study: str, new_study: str | None = None) -> int:
    """Copy every artifact of ``study`` into another database (used by ``migrate``). The copy
    gets bytes of its own in the target study's store: deleting one study never takes the
    other's models with it."""
    ensure_schema(target)
    with source.connect() as conn:
        keys = conn.execute(sa.select(artifacts_table.c.trial_number, artifacts_table.c.kind).where(_where(study))).all()
    source_store = study_store(source, study)
    moved = 0
    for trial_number, kind in keys:
        found = load(source, study, trial_number, kind, store=source_store)
        if found is not None:  # else dropped meanwhile
            save(target, new_study or study, trial_number, kind, found.data, meta=found.meta, epoch=found.epoch)
            moved += 1
    return moved
