"""Security defaults: TLS and password sources for PostgreSQL, masked URLs, and code imported
only from inside the worker's project folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from gapsweep.cli import main
from gapsweep.errors import StorageError
from gapsweep.storage.engine import connect_existing, open_storage
from gapsweep.storage.studies import CONFIG_ATTR
from gapsweep.storage.url import mask, parse, resolve
from gapsweep.sweeps.data.datasets import DataSpec
from gapsweep.sweeps.run.config import SweepConfig


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gapsweep: error: ") and err.count("\n") == 1, err
    return err


def test_passwords_are_masked_in_the_user_part_and_in_the_query():
    text = "postgresql://u:s3cret@h:5432/db?password=pw2&sslmode=require"
    assert mask(text) == "postgresql://u:***@h:5432/db?password=***&sslmode=require"
    assert mask(parse(text)) == "postgresql+psycopg://u:***@h:5432/db?password=***&sslmode=require"
    assert mask(parse("postgresql://u@h/db?sslmode=verify-full&PASSWORD=x&password=y")).count("***") == 2
    # TLS settings are kept, unchanged, on the way to libpq.
    kept = resolve("postgresql://u@h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem")
    assert parse(kept).query == {"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem"}


@pytest.mark.parametrize(
    "url",
    [
        "bob:s3cr3t@127.0.0.1", "postgresql://bob:s3cr3t@127.0.0.1:notaport/db", "postgresql://bob:s3cr3t@[::1/db",
        "postgresql://bob:s3cr3t@x@127.0.0.1/db",  # an unencoded @ in the password
    ],
)
def test_a_malformed_url_is_one_line_with_its_password_masked(url, capsys):
    """No scheme, a port that is no number, a broken IPv6 host: refused in one line, never echoed in clear."""
    assert main(["studies", "--storage", url]) != 0
    err = capsys.readouterr().err
    assert "s3cr3t" not in err and "x@" not in err and "bob:***@" in err and err.count("\n") == 1
    assert ("is not a database URL" in err) != ("holds an '@'; write it as %40" in err)
    assert mask("sqlite:///data/a@b.db") == "sqlite:///data/a@b.db"  # an @ in a path is no password


def test_sslmode_require_against_a_server_without_tls_is_one_masked_line(postgres_server, capsys):
    url = _with_query(postgres_server.replace("postgres@", "postgres:pw-in-user@"), "password=pw-in-query&sslmode=require")
    assert main(["studies", "--storage", url]) == 1
    err = _one_line_error(capsys)
    assert "SSL" in err and "sslmode=require" in err, err  # the driver's reason, and the setting that caused it
    assert "pw-in-user" not in err and "pw-in-query" not in err
    for open_ in (open_storage, connect_existing):
        with pytest.raises(StorageError, match="SSL was required") as raised:
            open_(url)
        assert "pw-in" not in str(raised.value) and "\n" not in str(raised.value)
    # verify-full with a CA file reaches libpq too: it asks the server for TLS before reading the file.
    with pytest.raises(StorageError, match="SSL"):
        connect_existing(_with_query(postgres_server, "sslmode=verify-full&sslrootcert=/no/such/ca.pem"))


def _password_libpq_used(url: str) -> str | None:
    engine = connect_existing(url)
    try:
        with engine.connect() as conn:
            return conn.connection.dbapi_connection.info.password
    finally:
        engine.dispose()


def test_a_url_without_password_takes_it_from_pgpassword_or_a_pgpass_file(postgres_url, tmp_path, monkeypatch):
    open_storage(postgres_url).engine.dispose()  # Optuna's tables, so connect_existing accepts it
    assert parse(postgres_url).password is None
    monkeypatch.setenv("PGPASSWORD", "from-environment")
    assert _password_libpq_used(postgres_url) == "from-environment"
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("127.0.0.1:5432:*:postgres:from-pgpass\n")
    pgpass.chmod(0o600)  # libpq ignores a password file others can read
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    assert _password_libpq_used(postgres_url) == "from-pgpass"
    monkeypatch.setenv("HOME", str(tmp_path))  # the default file, ~/.pgpass
    monkeypatch.delenv("PGPASSFILE")
    pgpass.rename(tmp_path / ".pgpass")
    assert _password_libpq_used(postgres_url) == "from-pgpass"
    assert os.environ.get("PGPASSWORD") is None


TINY_HYPERMODEL = """\
from pathlib import Path

import keras

Path(__file__).with_name("IMPORTED").write_text("this module ran")  # shows whether a worker imported it


def build(hp):
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(hp.Int("units", 4, 16), activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2, sampling="log")),
                  loss="sparse_categorical_crossentropy")
    return model
