"""Runs one benchmark's ``--quick`` mode as CI would start it, into a temporary folder, and checks
what every benchmark writes: its JSON, its plot and its section of ``benchmarks.md``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_quick(name: str, out: Path, *, machine_keys: set[str] = frozenset()) -> dict:
    """The benchmark's payload; ``machine_keys``: what its machine record must hold beyond the usual."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    payload = json.loads((out / "benchmarks" / f"{name}.json").read_text())
    assert payload["benchmark"] == name and payload["quick"] is True
    assert {"nproc", "cpu", "date", "commit", *machine_keys} <= set(payload["machine"])
    assert (out / "benchmarks" / f"{name}.png").stat().st_size > 0
    doc = (out / "benchmarks.md").read_text()
    assert f"<!-- BEGIN {name} -->" in doc and f"<!-- END {name} -->" in doc
    assert "| " in doc and "Target:" in doc
    return payload
