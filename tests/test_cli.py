"""The CLI: --help everywhere, and every user mistake as one line, exit 1, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from gapsweep.cli import build_parser, main
from gapsweep.storage.engine import open_storage

COMMANDS = ["launch", "best", "trials", "studies", "show", "export", "worker", "reap", "proxy", "delete", "migrate", "report", "rerun", "verify", "predict"]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: gapsweep" in capsys.readouterr().out


def test_parser_knows_every_command():
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert sorted(choices) == sorted(COMMANDS)


def _fails(argv: list[str], capsys, fragment: str) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("gapsweep: error: ") and "\n" not in err, err
    assert fragment in err, err


def test_launch_bad_inputs_write_nothing(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "out.db"
    url = f"sqlite:///{db}"
    malformed = tmp_path / "space.toml"
    malformed.write_text('[l2]\ntype = "float"\nlow = 1\nhigh = 0.1\n')
    _fails(["launch", "--space", str(malformed), "--storage", url], capsys, "greater than high")
    _fails(["launch", "--space", "resnet", "--storage", url], capsys, "unknown search space 'resnet'")
    _fails(["launch", "--data", "mnist", "--storage", url], capsys, "unknown data 'mnist'")
    nan = tmp_path / "nan.npz"
    np.savez(nan, x_train=np.full((20, 3), np.nan), y_train=np.zeros(20))
    _fails(["launch", "--data", str(nan), "--storage", url], capsys, "NaN/inf")
    shapes = tmp_path / "shapes.npz"
    np.savez(shapes, x_train=np.zeros((20, 3)), y_train=np.zeros(19))
    _fails(["launch", "--data", str(shapes), "--storage", url], capsys, "x has 20 rows but y has 19")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('study = "s"\npruner = "sometimes"\n')
    _fails(["launch", str(sweep), "--storage", url], capsys, "unknown pruner 'sometimes'")
    sweep.write_text('study = "s"\ntrails = 5\n')
    _fails(["launch", str(sweep), "--storage", url], capsys, "unknown sweep setting(s) trails")
    sweep.write_text('study = "s"\n[objective]\ngap_penalty = -1\n')
    _fails(["launch", str(sweep), "--storage", url], capsys, "gap_penalty must be a number >= 0")
    unknown_param = tmp_path / "typo.toml"
    unknown_param.write_text("[dropuot]\ntype = 'float'\nlow = 0.0\nhigh = 0.5\n")
    _fails(["launch", "--space", str(unknown_param), "--storage", url], capsys, "dropuot")
    _fails(["launch", "--storage", "mysql://u:hunter2@localhost/db"], capsys, "unsupported database driver 'mysql'")
    assert not db.exists()
    assert not (tmp_path / "gapsweep.db").exists()


def test_queries_on_unknown_studies_and_databases(tmp_path: Path, capsys):
    db = tmp_path / "q.db"
    url = f"sqlite:///{db}"
    _fails(["best", "--study", "x", "--storage", url], capsys, "no database at")
    assert not db.exists()
    optuna.create_study(study_name="real", storage=url)
    _fails(["best", "--study", "x", "--storage", url], capsys, "no study named 'x'")
    _fails(["trials", "--study", "x", "--storage", url], capsys, "studies: real")
    _fails(["show", "real", "3", "--storage", url], capsys, "has no trial number 3")
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["real"]


def test_a_user_error_prints_no_traceback_from_the_real_command(tmp_path: Path):
    db = tmp_path / "q.db"
    optuna.create_study(study_name="real", storage=f"sqlite:///{db}")
    done = subprocess.run(
        [sys.executable, "-m", "gapsweep.cli", "best", "--study", "ghost", "--storage", f"sqlite:///{db}"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["gapsweep: error: no study named 'ghost' in this database (studies: real)"]


@pytest.mark.slow
def test_launch_says_what_task_it_read_and_how_to_turn_whole_numbers_into_a_regression(tmp_path: Path, capfd):
    rng = np.random.default_rng(4)
    a = rng.normal(size=60)
    price = (200 + 50 * a).round(-1).astype(int)
    (tmp_path / "p.csv").write_text("a,price\n" + "".join(f"{x:.4f},{y}\n" for x, y in zip(a, price)))
    url = f"sqlite:///{tmp_path / 'p.db'}"
    argv = ["launch", "--data", str(tmp_path / "p.csv"), "--target", "price", "--trials", "1", "--storage", url, "--no-progress"]
    assert main([*argv, "--study", "c"]) == 0
    out, err = capfd.readouterr()
    assert "data: classification, " in out and "36 train, 12 val, 12 test rows" in out
    assert "column 'price' holds whole numbers, taken as class labels: --task regression predicts them as numbers" in out
    assert "UserWarning" not in err  # scikit-learn's own guess stays out of the way
    assert "only 12 val rows: their val loss can hardly tell trials apart" in out
    assert main([*argv, "--study", "r", "--task", "regression"]) == 0
    assert "data: regression, 1 target(s); 36 train" in capfd.readouterr().out


def test_a_best_trial_at_chance_level_is_said_plainly(tmp_path: Path, capsys):
    """No trial beat always predicting the class shares: `best` says so under its table, and
    an export of such a trial notes it."""
    from gapsweep.storage import artifacts
    from gapsweep.sweeps.analysis.export import export_best

    url = f"sqlite:///{tmp_path / 'c.db'}"
    study = optuna.create_study(study_name="c", storage=url)
    attrs = {"val_loss": 1.1, "train_loss": 1.09, "prior_loss": 1.0986, "chance_level": True}
    study.add_trial(optuna.trial.create_trial(value=1.1, user_attrs=attrs))
    assert main(["best", "--study", "c", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "trial 0 is at chance level: val loss 1.1000, no better than 1.0986" in out
    assert "no trial learned from these columns: check the target and the columns" in out
    engine = open_storage(url).engine
    artifacts.ensure_schema(engine)
    artifacts.save(engine, "c", 0, artifacts.MODEL, b"a model", meta={"score": 1.1, "val_loss": 1.1, "prior_loss": 1.0986, "chance_level": True})
    engine.dispose()
    exported = export_best("c", tmp_path / "c.keras", url)
    assert exported.note is not None and exported.note.startswith("trial 0 is at chance level")


def test_a_closed_pipe_ends_quietly(tmp_path: Path):
    """``gapsweep show … --json | head -c1``: the reader goes away after one byte, with far more
    than a pipe's buffer still to come; no BrokenPipeError traceback."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(study_name="long", storage=url)
    curve = [1.0 / (epoch + 1) for epoch in range(20_000)]  # ~400 kB of JSON
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"curve.val_loss": curve, "curve.train_loss": curve}))
    command = f"{sys.executable} -m gapsweep.cli show long 0 --json --storage {url} | head -c1"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.stdout == "{"