"""

SWEEP_FILE = """\
study = "portable"
hypermodel = "models/tiny.py:build"
max_epochs = 2
trials = 2
pruner = "none"
[data]
source = "digits"
train_fraction = 0.2
"""


def _project(folder: Path) -> Path:
    """A project checkout: a sweep file at its top and the hypermodel in a sub-folder."""
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "tiny.py").write_text(TINY_HYPERMODEL)
    (folder / "sweep.toml").write_text(SWEEP_FILE)
    return folder


def _stored_study(url: str, hypermodel: str, study: str = "written") -> None:
    """A study as any database writer could store it, here naming ``hypermodel`` (no TensorFlow)."""
    config = SweepConfig(study=study, hypermodel="models/tiny.py:build", max_epochs=2, trials=2, pruner="none",
                         data=DataSpec("digits", train_fraction=0.2))
    optuna.create_study(study_name=study, storage=open_storage(url)).set_user_attr(
        CONFIG_ATTR, {**config.to_dict(), "hypermodel": hypermodel}
    )


def _config_of(url: str, study: str) -> dict:
    return optuna.load_study(study_name=study, storage=url).user_attrs[CONFIG_ATTR]


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_a_worker_refuses_code_outside_its_code_dir_and_runs_nothing(kind, tmp_path, sqlite_url, capsys, monkeypatch):
    project = _project(tmp_path / "project")
    elsewhere = _project(tmp_path / "elsewhere")  # e.g. a file an attacker left in /tmp
    (project / "models" / "link.py").symlink_to(elsewhere / "models" / "tiny.py")
    ref = {
        "dotdot": "../elsewhere/models/tiny.py:build",
        "absolute": f"{elsewhere / 'models' / 'tiny.py'}:build",
        "symlink": "models/link.py:build",
    }[kind]
    _stored_study(sqlite_url, ref)
    monkeypatch.chdir(project)
    assert main(["worker", "--study", "written", "--storage", sqlite_url, "--no-progress"]) == 1
    err = _one_line_error(capsys)
    assert f"hypermodel '{ref}' leads outside the project folder {project.resolve()}" in err
    assert ("--code-dir set to a folder that holds the file" in err) == (kind == "absolute")  # mends an old study
    assert not (elsewhere / "models" / "IMPORTED").exists() and not (project / "models" / "IMPORTED").exists()
    assert optuna.load_study(study_name="written", storage=sqlite_url).trials == []
    assert _config_of(sqlite_url, "written")["hypermodel"] == ref  # the refusal writes nothing


def test_launch_refuses_a_hypermodel_outside_the_project_folder(tmp_path, sqlite_url, capsys, monkeypatch):
    project = _project(tmp_path / "project")
    (project / "sweep.toml").write_text(SWEEP_FILE.replace("models/tiny.py", "../outside.py"))
    (tmp_path / "outside.py").write_text(TINY_HYPERMODEL)
    monkeypatch.chdir(tmp_path)  # the sweep file's folder is the project folder, not the current one
    assert main(["launch", "project/sweep.toml", "--storage", sqlite_url, "--create-only"]) == 1
    assert "leads outside the project folder" in _one_line_error(capsys)
    monkeypatch.chdir(project)
    assert main(["launch", "--hypermodel", str(tmp_path / "outside.py") + ":build", "--storage", sqlite_url]) == 1
    assert f"leads outside the project folder {project.resolve()}" in _one_line_error(capsys)
    assert not (tmp_path / "IMPORTED").exists() and not Path(sqlite_url.removeprefix("sqlite:///")).exists()


@pytest.mark.slow
def test_a_study_launched_in_one_checkout_runs_on_a_worker_in_a_copy_elsewhere(tmp_path, sqlite_url, capsys, monkeypatch):
    laptop = _project(tmp_path / "home" / "me" / "project")
    monkeypatch.chdir(tmp_path)  # launched from outside the project: the sweep file's folder is its root
    assert main(["launch", str(laptop / "sweep.toml"), "--storage", sqlite_url, "--create-only"]) == 0
    # The worker command names the project folder the study's code is relative to.
    assert capsys.readouterr().out.strip().endswith("--code-dir home/me/project in a checkout of the project")
    assert _config_of(sqlite_url, "portable")["hypermodel"] == "models/tiny.py:build"

    server = tmp_path / "workspace" / "project"
    shutil.copytree(laptop, server)
    shutil.rmtree(laptop)  # nothing may still read the launching machine's paths
    (server / "models" / "IMPORTED").unlink()
    monkeypatch.chdir(server)  # the default --code-dir
    assert main(["worker", "--study", "portable", "--storage", sqlite_url, "--no-progress"]) == 0
    trials = optuna.load_study(study_name="portable", storage=sqlite_url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 and (server / "models" / "IMPORTED").exists()
    assert all(len(t.user_attrs["curve.val_loss"]) <= 2 for t in trials)

    # A study stored by an older gapsweep holds an absolute path: it runs when that path lies
    # inside --code-dir, and the study then stores it relative.
    legacy = {**_config_of(sqlite_url, "portable"), "hypermodel": f"{server / 'models' / 'tiny.py'}:build", "trials": 3}
    optuna.load_study(study_name="portable", storage=sqlite_url).set_user_attr(CONFIG_ATTR, legacy)
    monkeypatch.chdir(tmp_path)
    assert main(["worker", "--study", "portable", "--storage", sqlite_url, "--no-progress", "--code-dir", str(server)]) == 0
    assert len(optuna.load_study(study_name="portable", storage=sqlite_url).trials) == 3
    assert _config_of(sqlite_url, "portable")["hypermodel"] == "models/tiny.py:build"
    # rerun (and verify) read the hypermodel from --code-dir too.
    capsys.readouterr()
    assert main(["rerun", "portable", "0", "--storage", sqlite_url, "--code-dir", str(server)]) == 0
    assert "trial 0 of 'portable'" in capsys.readouterr().out


def test_a_space_from_python_is_stored_as_its_parameters_so_workers_import_nothing(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    args = ["launch", "--study", "py-space", "--space", "examples/python_space.py:SPACE", "--data", "digits"]
    assert main([*args, "--storage", sqlite_url, "--create-only"]) == 0
    stored = _config_of(sqlite_url, "py-space")
    assert isinstance(stored["space"], dict) and stored["hypermodel"] is None
    assert "python_space" not in json.dumps(stored)
