"""Optuna's gRPC storage proxy in front of a database: many workers, few connections.

``gapsweep proxy --storage postgresql://…`` serves Optuna's proxy (``run_grpc_proxy_server``)
over the database; workers reach a study as ``grpc://host:13000`` through Optuna's
``GrpcStorageProxy`` (``backend.ProxyBackend``). However many workers run, the database sees the
proxy's few connections (PostgreSQL's default limit, 100, ends direct workers near 40).

Optuna's protocol carries its storage API alone, so the storage the proxy serves
(``ProxiedStorage``) does the rest of what a SQL worker does itself, in the same tables, so that
direct readers, direct workers and Optuna's own tools see a proxied study as any other:

- **The budget, exactly.** A new trial is created only while the study's budget (its stored
  configuration's ``trials``) has room, counted under the study lock SQL workers claim under.
  The lock covers one count and one insert, not a worker's whole claim (reaping, sampling), so
  claims barely wait on each other. A refused worker gets ``BudgetTaken`` and waits, as it
  would have had it counted first. Queued trials (retries, starts) are always run.
- **Heartbeats.** A worker's heartbeat arrives as a trial system attribute and is written as the
  database's heartbeat row, on the proxy's clock.
- **User attributes in one request.** A trial's dozen score parts and curves arrive as one trial
  system attribute and are written as the user attributes they are, in one transaction.
- **Reaping.** A thread fails stale trials and queues them again once a heartbeat interval.
- **Records.** A trial's per-example val losses go to gapsweep's table; the index of kept models
  and checkpoints stays in study attributes (workers read it back) and is mirrored into
  gapsweep's artifact table. No bytes travel through the proxy: workers keep them in a store
  they all reach (a shared folder, S3).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import optuna
from sqlalchemy.exc import SQLAlchemyError

from gapsweep.errors import StorageError
from gapsweep.storage import artifacts, queries, records, val_losses
from gapsweep.storage.engine import heartbeat_settings
from gapsweep.storage.heartbeats import open_crash_safe_storage, quiet_experimental, reap
from gapsweep.storage.locks import StudyLock
from gapsweep.storage.optuna_tables import BUDGET_TAKEN, HEARTBEAT_ATTR, USER_ATTRS_ATTR, AdmittingStorage, write_user_attrs
from gapsweep.storage.studies import CONFIG_ATTR, quiet_optuna, room_for_new
from gapsweep.storage.url import mask, parse


class ProxiedStorage(AdmittingStorage):
    """The database as a storage proxy serves it: see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: One claim per study at a time inside the proxy, before the study lock: a request
        #: thread waiting on the database's lock would hold a pooled connection the holder needs.
        self._claims: collections.defaultdict[str, threading.Lock] = collections.defaultdict(threading.Lock)

    @contextlib.contextmanager
    def admission(self, study_id: int) -> Iterator[None]:
        study = self.get_study_name_from_id(study_id)
        budget = (self.get_study_user_attrs(study_id).get(CONFIG_ATTR) or {}).get("trials")
        with self._claims[study], StudyLock(self.engine, study):
            if budget is not None and not room_for_new(queries.state_counts(self.engine, study), budget):
                # Optuna's proxy answers a KeyError as "not found", without a traceback in its log.
                raise KeyError(f"{BUDGET_TAKEN} ({budget} trials)")
            yield

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == HEARTBEAT_ATTR:
            self.record_heartbeat(trial_id)
        elif key == USER_ATTRS_ATTR:
            write_user_attrs(self, trial_id, value)
        else:
            super().set_trial_system_attr(trial_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        study = self.get_study_name_from_id(study_id)
        number = records.val_losses_of(key)
        if number is not None:
            val_losses.save(self.engine, study, number, value["losses"], epoch=value["epoch"])
            return
        super().set_study_system_attr(study_id, key, value)
        named = records.artifact_of(key)
        if named is not None:
            artifacts.set_index(self.engine, study, named[1], named[0], value)


def serve(url: str, *, host: str, port: int, threads: int, processes: int = 1) -> None:
    """Serve the database at ``url`` to workers at ``host:port`` until interrupted.

    One process runs Python's gRPC server under one interpreter lock: about 150 ms of its CPU a
    trial (Optuna's storage, SQLAlchemy's ORM). ``processes`` > 1 starts more servers on the same
    port (gRPC sets ``SO_REUSEPORT``; the kernel spreads the workers' connections), each with its
    own pool; they admit trials under the database's study lock, so the budget stays exact.
    """
    storage = open_crash_safe_storage(url, kind=ProxiedStorage)
    artifacts.ensure_schema(storage.engine)
    stop = threading.Event()
    reaper = threading.Thread(target=_reap_every_interval, args=(storage, stop), daemon=True, name="gapsweep-reaper")
    reaper.start()
    context = multiprocessing.get_context("spawn")
    others = [context.Process(target=_serve_quietly, args=(url, host, port, threads), daemon=True) for _ in range(processes - 1)]
    for process in others:
        process.start()
    print(
        f"gapsweep: serving {mask(parse(url))} to workers at grpc://{host}:{port} "
        f"({processes} process{'es' if processes > 1 else ''}; Ctrl-C stops)", file=sys.stderr, flush=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop ends the other processes too
    try:
        _serve(storage, host, port, threads)
    finally:
        stop.set()
        for process in others:
            process.terminate()
        storage.engine.dispose()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _serve(storage: ProxiedStorage, host: str, port: int, threads: int) -> None:
    try:
        with quiet_experimental():
            # Optuna's trial cache in front, as its proxy's documentation asks: without it each
            # worker's look at the study reads every trial from the database.
            served = optuna.storages.get_storage(storage)
            optuna.storages.run_grpc_proxy_server(served, host=host, port=port, thread_pool=ThreadPoolExecutor(threads))
    except RuntimeError as exc:  # gRPC: "Failed to bind to address …"
        raise StorageError(f"cannot listen at {host}:{port} ({exc}); is another proxy there? choose another --port or --host") from None


def _serve_quietly(url: str, host: str, port: int, threads: int) -> None:
    """Another server process (``serve``'s ``processes``): no reaper, no log but errors."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_crash_safe_storage(url, kind=ProxiedStorage)
    with contextlib.suppress(KeyboardInterrupt):
        _serve(storage, host, port, threads)


def _reap_every_interval(storage: ProxiedStorage, stop: threading.Event) -> None:
    """Fail the stale trials of every study with running trials once a heartbeat interval."""
    while not stop.wait(heartbeat_settings()[0]):
        try:
            for summary in queries.list_studies(storage.engine):
                if summary.counts["RUNNING"]:
                    with quiet_optuna():
                        study = optuna.load_study(study_name=summary.name, storage=storage, sampler=optuna.samplers.RandomSampler())
                    reap(study, storage.engine)
        except SQLAlchemyError as exc:  # the database is away: the next round tries again
            print(f"gapsweep: reaping failed, trying again in {heartbeat_settings()[0]} s: {exc.__class__.__name__}", file=sys.stderr)
