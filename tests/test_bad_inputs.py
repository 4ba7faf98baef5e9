"""The bad-input suite: every user mistake through the real CLI entry point ends in exactly one
line on stderr naming the problem, a non-zero exit, no traceback, and nothing half-written (no
new file, no change inside an existing database).

Each case runs ``gapsweep.cli.main`` in-process on its own folder; all of them fail before any
model trains, so the suite stays in the quick tier.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import pytest

from fake_trials import add_mixed_trials
from gapsweep.cli import main
from sweep_files import SWEEP

Argv = Callable[[Path, str], list[str]]
Setup = Callable[[Path, str], None]


@dataclass(frozen=True)
class Case:
    name: str
    argv: Argv
    says: str  #: a fragment the one line must hold
    setup: Setup | None = None
    code: int = 1
    env: tuple[tuple[str, str], ...] = ()  #: environment variables set for the command


def write(name: str, text: str) -> Setup:
    def setup(folder: Path, url: str) -> None:
        (folder / name).write_text(text)

    return setup


def npz(name: str, **arrays: np.ndarray) -> Setup:
    def setup(folder: Path, url: str) -> None:
        np.savez(folder / name, **arrays)

    return setup


def both(*setups: Setup) -> Setup:
    def setup(folder: Path, url: str) -> None:
        for step in setups:
            step(folder, url)

    return setup


def launch(*extra: str) -> Argv:
    return lambda folder, url: ["launch", *extra, "--storage", url, "--no-progress"]


def command(*words: str) -> Argv:
    return lambda folder, url: [*words, "--storage", url]


def space_case(name: str, toml: str, says: str) -> Case:
    return Case(name, launch("--space", "space.toml"), says, write("space.toml", toml))




def foreign_database(folder: Path, url: str) -> None:
    """Another application's SQLite file where the study's database should be."""
    with contextlib.closing(sqlite3.connect(folder / "sweeps.db")) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
        conn.commit()


def created_study(folder: Path, url: str) -> None:
    """A study as `launch --create-only` leaves it: configuration stored, no trial yet."""
    (folder / "s.toml").write_text(SWEEP)
    assert main(["launch", "s.toml", "--storage", url, "--create-only"]) == 0


def fake_study(folder: Path, url: str) -> None:
    """A study of constructed trials (complete, pruned, failed), no stored model."""
    study = optuna.create_study(study_name="real", storage=url)
    study.set_user_attr("gapsweep.config", {"objective": {"gap_penalty": 1.0, "patience": 5}})
    add_mixed_trials(study)


def study_keeping_no_models(folder: Path, url: str) -> None:
    """A study launched with ``keep_models = 0``: no trial has a stored model, by choice."""
    study = optuna.create_study(study_name="real", storage=url)
    study.set_user_attr("gapsweep.config", {"objective": {"gap_penalty": 1.0, "patience": 5, "keep_models": 0}})
    add_mixed_trials(study)


def study_with_fixed_epochs(folder: Path, url: str) -> None:
    """A study whose space fixes epochs: a user attribute of each trial, not an Optuna parameter."""
    study = optuna.create_study(study_name="real", storage=url)
    study.add_trial(optuna.trial.create_trial(
        params={"units": 32}, distributions={"units": optuna.distributions.IntDistribution(8, 64)}, value=0.5,
        user_attrs={"fixed.epochs": 5},
    ))


def not_a_gapsweep_study(folder: Path, url: str) -> None:
    optuna.create_study(study_name="plain", storage=url)


X = np.random.default_rng(0).normal(size=(40, 3))

CASES = [
    # The search space.
    space_case("space-low-above-high", '[l2]\ntype = "float"\nlow = 1\nhigh = 0.1\n', "greater than high"),
    Case("space-unknown-builtin", launch("--space", "resnet"), "unknown search space 'resnet'"),
    Case("space-file-missing", launch("--space", "nowhere.toml"), "file not found: nowhere.toml"),
    space_case("space-invalid-toml", "[l2\ntype = float\n", "is not valid TOML"),
    space_case("space-typo-in-a-name", "[dropuot]\ntype = 'float'\nlow = 0.0\nhigh = 0.5\n", "dropuot"),
    space_case("space-negative-l2", "[l2]\ntype = 'float'\nlow = -0.01\nhigh = 0.1\n", "l2 must be a number >= 0"),
    space_case("space-infinite-l2", "l2 = inf\n", "l2 must be a number >= 0, got inf"),
    space_case("space-infinite-learning-rate", "learning_rate = inf\n", "learning_rate must be a number > 0, got inf"),
    space_case("space-dropout-reaches-1", "[dropout]\ntype = 'float'\nlow = 0.0\nhigh = 1.0\n", "dropout must be a number in [0, 1)"),
    space_case("space-zero-units", "[units]\ntype = 'int'\nlow = 0\nhigh = 8\n", "units must be a whole number >= 1"),
    space_case("space-unknown-optimizer", "optimizer = 'adagrad'\n", "optimizer must be one of"),
    space_case("space-zero-batch-size", "batch_size = [0, 32]\n", "batch_size must be a whole number >= 1"),
    space_case("space-zero-epochs", "epochs = 0\n", "epochs must be a whole number >= 1"),
    space_case("space-when-on-a-fixed-string-never-holds", "optimizer = 'sgd'\n[learning_rate]\ntype = 'float'\nlow = 0.01\nhigh = 0.1\nwhen = 'optimizer == adam'\n",
               "'when' (optimizer == adam) never holds for the values 'optimizer' can take"),
    space_case("space-fractional-units-choice", "units = [8.5, 16]\n", "choice 8.5 is not a whole number, which the mlp builder takes (a trial would record 8.5 and build 8)"),
    space_case("space-fractional-fixed-units", "units = 8.5\n", "fixed value 8.5 is not a whole number"),
    space_case("space-step-above-the-range", "[dropout]\ntype = 'float'\nlow = 0.0\nhigh = 0.2\nstep = 0.5\n",
               "high (0.2) is not a whole number of steps (0.5) from low (0.0); the last value on the grid is 0: set high = 0"),
    space_case("space-int-step-off-the-grid", "[units]\ntype = 'int'\nlow = 8\nhigh = 20\nstep = 5\n",
               "high (20) is not a whole number of steps (5) from low (8); the last value on the grid is 18"),
    space_case("space-zero-learning-rate", "[learning_rate]\ntype = 'float'\nlow = 0.0\nhigh = 0.1\n", "learning_rate must be a number > 0"),
    space_case("space-unknown-activation", "activation = ['relu', 'rleu']\n", "activation must be a Keras activation"),
    space_case("space-log-from-zero", "[l2]\ntype = 'float'\nlow = 0.0\nhigh = 0.1\nlog = true\n", "log-scale range needs low > 0"),
    space_case("space-int-with-fraction", "[units]\ntype = 'int'\nlow = 8.5\nhigh = 32\n", "int bounds and step must be integers"),
    space_case("space-unknown-type", "[units]\ntype = 'choice'\nvalues = [1, 2]\n", "unknown type 'choice'"),
    space_case("space-unknown-key", "[units]\ntype = 'int'\nlow = 8\nhigh = 32\nlog_scale = true\n", "unknown key(s) log_scale"),
    space_case("space-duplicate-choices", "batch_size = [32, 32]\n", "duplicates"),
    space_case("space-step-and-log", "[l2]\ntype = 'float'\nlow = 1e-6\nhigh = 1e-2\nlog = true\nstep = 0.001\n", "cannot be combined"),
    space_case("space-empty", "", "the search space is empty"),
    Case("space-python-file-missing", launch("--space", "nowhere.py:SPACE"), "file not found: nowhere.py"),
    # The data.
    Case("max-epochs-with-a-space", launch("--space", "mlp", "--max-epochs", "1"), "--max-epochs is the epoch budget of a --hypermodel"),
    Case("data-unknown-name", launch("--data", "mnist"), "unknown data 'mnist'"),
    Case("data-npz-missing", launch("--data", "nowhere.npz"), "data file not found: nowhere.npz (a relative path is read from the current folder"),
    Case("data-npz-is-text", launch("--data", "fake.npz"), "is not a .npz archive", write("fake.npz", "x,y\n1,2\n")),
    Case("data-npz-without-y", launch("--data", "d.npz"), "lacks y_train", npz("d.npz", x_train=X)),
    Case("data-npz-nan", launch("--data", "d.npz"), "NaN/inf", npz("d.npz", x_train=np.full((20, 3), np.nan), y_train=np.zeros(20))),
    Case("data-npz-row-mismatch", launch("--data", "d.npz"), "x has 20 rows but y has 19", npz("d.npz", x_train=np.zeros((20, 3)), y_train=np.zeros(19))),
    Case("data-npz-1d-x", launch("--data", "d.npz"), "x must be 2-D", npz("d.npz", x_train=np.zeros(20), y_train=np.zeros(20))),
    Case("storage-another-applications-sqlite-file", launch("--data", "wine"), "holds other tables (invoices) and none of Optuna's: it is another application's database; point --storage at a new file", foreign_database),
    Case("data-npz-text-labels", launch("--data", "d.npz"), "d.npz: x and y must hold real numbers, got float64 and <U1; for text class names pass their numbers 0..K-1", npz("d.npz", x_train=np.zeros((20, 3)), y_train=np.array(["a", "b"] * 10))),
    Case("data-npz-val-without-y", launch("--data", "d.npz"), "only one of x_val/y_val", npz("d.npz", x_train=X, y_train=np.zeros(40), x_val=X)),
    Case("data-npz-too-few-rows", launch("--data", "d.npz"), "raise the fractions or add data", npz("d.npz", x_train=X[:3], y_train=np.arange(3) % 2)),
    Case("data-negative-labels", launch("--data", "d.npz", "--task", "classification"), "integer class labels 0..K-1", npz("d.npz", x_train=X, y_train=np.arange(40) % 2 - 1)),
    Case("data-classification-on-a-regression-target", launch("--data", "diabetes", "--task", "classification"), "pass --task regression"),
    Case("data-classification-on-fractions", launch("--data", "d.npz", "--task", "classification"), "integer class labels", npz("d.npz", x_train=X, y_train=np.linspace(0, 1, 40))),
    Case("data-csv-without-target", launch("--data", "d.csv"), "--target COLUMN", write("d.csv", "a,b,y\n1,2,0\n")),
    Case("data-csv-unknown-target", launch("--data", "d.csv", "--target", "label"), "has no column 'label'", write("d.csv", "a,b,y\n1,2,0\n")),
    Case("data-csv-text-cell", launch("--data", "d.csv", "--target", "y"), "column 'b' is numeric but data row 3 holds 'x'", write("d.csv", "a,b,y\n1,2,0\n2,3,1\n3,x,0\n4,5,1\n")),
    Case("data-csv-header-only", launch("--data", "d.csv", "--target", "y"), "at least one data row", write("d.csv", "a,b,y\n")),
    Case("data-csv-ragged-row", launch("--data", "d.csv", "--target", "y"), "line 3 has 2 cells but the header has 3", write("d.csv", "a,b,y\n1,2,0\n1,2\n")),
    Case("data-train-fraction-above-1", launch("--train-fraction", "1.5"), "train_fraction must be a number in [0, 1], got 1.5"),
    Case("data-train-fraction-beyond-the-room-left", launch("--train-fraction", "0.99"), "with val 0.2 and test 0.2 (data.val_fraction, data.test_fraction in a sweep file), the train fraction may be at most 0.6"),
    Case("data-fractions-above-1", launch("s.toml"), "add up to 1.200", write("s.toml", "[data]\nsource = 'digits'\ntrain_fraction = 0.8\nval_fraction = 0.2\ntest_fraction = 0.2\n")),
    Case("data-builtin-with-options", launch("s.toml"), "the built-in data 'digits' takes no options, got n_samples",
         write("s.toml", "[data]\nsource = 'digits'\noptions = {n_samples = 10}\n")),
    Case("data-synthetic-unknown-option", launch("s.toml"), "unknown synthetic data option(s) rows", write("s.toml", "[data]\nsource = 'synthetic'\noptions = {rows = 10}\n")),
    # The sweep file and flags.
    Case("sweep-file-missing", launch("nowhere.toml"), "file not found: nowhere.toml"),
    Case("sweep-storage-a-number", launch("s.toml"), "storage must be a database URL such as sqlite:///gapsweep.db, or a pathlib.Path of a SQLite file, got 5",
         write("s.toml", 'study = "s"\nstorage = 5\n')),
    Case("sweep-data-seed-text", launch("s.toml"), "data seed must be a whole number >= 0, got 'abc'",
         write("s.toml", "[data]\nsource = 'digits'\nseed = 'abc'\n")),
    Case("sweep-data-options-text", launch("s.toml"), "data options must be a table of keyword arguments",
         write("s.toml", "[data]\nsource = 'synthetic'\noptions = 'big'\n")),
    Case("sweep-timeout-true", launch("s.toml"), "timeout must be > 0 seconds, got True", write("s.toml", 'study = "s"\ntimeout = true\n')),
    Case("sweep-not-utf8", launch("s.toml"), "s.toml is not UTF-8 text", lambda folder, url: (folder / "s.toml").write_bytes(b'study = "x"\n\xff\xfe\n')),
    Case("sweep-yaml-key-twice", launch("s.yaml"), "key 'trials' is given twice", write("s.yaml", "trials: 3\ntrials: 5\n")),
    Case("sweep-space-a-number", launch("s.toml"), "s.toml: space must be a built-in name, a .toml/.yaml file, 'module.py:NAME' or a dict, got 5",
         write("s.toml", 'study = "s"\nspace = 5\n')),
    Case("sweep-hypermodel-a-number", launch("s.toml"), "s.toml: hypermodel must be 'path/to/module.py:NAME'",
         write("s.toml", 'study = "s"\nhypermodel = 5\n')),
    Case("sweep-study-a-number", launch("s.yaml"), 'the study\'s name must be text: write it in quotes, "2024"; got 2024',
         write("s.yaml", "study: 2024\n")),
    Case("sweep-data-a-number", launch("s.toml"), "s.toml: data must be a data set's name or file, e.g. data = \"wine\", or a [data] table; got 5",
         write("s.toml", "data = 5\n")),
    Case("sweep-unknown-pruner", launch("s.toml"), "unknown pruner 'sometimes'", write("s.toml", 'study = "s"\npruner = "sometimes"\n')),
    Case("sweep-unknown-key", launch("s.toml"), "unknown sweep setting(s) trails", write("s.toml", 'study = "s"\ntrails = 5\n')),
    Case("sweep-negative-gap-penalty", launch("s.toml"), "gap_penalty must be a number >= 0", write("s.toml", "[objective]\ngap_penalty = -1\n")),
    Case("sweep-objective-not-a-table", launch("s.toml"), "[objective] must be a table", write("s.toml", "objective = 3\n")),
    Case("sweep-unknown-objective-key", launch("s.toml"), "unknown [objective] setting(s) penalty", write("s.toml", "[objective]\npenalty = 1\n")),
    Case("sweep-yaml-list", launch("s.yaml"), "must hold a table", write("s.yaml", "- 1\n- 2\n")),
    Case("sweep-zero-max-failures", launch("s.toml"), "max_failures must be a whole number >= 1", write("s.toml", "max_failures = 0\n")),
    Case("flag-zero-trials", launch("--trials", "0"), "trials must be a whole number >= 1"),
    Case("flag-zero-timeout", launch("--timeout", "0"), "timeout must be > 0"),
    Case("flag-zero-patience", launch("--patience", "0"), "patience must be a whole number >= 1"),
    Case("flag-zero-max-failures", launch("--max-failures", "0"), "max_failures must be a whole number >= 1"),
    Case("flag-cv-1", launch("--cv", "1"), "cv must be a whole number >= 2"),
    Case("log-file-in-a-missing-folder", launch("--data", "wine", "--trials", "1", "--jobs", "1", "--log-file", "nowhere/x.log"),
         "--log-file nowhere/x.log: the folder nowhere does not exist"),
    Case("log-file-that-is-a-folder", launch("--data", "wine", "--trials", "1", "--jobs", "1", "--log-file", "."),
         "--log-file . is a folder; name a file in it"),
    Case("synthetic-noise-as-text", launch("s.toml"), "synthetic option noise must be a number >= 0, got 'a'",
         write("s.toml", "study = 'x'\n[data]\nsource = 'synthetic'\noptions = {noise = 'a'}\n")),
    Case("synthetic-fractional-sample-count", launch("s.toml"), "synthetic option n_samples must be a whole number >= 1, got 1.5",
         write("s.toml", "study = 'x'\n[data]\nsource = 'synthetic'\noptions = {n_samples = 1.5}\n")),
    Case("flag-cv-above-half-the-rows", launch("--data", "few.csv", "--target", "c", "--cv", "3"),
         "5 training and val rows cannot make 3 folds of at least 2 rows",
         write("few.csv", "x,c\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(7)))),
    Case("flag-max-gap-with-random-sampler", launch("--max-gap", "0.1", "--sampler", "random"), "max_gap needs the tpe sampler"),
    Case("flag-space-and-hypermodel", launch("--space", "mlp", "--hypermodel", "m.py:build"), "give one of them"),
    Case("flag-hypermodel-not-a-reference", launch("--hypermodel", "models.py"), "hypermodel must be 'path/to/module.py:NAME'"),
    Case("flag-baseline-missing", launch("--baseline", "nowhere.json"), "baseline file not found"),
    Case("flag-baseline-not-json", launch("--baseline", "b.json"), "is not valid JSON", write("b.json", "{units: 3")),
    Case("flag-baseline-unknown-parameter", launch("--baseline", "b.json"), "baseline names parameter(s) nosuch", write("b.json", '{"nosuch": 1}')),
    Case("flag-zero-top-before-the-sweep-trains", launch("s.toml", "--jobs", "1", "--top", "0"), "--top must be a whole number >= 1",
         write("s.toml", SWEEP)),
    Case("worker-zero-trials-per-process", command("worker", "--study", "s", "--trials-per-process", "0"),
         "--trials-per-process must be a whole number >= 1", created_study),
    Case("flag-baseline-against-a-fixed-value",
         launch("--space", "space.toml", "--baseline", "b.json", "--trials", "1", "--jobs", "1"),
         "baseline sets epochs = 9, but the search space fixes it at 1",
         both(write("space.toml", "epochs = 1\nunits = 8\nn_layers = 1\n"), write("b.json", '{"epochs": 9}'))),
    Case("flag-trials-not-a-number", launch("--trials", "many"), "invalid int value: 'many'", code=2),
    Case("flag-unknown", launch("--trails", "3"), "unrecognized arguments: --trails", code=2),
    # The database.
    Case("storage-mysql", lambda folder, url: ["launch", "--storage", "mysql://u:hunter2@localhost/db"], "unsupported database driver 'mysql'"),
    Case("storage-not-a-url", lambda folder, url: ["launch", "--storage", "::nonsense::"], "is not a database URL"),
    Case("storage-missing-folder", lambda folder, url: ["launch", "--storage", f"sqlite:///{folder}/no/such/x.db"], "does not exist"),
    Case("storage-not-sqlite", lambda folder, url: ["launch", "--storage", f"sqlite:///{folder}/notes.txt"], "is not a SQLite database", write("notes.txt", "hello, this is text\n" * 20)),
    Case("storage-a-folder", lambda folder, url: ["launch", "--storage", f"sqlite:///{folder}/dir"], "is a folder", lambda folder, url: (folder / "dir").mkdir()),
    # The artifact store (tests/test_artifact_store.py also covers unwritable and unreachable ones).
    Case("artifacts-unknown-scheme", launch("--artifacts", "gs://bucket/models"), "unknown artifact store 'gs://bucket/models'"),
    Case("artifacts-relative-folder", launch("--artifacts", "file://shared/models"), "needs an absolute folder"),
    Case("artifacts-s3-credentials", launch("--artifacts", "s3://key:hunter2@bucket"), "name only the bucket"),
    Case("artifacts-folder-missing", lambda folder, url: ["launch", "--storage", url, "--artifacts", f"{folder}/not-mounted"], "create it, or mount the shared folder there"),
    Case("artifacts-in-sweep-file-not-a-url", launch("a.toml"), "artifacts must be a URL", write("a.toml", "artifacts = 5\n" + SWEEP)),
    # Resuming a study with other settings.
    Case("resume-other-data", launch("s.toml", "--data", "wine"), "was started on other data (digits", created_study),
    Case("resume-other-train-fraction", launch("s.toml", "--train-fraction", "0.5"), "was started on other data", created_study),
    Case("resume-other-gap-penalty", launch("s.toml", "--gap-penalty", "3"), "gap_penalty 1.0 -> 3.0", created_study),
    Case("resume-other-space", launch("s.toml", "--space", "mlp"), "different search space", created_study),
    Case("resume-multi-objective", launch("s.toml", "--multi-objective"), "is single-objective", created_study),
    Case("resume-other-artifact-store", lambda folder, url: ["launch", "s.toml", "--storage", url, "--artifacts", str(folder)], "keeps its models and checkpoints in database", created_study),
    # Queries, exports, deletes.
    Case("best-no-database", command("best", "--study", "x"), "no database at"),
    Case("best-unknown-study", command("best", "--study", "x"), "no study named 'x'", fake_study),
    Case("best-unknown-param", command("best", "--study", "real", "--param", "nosuch=1:2"), "no searched parameter 'nosuch'", fake_study),
    Case("best-zero-top", command("best", "--study", "real", "--top", "0"), "k (--top) must be a whole number >= 1, got 0", fake_study),
    Case("best-bad-param-range", command("best", "--study", "real", "--param", "units"), "expected NAME=LOW:HIGH", fake_study, code=2),
    Case("trials-unknown-state", command("trials", "--study", "real", "--state", "done"), "unknown trial state 'done'", fake_study),
    Case("best-reversed-param-range", command("best", "--study", "real", "--param", "units=32:8"), "LOW is above HIGH",
         fake_study, code=2),
    Case("trials-param-fixed-by-the-space", command("trials", "--study", "real", "--param", "epochs=1:9"),
         "no searched parameter 'epochs' (epochs is fixed by its space: every trial has the same value)", study_with_fixed_epochs),
    Case("trials-stale-state", command("trials", "--study", "real", "--state", "stale"),
         "(a stale trial is a running one whose worker went silent: --state running)", fake_study),
    Case("trials-unknown-param", command("trials", "--study", "real", "--param", "nosuch=1:"), "no searched parameter", fake_study),
    Case("show-unknown-trial", command("show", "real", "99"), "has no trial number 99", fake_study),
    Case("export-to-a-folder", command("export", "real", "--out", "."), "is a folder", fake_study),
    Case("export-a-trial-that-never-was", command("export", "real", "--out", "m.keras", "--trial", "99"),
         "study 'real' has no trial number 99", fake_study),
    Case("export-a-failed-trial", command("export", "real", "--out", "m.keras", "--trial", "5"),
         "(it failed: no refit can train it again either)", fake_study),
    Case("export-without-a-model", command("export", "real", "--out", "m.keras"), "has no stored model", fake_study),
    Case(
        "export-of-a-study-keeping-no-models", command("export", "real", "--out", "m.keras"),
        "study 'real' keeps no trained models (objective.keep_models = 0); add --refit to train it again", study_keeping_no_models,
    ),
    Case("predict-a-model-file-as-the-study", command("predict", "m.keras", "--data", "new.csv", "--out", "p.csv"),
         "m.keras is a model file, not a study: pass it as --model m.keras", both(write("m.keras", "zip"), write("new.csv", "a\n1\n"))),
    Case("report-to-a-folder", command("report", "--study", "real", "--out", "."), "is a folder", fake_study),
    Case("report-into-a-missing-folder", command("report", "--study", "real", "--out", "no/r.html"), "does not exist", fake_study),
    Case("delete-unknown-study", command("delete", "ghost", "--yes"), "no study named 'ghost'", fake_study),
    Case("delete-without-confirmation", command("delete", "real"), "pass --yes", fake_study),
    Case("delete-no-database", command("delete", "real", "--yes"), "no database at"),
    Case("worker-on-a-plain-optuna-study", command("worker", "--study", "plain"), "was not created by gapsweep launch", not_a_gapsweep_study),
    Case("reap-unknown-study", command("reap", "--study", "ghost"), "no study named 'ghost'", fake_study),
    Case("artifact-store-with-credentials", launch("--artifacts", "s3://AKIA:s3cret@bucket/x"),
         "artifact store 's3://AKIA:***@bucket/x': name only the bucket"),
    Case("empty-sweep-file", lambda folder, url: ["launch", "empty.toml", "--storage", url], "the sweep file is empty",
         write("empty.toml", "")),
    Case("yaml-sweep-file-without-a-closing-bracket", lambda folder, url: ["launch", "s.yaml", "--storage", url],
         "expected ',' or ']', but got ':' (line 2, column 6)", write("s.yaml", "trials: [1, 2\nstudy: x\n")),
    Case("csv-without-a-header", launch("--data", "nohdr.csv", "--target", "2"), "holds numbers only, so it looks like data",
         write("nohdr.csv", "0.1,0.2,1\n0.3,0.1,0\n0.5,0.9,1\n")),
    Case("target-for-a-built-in-set", launch("--data", "wine", "--target", "y"), "--target names a column of a .csv file, and 'wine' is not one"),
    Case("ignore-the-target", launch("--data", "t.csv", "--target", "y", "--ignore", "y"), "leaves out the target column itself",
         write("t.csv", "a,y\n1,0\n2,1\n")),
    Case("empty-storage-flag", lambda folder, url: ["studies", "--storage", ""], "storage (--storage) is empty"),
    Case("launch-into-in-memory-sqlite", lambda folder, url: ["launch", "--data", "wine", "--trials", "1", "--jobs", "1", "--storage", "sqlite:///", "--no-progress"],
         "sqlite:/// names no file"),
    Case("studies-of-in-memory-sqlite", lambda folder, url: ["studies", "--storage", "sqlite:///:memory:"],
         "sqlite:///:memory: names no file"),
    Case("blank-study-name", launch("--study", " "), "the study needs a name"),
    Case("study-name-with-spaces-around", launch("--study", "s "), "starts or ends with spaces"),
    Case("csv-with-semicolons", launch("--data", "semi.csv", "--target", "y"), "it seems to separate cells with ';'",
         write("semi.csv", "a;b;y\n1;2;0\n3;4;1\n")),
    Case("report-html-into-a-txt-file", command("report", "--study", "real", "--out", "r.txt"), "name a .html file", fake_study),
    Case("report-pngs-into-a-file-name", command("report", "--study", "real", "--out", "x.png", "--format", "png"),
         "names the folder the .png files go in", fake_study),
    Case("migrate-a-study-the-source-lacks",
         lambda folder, url: ["migrate", "--from", url, "--to", f"sqlite:///{folder / 'copy.db'}", "--study", "nope"],
         "source sqlite:///", fake_study),
    Case("migrate-from-no-database",
         lambda folder, url: ["migrate", "--from", f"sqlite:///{folder / 'none.db'}", "--to", f"sqlite:///{folder / 'copy.db'}"],
         "pass --from URL"),
    Case("migrate-into-a-missing-folder",
         lambda folder, url: ["migrate", "--from", url, "--to", f"sqlite:///{folder / 'nowhere' / 'copy.db'}"],
         "does not exist; create it or choose another --to path", fake_study),
    Case("paired-rule-with-by", command("best", "--study", "real", "--rule", "paired", "--by", "gap"),
         "--rule paired picks one trial by the paired rule: drop --by", fake_study),
    Case("negative-seed", launch("--seed", "-1"), "seed must be a whole number >= 0"),
    Case("seed-past-2-32", launch("--seed", str(2**32)), "seed must be below 2**32"),
    Case("heartbeat-not-a-number", launch(), "GAPSWEEP_HEARTBEAT_S must be a whole number >= 1", env=(("GAPSWEEP_HEARTBEAT_S", "x"),)),
    Case("heartbeat-zero-when-reading", command("studies"), "GAPSWEEP_HEARTBEAT_S must be a whole number >= 1",
         fake_study, env=(("GAPSWEEP_HEARTBEAT_S", "0"),)),
    Case("lock-timeout-not-a-number", launch(), "GAPSWEEP_LOCK_TIMEOUT_S must be a number >= 1", env=(("GAPSWEEP_LOCK_TIMEOUT_S", "x"),)),
    Case("checkpoint-interval-negative", launch(), "GAPSWEEP_CHECKPOINT_S must be a number >= 0", env=(("GAPSWEEP_CHECKPOINT_S", "-1"),)),
    Case("missing-study-flag", lambda folder, url: ["best"], "the following arguments are required: --study", code=2),
    Case("unknown-command", lambda folder, url: ["sweep"], "invalid choice: 'sweep'", code=2),
]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by content; a SQLite database by its SQL dump (its WAL files
    come and go with connections and are left out)."""
    state = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.endswith(("-wal", "-shm", "-journal")):
            continue
        key = str(path.relative_to(folder))
        data = path.read_bytes()
        if data.startswith(b"SQLite format 3"):
            conn = sqlite3.connect(path)
            try:
                data = "\n".join(conn.iterdump()).encode()
            finally:
                conn.close()
        state[key] = hashlib.sha256(data).hexdigest()
    return state


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_bad_input_ends_in_one_line_and_writes_nothing(case: Case, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    if case.setup is not None:
        case.setup(tmp_path, url)
    capsys.readouterr()
    before = _snapshot(tmp_path)
    try:
        code = main(case.argv(tmp_path, url))
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == case.code, (code, out, err)
    assert len(lines) == 1, err
    assert case.says in lines[0], lines[0]
    assert "error" in lines[0] and "Traceback" not in out + err
    assert _snapshot(tmp_path) == before, "the failed command wrote something"


def test_the_suite_covers_at_least_fifty_inputs():
    assert len(CASES) >= 50 and len({case.name for case in CASES}) == len(CASES)
