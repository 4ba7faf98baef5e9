"""Storage and queries against a real SQLite file and the real PostgreSQL server."""

from __future__ import annotations

import csv
import io
import json
import time
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy as sa
import pytest

from gapsweep.api import best_trials, get_trial, list_studies, list_trials
from gapsweep.errors import StorageError, StudyNotFoundError
from gapsweep.storage.engine import connect_existing, open_storage
from gapsweep.storage.url import mask, resolve
from gapsweep.cli import main


def _constructed_study(url: str) -> optuna.Study:
    """Trials with known scores, val losses and gaps, written the way the objective writes them."""
    study = optuna.create_study(study_name="built", storage=open_storage(url))
    rows = [  # (score, val_loss, gap)
        (0.50, 0.30, 0.20),
        (0.40, 0.35, 0.05),
        (0.45, 0.25, 0.20),
        (0.60, 0.60, 0.00),
    ]
    for score, val, gap in rows:
        trial = study.ask({"units": optuna.distributions.IntDistribution(8, 64)})
        for key, value in {"score": score, "val_loss": val, "gap": gap, "train_loss": val - gap, "curve.val_loss": [val + 0.1, val]}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, score)
    pruned = study.ask()
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    study.ask()  # left running
    return study


def test_best_by_score_val_loss_and_gap(any_url):
    _constructed_study(any_url)
    assert [t.number for t in best_trials("built", any_url, k=3)] == [1, 2, 0]
    assert [t.number for t in best_trials("built", any_url, k=2, by="val_loss")] == [2, 0]
    assert [t.number for t in best_trials("built", any_url, k=2, by="gap")] == [3, 1]
    top = best_trials("built", any_url, k=1)[0]
    assert top.value == pytest.approx(0.40) and top.attrs["val_loss"] == pytest.approx(0.35)
    assert isinstance(top.params["units"], int)


