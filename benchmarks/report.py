"""Where a benchmark's figures go: a printed table, a JSON file, a plot, and its doc section.

``docs/benchmarks.md`` holds one section per benchmark. The part between a benchmark's
``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers is rewritten on every full run; the
prose around the markers (the reading of the figures) is kept.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

from gapsweep.output import to_json

DOC_NAME = "benchmarks.md"
_DOC_HEADER = "# Benchmarks\n\nFigures written by `python -m benchmarks.NAME`; see `benchmarks/`.\n"


def cell(value: Any, digits: int = 4) -> str:
    """One table cell: floats to ``digits`` significant figures, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-flavoured table; readable as plain text too, so it is also what gets printed."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(machine: dict[str, Any]) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    return (
        f"Machine: nproc {machine['nproc']}, CPU `{machine['cpu']}`, {machine['date']}, "
        f"1-min load average {machine['loadavg_1m']} at start and {machine['loadavg_1m_end']} at the end of a "
        f"{machine['run_minutes']}-minute run; code at `{machine['commit']}`; "
        f"Python {machine['python']}, {versions}."
        + (f" PostgreSQL {machine['postgresql']}." if "postgresql" in machine else "")
    )


def save_figure(fig: Any, path: Path, **layout: Any) -> None:
    """Lay out, write and close a matplotlib figure, as every benchmark plot is saved."""
    import matplotlib.pyplot as plt

    fig.tight_layout(**layout)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(out: Path, name: str, payload: dict[str, Any]) -> Path:
    """``out/benchmarks/name.json``, strict JSON (NaN and infinities become null)."""
    path = out / "benchmarks" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(payload) + "\n", encoding="utf-8")
    return path


def plot_path(out: Path, name: str) -> Path:
    path = out / "benchmarks" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_section(out: Path, name: str, title: str, body: str) -> Path:
    """Replace ``name``'s generated block in ``out/benchmarks.md``, adding the section if new."""
    path = out / DOC_NAME
    text = path.read_text(encoding="utf-8") if path.exists() else _DOC_HEADER
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + f"\n\n## {title}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


