"""The report: Pareto front, plots, the HTML page and the PNG files, from constructed studies."""

from __future__ import annotations

import base64
import random
import re
import struct
from pathlib import Path

import optuna
import pytest

from fake_trials import MIXED, add_mixed_trials, gapsweep_trial
from gapsweep.storage.engine import open_storage
from gapsweep.cli import main
from gapsweep.storage.pareto import pareto_front
from gapsweep.sweeps.analysis.report import build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ["history", "curves", "pareto", "importances"]


def _brute_force_front(points: list[tuple[float, float]]) -> list[int]:
    def dominated(i: int) -> bool:
        xi, yi = points[i]
        return any(xj <= xi and yj <= yi and (xj, yj) != (xi, yi) for xj, yj in points)

    return [i for i in range(len(points)) if not dominated(i)]


@pytest.mark.parametrize("seed", range(40))
def test_pareto_front_matches_brute_force(seed: int):
    rng = random.Random(seed)
    # Few distinct values, so ties and duplicates are common.
    points = [(rng.randint(0, 6) / 2, rng.randint(0, 6) / 3) for _ in range(rng.randint(0, 25))]
    assert pareto_front(points) == _brute_force_front(points)


def test_pareto_front_on_a_known_set():
    points = [(0.1, 0.5), (0.3, 0.2), (0.4, 0.4), (0.0, 0.9), (0.3, 0.2), (0.3, 0.25), (0.5, 0.2)]
    # (0.4, 0.4) loses to (0.3, 0.2); (0.3, 0.25) and (0.5, 0.2) too; the duplicate (0.3, 0.2) stays.
    assert pareto_front(points) == [0, 1, 3, 4]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def mixed_url(tmp_path: Path) -> str:
    """A gapsweep-style study 'mixed': 4 complete, 1 pruned, 1 failed trial, and a second study."""
    url = f"sqlite:///{tmp_path / 'report.db'}"
    storage = open_storage(url)
    add_mixed_trials(optuna.create_study(study_name="mixed", storage=storage))
    single = optuna.create_study(study_name="single", storage=storage)
    single.add_trial(gapsweep_trial(*MIXED[0]))
    optuna.create_study(study_name="empty", storage=storage)
    storage.engine.dispose()
    return url


def test_html_report_embeds_plots_and_the_trial_table(mixed_url: str, tmp_path: Path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", "--study", "mixed", "--out", str(out), "--storage", mixed_url, "--top", "3"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    page = out.read_text(encoding="utf-8")
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(images) == len(PLOTS)
    for image in images:
        width, height = _png_size(base64.b64decode(image))
        assert width >= 600 and height >= 200
    assert "<script" not in page and "http" not in page  # self-contained: nothing to fetch

    table = page[page.index('<table id="trials">'):]
    rows = dict(re.findall(r'<tr data-number="(\d+)">(.*?)</tr>', table, flags=re.S))
    assert sorted(map(int, rows)) == [0, 1, 2, 3, 4, 5]
    expected = {0: ("complete", "good fit"), 1: ("complete", "overfitting"), 2: ("complete", "underfitting"),
                4: ("pruned", "underfitting"), 5: ("fail", "diverged")}
    for number, (state, label) in expected.items():
        assert f"<td>{state}" in rows[str(number)] and f">{label}</span>" in rows[str(number)], rows[str(number)]
    assert "pruned at epoch 2" in rows["4"]
    assert "units=256" in rows["1"]


def test_plots_have_titles_labelled_axes_and_the_right_content(mixed_url: str):
    report = build_report("mixed", mixed_url, top=2)
    sections = {section.name: section for section in report.sections}
    assert list(sections) == PLOTS and all(s.figure is not None for s in sections.values())
    for section in sections.values():
        for axes in section.figure.axes:
            assert axes.get_title() and axes.get_xlabel() and axes.get_ylabel(), section.name

    history = sections["history"].figure.axes[0]
    best_line = next(line for line in history.get_lines() if line.get_label() == "best so far")
    values = [r.value for r in report.trials if r.state == "COMPLETE"]
    assert list(best_line.get_ydata()) == [min(values[: i + 1]) for i in range(len(values))] + [min(values)]

    curves = sections["curves"].figure.axes
    assert [a.get_title().split(":")[0] for a in curves] == ["trial 0", "trial 3"]  # best two by score
    for axes, record in zip(curves, [report.trials[0], report.trials[3]]):
        best = record.attrs["best_epoch"]
        assert f"best epoch {best}" in axes.get_title()
        assert any(list(line.get_xdata()) == [best, best] for line in axes.get_lines())  # the vertical mark

    pareto = sections["pareto"].figure.axes[0]
    front = next(c for c in pareto.collections if c.get_label() == "Pareto front")
    points = [(r.attrs["gap"], r.attrs["val_loss"]) for r in report.trials if r.state == "COMPLETE"]
    expected = sorted(points[i] for i in _brute_force_front(points))
    assert sorted(map(tuple, front.get_offsets().tolist())) == expected

    importances = sections["importances"].figure.axes[0]
    assert sorted(label.get_text() for label in importances.get_yticklabels()) == ["dropout", "l2", "units"]


def test_png_format_writes_the_plots(mixed_url: str, tmp_path: Path, capsys):
    folder = tmp_path / "plots"
    assert main(["report", "--study", "mixed", "--format", "png", "--out", str(folder), "--storage", mixed_url]) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name}.png" for name in PLOTS)
    for path in folder.iterdir():
        assert _png_size(path.read_bytes())[0] >= 600
    assert capsys.readouterr().out.count("wrote ") == len(PLOTS)