def test_tensorflow_import_noise_is_held_back_and_every_other_line_passed_on(capfd):
    import os

    from gapsweep.quiet import without_import_noise

    with without_import_noise():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1.0  1 port.cc:153] oneDNN custom operations are on. You may see ...\n")
        os.write(2, b"Could not load dynamic library 'libcudart.so.12'\n")
    err = capfd.readouterr().err
    assert err == "Could not load dynamic library 'libcudart.so.12'\n"


def test_a_space_mistake_found_by_asking_keras_is_one_line_in_a_fresh_process(tmp_path):
    """Checking an activation name beyond the common ones imports Keras; its import-time log lines
    must not come before the one line that names the mistake."""
    space = tmp_path / "s.toml"
    space.write_text('[activation]\ntype = "categorical"\nchoices = ["relu", "nope"]\n')
    done = subprocess.run(
        [sys.executable, "-m", "gapsweep.cli", "launch", "--study", "s", "--space", str(space), "--data", "wine",
         "--trials", "1", "--jobs", "1", "--storage", f"sqlite:///{tmp_path / 's.db'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("gapsweep: error: parameter 'activation': choice 'nope'") and done.stderr.count("\n") == 1, done.stderr


def test_create_only_prints_a_worker_command_that_pastes(postgres_url, tmp_path, capsys, monkeypatch):
    """No masked password to paste (a worker reads PGPASSWORD), the URL as typed, and --code-dir
    where the study's loader is relative to the sweep file's folder."""
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the project's checkout
    with_password = postgres_url.replace("postgres@", "postgres:S3cret@").replace("+psycopg", "")
    assert main(["launch", "examples/images_loader.toml", "--study", "ready", "--create-only", "--storage", with_password]) == 0
    out = capsys.readouterr().out.strip()
    assert "S3cret" not in out and "***" not in out and "+psycopg" not in out
    assert f"gapsweep worker --study ready --storage '{postgres_url.replace('+psycopg', '')}' --code-dir examples" in out
    assert out.endswith("(the password is left out: give the workers PGPASSWORD or a ~/.pgpass) in a checkout of the project")
    assert main(["launch", "examples/images_loader.toml", "--study", "ready", "--create-only", "--storage", with_password, "--json"]) == 0
    ready = json.loads(capsys.readouterr().out)
    assert ready["study"] == "ready" and ready["worker_command"].startswith("gapsweep worker --study ready --storage ")
    assert "S3cret" not in json.dumps(ready) and ready["note"].startswith("the password is left out")


def test_create_only_leaves_out_a_password_given_in_the_query(postgres_url, capsys):
    """libpq also takes the password as ?password=; the worker command must not print it."""
    with_password = f"{postgres_url}&password=S3cret"
    assert main(["launch", "--data", "wine", "--study", "ready", "--create-only", "--storage", with_password]) == 0
    out = capsys.readouterr().out.strip()
    assert "S3cret" not in out and "password=" not in out and "options=" in out
    assert out.endswith("(the password is left out: give the workers PGPASSWORD or a ~/.pgpass)")


@pytest.mark.parametrize("script", ["best_trials.py", "launch_sweep.py"])
def test_the_example_scripts_end_a_users_mistake_in_one_line(tmp_path, script):
    """What a user copies from scripts/ should show how to keep a mistake to one line."""
    path = Path(__file__).resolve().parent.parent / "scripts" / script
    argv = ["nope"] if script == "best_trials.py" else ["--trials", "0"]
    result = subprocess.run(
        [sys.executable, str(path), *argv, "--storage", f"sqlite:///{tmp_path / 'none.db'}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"{script}: ") and result.stderr.count("\n") == 1, result.stderr
