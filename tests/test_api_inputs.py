"""Bad arguments to the Python API: each is refused where it enters, with one gapsweep error line
that names the argument as the caller wrote it, never a TypeError or AttributeError from deep
inside. None of these trains a model."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import optuna
import pytest

from fake_trials import add_mixed_trials
from gapsweep import (
    DataSpec, ObjectiveSettings, SweepConfig, best_trials, export_best, launch, list_studies, list_trials, load_sweep_file,
    load_space, model_info,
)
from gapsweep.api import migrate, rerank_trials
from gapsweep.errors import ConfigError, DataError, GapsweepError, SpaceError, StorageError
from gapsweep.sweeps.run.jobs import parse_gpus


@dataclass(frozen=True)
class Bad:
    name: str
    call: Callable[..., Any]
    error: type[GapsweepError]
    says: str  #: a fragment the message must hold


CONSTRUCTORS = [
    Bad("data-fraction-text", lambda: DataSpec("digits", train_fraction="0.3"), DataError,
        "train_fraction must be a number in [0, 1], got '0.3'"),
    Bad("data-fraction-none", lambda: DataSpec("digits", val_fraction=None), DataError,
        "val_fraction must be a number in [0, 1], got None"),
    Bad("data-fraction-bool", lambda: DataSpec("digits", test_fraction=True), DataError,
        "test_fraction must be a number in [0, 1], got True"),
    Bad("data-ignore-number", lambda: DataSpec("rows.csv", target="y", ignore=1), DataError,
        "ignore must be a column name or a list of them, got 1"),
    Bad("data-ignore-numbers", lambda: DataSpec("rows.csv", target="y", ignore=[0, 1]), DataError,
        "ignore must be a column name or a list of them, got [0, 1]"),
    Bad("data-target-number", lambda: DataSpec("rows.csv", target=3), DataError, "target must be a column name, got 3"),
    Bad("objective-penalty-text", lambda: ObjectiveSettings(gap_penalty="1"), ConfigError,
        "gap_penalty must be a number >= 0, got '1'"),
    Bad("objective-kappa-inf", lambda: ObjectiveSettings(kappa=float("inf")), ConfigError,
        "kappa must be a number >= 0, got inf"),
    Bad("objective-cv-text", lambda: ObjectiveSettings(cv="5"), ConfigError, "cv must be a whole number >= 2, got '5'"),
    Bad("objective-patience-float", lambda: ObjectiveSettings(patience=2.5), ConfigError,
        "patience must be a whole number >= 1, got 2.5"),
    Bad("objective-score-unknown", lambda: ObjectiveSettings(score="ladder"), ConfigError, "unknown score 'ladder'"),
]


def _refused(case: Bad) -> None:
    with pytest.raises(case.error) as caught:
        case.call()
    assert case.says in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("case", CONSTRUCTORS, ids=lambda case: case.name)
def test_a_bad_setting_is_refused_when_the_settings_are_made(case: Bad) -> None:
    _refused(case)


@pytest.fixture
def study_url(sqlite_url: str) -> str:
    """A study of constructed trials (complete, pruned, failed) in a SQLite file."""
    study = optuna.create_study(study_name="s", storage=sqlite_url)
    study.set_user_attr("gapsweep.config", {"objective": {"gap_penalty": 1.0, "patience": 5}})
    add_mixed_trials(study)
    return sqlite_url


QUERIES = [
    Bad("best-k-text", lambda url: best_trials("s", url, k="2"), ConfigError, "k (--top) must be a whole number >= 1, got '2'"),
    Bad("best-k-none", lambda url: best_trials("s", url, k=None), ConfigError, "k (--top) must be a whole number >= 1, got None"),
    Bad("best-k-float", lambda url: best_trials("s", url, k=2.5), ConfigError, "k (--top) must be a whole number >= 1, got 2.5"),
    Bad("rerank-k-text", lambda url: rerank_trials("s", url, k="2", gap_penalty=1.0), ConfigError,
        "k (--top) must be a whole number >= 1, got '2'"),
    Bad("best-params-list", lambda url: best_trials("s", url, params=["l2"]), ConfigError,
        "params must map parameter names to (low, high) ranges"),
    Bad("best-params-number", lambda url: best_trials("s", url, params={"l2": 3}), ConfigError,
        "params must map parameter names to (low, high) ranges"),
    Bad("list-params-text-bounds", lambda url: list_trials("s", url, params={"l2": ("a", "b")}), ConfigError,
        "params must map parameter names to (low, high) ranges"),
    Bad("list-states-number", lambda url: list_trials("s", url, states=1), ConfigError,
        "states must be a state name or a list of them"),
    Bad("list-states-numbers", lambda url: list_trials("s", url, states=[1]), ConfigError, "unknown trial state '1'"),
]


@pytest.mark.parametrize("case", QUERIES, ids=lambda case: case.name)
def test_a_bad_query_argument_is_refused_in_one_line(case: Bad, study_url: str) -> None:
    _refused(replace(case, call=functools.partial(case.call, study_url)))


LAUNCHES = [
    Bad("launch-jobs-text", lambda config: launch(config, jobs="2"), ConfigError, "jobs must be a whole number >= 1, got '2'"),
    Bad("launch-jobs-float", lambda config: launch(config, jobs=2.0), ConfigError, "jobs must be a whole number >= 1, got 2.0"),
    Bad("launch-gpus-words", lambda config: launch(config, gpus=["first"]), ConfigError,
        "gpus takes GPU indices such as 0 or 0,1, or 'none' for the CPU, got ['first']"),
    Bad("launch-config-dict", lambda config: launch({"study": "x"}), ConfigError,
        "config must be a SweepConfig (e.g. SweepConfig(study='digits')), got dict"),
]


@pytest.mark.parametrize("case", LAUNCHES, ids=lambda case: case.name)
def test_a_bad_launch_argument_is_refused_before_anything_is_written(case: Bad, tmp_path) -> None:
    config = SweepConfig(study="x", storage=f"sqlite:///{tmp_path / 'sweeps.db'}", trials=1)
    _refused(replace(case, call=functools.partial(case.call, config)))
    assert not (tmp_path / "sweeps.db").exists()


def test_launch_takes_gpus_as_numbers_or_as_the_flag_writes_them() -> None:
    assert parse_gpus([0, 1], "gpus") == parse_gpus("0,1", "gpus") == ["0", "1"]
    assert parse_gpus(0, "gpus") == ["0"]


def test_a_pathlib_path_names_a_sqlite_file_wherever_storage_is_taken(study_url: str, tmp_path: Path) -> None:
    path = Path(study_url.removeprefix("sqlite:///"))
    assert [t.number for t in best_trials("s", path, k=2)] == [t.number for t in best_trials("s", study_url, k=2)]
    assert [s.name for s in list_studies(path)] == ["s"]
    assert SweepConfig(storage=tmp_path / "sweeps.db").storage == f"sqlite:///{tmp_path / 'sweeps.db'}"
    assert migrate(path, tmp_path / "copy.db") == [{"study": "s", "trials": 6, "artifacts": 0}]
    with pytest.raises(StorageError, match="^storage must be a database URL such as sqlite:///gapsweep.db, or a pathlib.Path"):
        list_studies(1)  # type: ignore[arg-type]


PATHS = [
    Bad("config-study-number", lambda: SweepConfig(study=7), ConfigError, "the study's name must be text"),
    Bad("config-space-number", lambda: SweepConfig(space=1), ConfigError,
        "space must be a built-in name, a .toml/.yaml file, 'module.py:NAME' or a dict, got 1"),
    Bad("config-code-dir-number", lambda: SweepConfig(code_dir=1), ConfigError,
        "code_dir must be a file path (text or a pathlib.Path), got 1"),
    Bad("sweep-file-none", lambda: load_sweep_file(None), ConfigError, "path must be a file path (text or a pathlib.Path), got None"),
    Bad("export-out-none", lambda: export_best("s", None), ConfigError, "out (--out) must be a file path (text or a pathlib.Path), got None"),
    Bad("model-info-number", lambda: model_info(1), DataError, "model_info reads a .keras file (a path or its bytes), not a int"),
]


@pytest.mark.parametrize("case", PATHS, ids=lambda case: case.name)
def test_a_path_or_name_of_the_wrong_type_is_refused_in_one_line(case: Bad) -> None:
    _refused(case)


def test_a_pathlib_path_names_a_space_file_or_project_folder(tmp_path: Path) -> None:
    config = SweepConfig(space=tmp_path / "space.toml", code_dir=tmp_path)
    assert (config.space, config.code_dir) == (str(tmp_path / "space.toml"), str(tmp_path))


def test_load_space_refuses_what_names_no_space_and_reads_a_pathlib_path(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="^a space is a built-in name, a .toml/.yaml file, 'module.py:NAME', a dict or a SearchSpace, got 1$"):
        load_space(1)  # type: ignore[arg-type]
    (tmp_path / "space.toml").write_text('units = {type = "int", low = 8, high = 16}\n')
    assert load_space(tmp_path / "space.toml") == load_space(str(tmp_path / "space.toml"))
