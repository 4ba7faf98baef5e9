"""Bookkeeping writes that need not wait for the disk.

On PostgreSQL every commit waits until its WAL reaches the disk (a few ms each). gapsweep's own
writes around a trial (its user attributes, per-example val losses, the model and checkpoint
index, the heartbeat) are each followed by a commit of Optuna's that does wait: the next
intermediate value or the trial's final state. A synchronous commit flushes all WAL written
before it, so those rows reach the disk no later than the trial's own progress does; committing
them with ``synchronous_commit = off`` drops the wait, not the guarantee.

What it changes: a crash of the database *server* between such a write and the next Optuna commit
loses the write (never half of it: the database stays consistent), together with the trial's
progress since, and the trial is retried from its last checkpoint as after a worker crash. A
crash of the worker loses nothing: the server already holds the commit. SQLite is unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from sqlalchemy.engine import Connection, Engine


@contextlib.contextmanager
def transaction(engine: Engine, *, in_trial: bool) -> Iterator[Connection]:
    """``engine.begin()``; for a write of a running trial (``in_trial``), one whose commit does
    not wait for the WAL flush. Writes outside a trial (``migrate``'s copies) keep waiting: no
    commit of Optuna's follows them."""
    with engine.begin() as conn:
        if in_trial and conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
        yield conn
