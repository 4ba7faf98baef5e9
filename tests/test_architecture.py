"""The architecture as tests: one installed top-level name, the import contracts in pyproject.toml,
one module on Optuna's private API, and query commands that never load TensorFlow."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from fake_trials import add_mixed_trials

ROOT = Path(__file__).resolve().parents[1]
GUARDED = "gapsweep/storage/optuna_tables.py"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """gapsweep as ``pip install .`` lays it out (no dependencies), in a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    return target


def test_the_distribution_installs_one_top_level_name(installed):
    names = {path.name for path in installed.iterdir() if path.name != "bin"}
    assert names == {"gapsweep", "gapsweep-0.1.0.dist-info"}
    for package in ("sweeps", "storage", "search_spaces"):
        assert (installed / "gapsweep" / package / "__init__.py").is_file()
    assert (installed / "gapsweep" / "search_spaces" / "mlp.toml").is_file()  # the built-in space ships


def test_the_import_contracts_hold(installed):
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(linter), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=installed, env={"PYTHONPATH": str(installed), "PATH": ""}, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_only_one_module_imports_optunas_private_storage(installed):
    importers = []
    for path in sorted((installed / "gapsweep").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            )
            if any(name.startswith("optuna.storages._") for name in names):
                importers.append(path.relative_to(installed).as_posix())
    assert sorted(set(importers)) == [GUARDED]


@pytest.mark.parametrize(
    "argv",
    [
        ["best", "--study", "q", "--json"],
        ["trials", "--study", "q", "--json"],
        ["studies", "--json"],
        ["show", "q", "0", "--json"],
    ],
    ids=lambda argv: argv[0],
)
def test_query_commands_never_import_tensorflow(argv, sqlite_url):
    study = optuna.create_study(study_name="q", storage=sqlite_url)
    add_mixed_trials(study)
    probe = (
        "import json, sys; from gapsweep.cli import main; "
        f"code = main({argv + ['--storage', sqlite_url]!r}); "
        "print(json.dumps({'code': code, 'loaded': sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules)}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"code": 0, "loaded": []}