def test_too_few_trials_give_notes_instead_of_plots(mixed_url: str, tmp_path: Path, capsys):
    out = tmp_path / "single.html"
    assert main(["report", "--study", "single", "--out", str(out), "--storage", mixed_url]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3
    assert "Needs at least 2 complete trials; the study has 1." in page

    folder = tmp_path / "empty-plots"
    assert main(["report", "--study", "empty", "--format", "png", "--out", str(folder), "--storage", mixed_url]) == 0
    assert list(folder.iterdir()) == []
    assert "no history.png: No complete trial yet" in capsys.readouterr().out


def test_importance_failure_becomes_a_note(tmp_path: Path):
    """Identical parameters leave fANOVA no variance to share out; the report says so and goes on."""
    url = f"sqlite:///{tmp_path / 'same.db'}"
    study = optuna.create_study(study_name="same", storage=open_storage(url))
    for _ in range(3):
        study.add_trial(gapsweep_trial(*MIXED[0]))
    section = build_report("same", url).sections[-1]
    assert section.figure is None and section.note.startswith("Optuna could not compute importances")


def test_a_multi_objective_study_gets_importances_of_its_val_loss(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    study = optuna.create_study(study_name="mo", storage=open_storage(url), directions=["minimize", "minimize"])
    for params, train, val in MIXED:
        single = gapsweep_trial(params, train, val)
        study.add_trial(optuna.trial.create_trial(
            params=single.params, distributions=single.distributions, user_attrs=single.user_attrs,
            values=[single.user_attrs["val_loss"], single.user_attrs["gap"]],
        ))
    section = build_report("mo", url).sections[-1]
    assert section.note is None and section.figure is not None
    assert "val loss" in section.figure.axes[0].get_xlabel()


def test_user_mistakes_are_one_line_and_write_nothing(mixed_url: str, tmp_path: Path, capsys):
    out = tmp_path / "nope.html"
    cases = [
        (["--study", "nope", "--out", str(out)], "no study named 'nope' in this database (studies: empty, mixed, single)"),
        (["--study", "mixed", "--out", str(tmp_path / "missing" / "r.html")], "does not exist"),
        (["--study", "mixed", "--out", str(out), "--top", "0"], "--top must be a whole number >= 1"),
    ]
    for argv, fragment in cases:
        assert main(["report", *argv, "--storage", mixed_url]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("gapsweep: error: ") and "\n" not in err and fragment in err, err
    assert not out.exists() and not (tmp_path / "missing").exists()