def test_studies_trials_and_show(any_url, capsys):
    _constructed_study(any_url)
    (summary,) = list_studies(any_url)
    assert summary.name == "built"
    assert (summary.counts["COMPLETE"], summary.counts["PRUNED"], summary.counts["FAIL"], summary.counts["RUNNING"]) == (4, 1, 1, 1)
    assert [t.state for t in list_trials("built", any_url, states=["pruned", "fail"])] == ["PRUNED", "FAIL"]
    assert get_trial("built", 2, any_url).to_dict()["curves"]["val_loss"] == pytest.approx([0.35, 0.25])
    assert main(["studies", "--storage", any_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["complete"] == 4
    assert main(["trials", "--study", "built", "--storage", any_url, "--csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("number,state,score") and len(lines) == 1 + 7
    with pytest.raises(StudyNotFoundError):
        get_trial("built", 99, any_url)


@pytest.mark.parametrize("scheme", ["postgres", "postgresql+psycopg2"])
def test_the_postgres_short_form_and_an_optuna_psycopg2_url_are_postgresql(scheme):
    from gapsweep.storage.url import parse

    assert parse(f"{scheme}://me@db.example:5432/sweeps").drivername == "postgresql+psycopg"


def test_postgres_url_gets_the_psycopg_driver_and_a_masked_password():
    assert resolve("postgresql://u:pw@h/db").startswith("postgresql+psycopg://u:pw@")
    assert mask("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask("postgresql://u:s3cret@host:port/db") == "postgresql://u:***@host:port/db"


def test_unreachable_database_is_one_line_without_the_password(capsys):
    url = "postgresql://gapsweep:s3cret-pw@127.0.0.1:1/nowhere"
    assert main(["studies", "--storage", url]) == 1
    err = capsys.readouterr().err
    assert "s3cret-pw" not in err and "***" in err and err.count("\n") == 1
    with pytest.raises(StorageError, match="cannot use database"):
        open_storage(url)


def test_wrong_credentials_are_reported_masked(postgres_server, capsys):
    url = postgres_server.replace("postgres@", "no_such_role:pw-xyz@")
    assert main(["studies", "--storage", url]) == 1
    err = capsys.readouterr().err
    assert "pw-xyz" not in err and "no_such_role" in err


def test_corrupt_and_foreign_sqlite_files(tmp_path: Path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="not a SQLite database|cannot use database"):
        open_storage(f"sqlite:///{corrupt}")
    with pytest.raises(StorageError):
        connect_existing(f"sqlite:///{corrupt}")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("create table people (name text)")
    with pytest.raises(StorageError, match="not a gapsweep/Optuna database"):
        connect_existing(f"sqlite:///{foreign}")
    with pytest.raises(StorageError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")


def test_user_attrs_written_together_read_back_as_optuna_writes_them(any_url):
    from gapsweep.storage.optuna_tables import set_user_attrs

    study = optuna.create_study(study_name="attrs", storage=open_storage(any_url))
    trial = study.ask()
    trial.set_user_attr("score", 9.0)
    set_user_attrs(trial, {"score": 0.5, "curve.val_loss": [0.7, 0.5], "repro": {"seed": 3}})
    set_user_attrs(trial, {"gap": 0.1})
    assert trial.user_attrs == {"score": 0.5, "curve.val_loss": [0.7, 0.5], "repro": {"seed": 3}, "gap": 0.1}
    study.tell(trial, 0.5)
    stored = optuna.load_study(study_name="attrs", storage=any_url).trials[0].user_attrs
    assert stored == {"score": 0.5, "curve.val_loss": [0.7, 0.5], "repro": {"seed": 3}, "gap": 0.1}
    # A finished trial is refused, as Optuna refuses it, and nothing of the batch is written.
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_user_attrs(trial, {"late": 1, "score": 0.0})
    assert optuna.load_study(study_name="attrs", storage=any_url).trials[0].user_attrs == stored


def test_a_trials_bookkeeping_commits_without_waiting_for_the_disk_and_nothing_else_does(postgres_url):
    from gapsweep.storage.durability import transaction

    engine = open_storage(postgres_url).engine
    setting = "SELECT current_setting('synchronous_commit')"
    with transaction(engine, in_trial=True) as conn:
        assert conn.exec_driver_sql(setting).scalar() == "off"
    with transaction(engine, in_trial=False) as conn:
        assert conn.exec_driver_sql(setting).scalar() == "on"
    with engine.connect() as conn:  # SET LOCAL ended with its transaction, on the same pooled connection
        assert conn.exec_driver_sql(setting).scalar() == "on"


def test_one_statement_heartbeats_are_the_rows_optuna_reads_for_stale_trials(any_url):
    storage = open_storage(any_url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="beats", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    with storage.reaping():
        assert storage._get_stale_trial_ids(study._study_id) == []
    time.sleep(2.2)  # past the grace period: the trial's worker looks dead
    with storage.reaping():
        assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]
    storage.record_heartbeat(trial._trial_id)  # a beat again: the same row, moved forward
    with storage.reaping():
        assert storage._get_stale_trial_ids(study._study_id) == []
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM trial_heartbeats").scalar() == 1


def test_stale_trials_are_looked_for_by_reap_not_before_every_trial(any_url):
    from gapsweep.storage.heartbeats import reap

    storage = open_storage(any_url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="reaped", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    time.sleep(2.2)  # stale now
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    sa.event.listen(storage.engine, "before_cursor_execute", count)
    try:
        optuna.storages.fail_stale_trials(study)  # what Optuna runs before every trial
    finally:
        sa.event.remove(storage.engine, "before_cursor_execute", count)
    assert statements == []
    assert study.get_trials(deepcopy=False)[0].state == optuna.trial.TrialState.RUNNING
    reap(study, storage.engine)  # what a claim runs once a heartbeat interval
    assert study.get_trials(deepcopy=False)[0].state == optuna.trial.TrialState.FAIL


@pytest.mark.parametrize(("pool", "idle"), [("2", {1, 2}), ("0", {0})])
def test_pg_pool_sets_the_connections_a_process_keeps_between_queries(postgres_url, monkeypatch, pool, idle):
    """``$GAPSWEEP_PG_POOL=0``: a worker holds no connection while it trains, so many fit a server."""
    import sqlalchemy as sa

    monkeypatch.setenv("GAPSWEEP_PG_POOL", pool)
    name = f"gapsweep-pool-{pool}"
    storage = open_storage(f"{postgres_url}&application_name={name}")
    optuna.create_study(study_name="pool", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    admin = sa.create_engine(postgres_url)
    with admin.connect() as conn:
        held = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"), {"n": name}).scalar()
    admin.dispose()
    storage.engine.dispose()
    assert held in idle


def test_a_pooled_connection_dropped_while_idle_is_replaced_before_use(postgres_url, monkeypatch):
    """A worker's pooled connection that the server dropped while it trained is pinged and replaced
    at the next checkout, so the query after a long epoch succeeds; connections reused at once
    are not pinged (the ping is what made PostgreSQL trials slower than plain Optuna's)."""
    import sqlalchemy as sa

    from gapsweep.storage import engine as engine_module
    from gapsweep.storage.locks import StudyLock

    monkeypatch.setattr(engine_module, "IDLE_PING_S", 0.2)
    storage = open_storage(postgres_url)
    admin = sa.create_engine(postgres_url)
    try:
        with storage.engine.connect() as conn:
            first = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with storage.engine.connect() as conn:  # reused at once: the same connection, still alive
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() == first
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
        time.sleep(0.3)
        with storage.engine.connect() as conn:
            second = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        assert second != first
        # A ping after idling leaves the connection idle, not inside a transaction: the study lock
        # then takes it in autocommit mode.
        time.sleep(0.3)
        lock = StudyLock(storage.engine, "s")
        lock.acquire()
        lock.release()
    finally:
        admin.dispose()
        storage.engine.dispose()


def test_a_bad_pg_pool_setting_is_one_line(postgres_url, monkeypatch, capsys):
    monkeypatch.setenv("GAPSWEEP_PG_POOL", "many")
    assert main(["studies", "--storage", postgres_url]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "GAPSWEEP_PG_POOL must be a whole number >= 0" in err


def test_structured_attributes_print_as_json_in_show_and_csv(sqlite_url, capsys):
    study = optuna.create_study(study_name="json", storage=open_storage(sqlite_url))
    trial = study.ask()
    trial.set_user_attr("repro", {"seed": 3, "deterministic": False})
    study.tell(trial, 0.5)
    assert main(["show", "json", "0", "--storage", sqlite_url]) == 0
    assert '         repro: {"seed":3,"deterministic":false}' in capsys.readouterr().out.splitlines()
    assert main(["trials", "--study", "json", "--csv", "--storage", sqlite_url]) == 0
    header, row = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert json.loads(row[header.index("repro")]) == {"seed": 3, "deterministic": False}
    # No trial in the state asked for: the header alone, not a blank line.
    assert main(["trials", "--study", "json", "--state", "fail", "--csv", "--storage", sqlite_url]) == 0
    assert list(csv.reader(io.StringIO(capsys.readouterr().out)))[0][:2] == ["number", "state"]


def test_first_launches_racing_on_a_new_postgresql_database_all_get_its_tables(postgres_url):
    """Several workers started at once on an empty database: one creates the tables, the others
    wait for it instead of failing on its half-made ones."""
    import threading

    from gapsweep.storage import artifacts

    barrier, errors = threading.Barrier(4), []

    def first_launch() -> None:
        barrier.wait()
        try:
            storage = open_storage(postgres_url)
            artifacts.ensure_schema(storage.engine)
            storage.engine.dispose()
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=first_launch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with connect_existing(postgres_url).connect() as conn:  # complete: Optuna's version row is there
        import sqlalchemy as sa

        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_a_database_without_its_schema_version_is_being_made_or_was_left_half_made(any_url):
    """Optuna writes its schema version last: a reader tells a database another process is
    creating now (it holds the schema lock) from one a killed launch left half-made, and a
    launch finishes the latter."""
    import sqlalchemy as sa

    from gapsweep.storage.locks import SCHEMA_LOCK, StudyLock

    engine = open_storage(any_url).engine
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
        conn.execute(sa.text("DROP TABLE trial_values"))  # killed in the middle of making the tables
    with StudyLock(engine, SCHEMA_LOCK):  # as a launch making the tables holds it
        with pytest.raises(StorageError, match="is being created by another process right now; run again in a moment"):
            connect_existing(any_url)
    with pytest.raises(StorageError, match="was left half-made \\(a launch stopped while creating its tables\\): launch a sweep"):
        connect_existing(any_url)
    engine.dispose()
    open_storage(any_url).engine.dispose()  # what a launch opens the database with
    connect_existing(any_url).dispose()


def test_an_empty_database_is_told_apart_from_a_foreign_one(postgres_url, capsys):
    import sqlalchemy as sa

    assert main(["best", "--study", "s", "--storage", postgres_url]) == 1
    assert "holds no studies yet (no tables at all); launch a sweep there first" in capsys.readouterr().err
    assert main(["studies", "--storage", postgres_url, "--json"]) == 0  # a listing of none, for scripts
    assert json.loads(capsys.readouterr().out) == []
    assert main(["studies", "--storage", postgres_url]) == 0
    assert "no studies in this database yet" in capsys.readouterr().out
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE invoices (id integer)")
    engine.dispose()
    assert main(["studies", "--storage", postgres_url]) == 1
    assert "is not a gapsweep/Optuna database (no Optuna tables in it)" in capsys.readouterr().err


def test_query_arguments_given_the_way_python_users_write_them(sqlite_url):
    """One state as a plain string filters by it; a storage that is no text is one line."""
    study = optuna.create_study(study_name="q", storage=open_storage(sqlite_url))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert [t.state for t in list_trials("q", sqlite_url, states="complete")] == ["COMPLETE", "COMPLETE"]
    with pytest.raises(StorageError, match="storage must be a database URL such as sqlite:///gapsweep.db, or a pathlib.Path of a SQLite file, got int 3"):
        best_trials("q", 3)  # type: ignore[arg-type]


def test_creating_and_resuming_a_study_logs_nothing_of_optunas(sqlite_url):
    import logging

    from gapsweep.storage.studies import create_or_load

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    optuna.logging.get_logger("optuna").addHandler(handler)
    optuna.logging.set_verbosity(optuna.logging.INFO)  # Optuna's default in a fresh script
    try:
        for _ in range(2):  # created, then resumed
            create_or_load("quiet", open_storage(sqlite_url), sampler=optuna.samplers.RandomSampler(), pruner=optuna.pruners.NopPruner())
        assert optuna.logging.get_verbosity() == optuna.logging.INFO  # the caller's level is given back
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        optuna.logging.get_logger("optuna").removeHandler(handler)
    assert [record.getMessage() for record in records] == []


def test_an_epoch_report_is_one_upsert_and_reads_back_as_optuna_reads_it(any_url):
    storage = open_storage(any_url)
    study = optuna.create_study(study_name="reports", storage=storage)
    trial = study.ask()
    statements: list[str] = []
    sa.event.listen(storage.engine, "before_cursor_execute", lambda conn, cursor, text, *rest: statements.append(text))
    for step, value in enumerate([0.5, float("nan"), float("inf"), float("-inf")]):
        trial.report(value, step)
    assert len(statements) == 2 * 4  # the running check and the upsert, per report
    storage.set_trial_intermediate_value(trial._trial_id, 0, 0.75)  # a step reported again replaces its value
    reported = optuna.load_study(study_name="reports", storage=any_url).trials[0].intermediate_values
    assert reported[0] == 0.75 and np.isnan(reported[1]) and reported[2] == float("inf") and reported[3] == float("-inf")
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_intermediate_value(trial._trial_id, 4, 0.1)
    with pytest.raises(KeyError):
        storage.set_trial_intermediate_value(trial._trial_id + 1000, 0, 0.1)
    storage.engine.dispose()
