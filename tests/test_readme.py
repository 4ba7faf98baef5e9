"""The README's Python example runs as printed (with a smaller budget)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text(encoding="utf-8")
    code_lines = []
    for line in text.split("## From Python", 1)[1].splitlines()[1:]:
        if line and not line.startswith("    "):
            if code_lines:
                break
            continue
        code_lines.append(line[4:])
    code = "\n".join(code_lines)
    assert "trials=20" in code
    monkeypatch.chdir(tmp_path)  # the default storage, sqlite:///gapsweep.db, lands here
    exec(compile(re.sub(r"trials=20", "trials=2", code), str(README), "exec"), {})
    assert "'val_loss'" in capsys.readouterr().out
    assert (tmp_path / "gapsweep.db").is_file() and (tmp_path / "best.keras").stat().st_size > 0
