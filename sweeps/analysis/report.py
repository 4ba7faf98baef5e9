"""See a sweep: the ``report`` command's plots, trial table and self-contained HTML page.

One HTML file holds everything (PNG images inlined as base64), so a report can be mailed,
archived beside the database or opened on a machine without gapsweep. It shows the optimization
history, the best trial's val loss beside the linear reference's (``gapsweep.sweeps.run.reference``),
the learning curves of the best trials with the epoch early stopping restored, val loss
against the gap with the Pareto front, Optuna's parameter importances, and every trial with its
diagnosis (``gapsweep.sweeps.analysis.diagnosis``). ``write_pngs`` writes the same plots as separate files.

Trials are read through the query layer (``gapsweep.storage.reader``); the study is loaded with Optuna only
for the importances, which need Optuna's evaluator. Plots are drawn on matplotlib ``Figure``
objects with the Agg canvas, never through ``pyplot``: no display, no global figure state.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from gapsweep.storage import trial_keys
from gapsweep import checks
from gapsweep.errors import ConfigError
from gapsweep.storage.engine import open_storage
from gapsweep.storage.pareto import pareto_front
from gapsweep.storage.queries import TrialRecord
from gapsweep.storage.reader import best_trials, list_trials, study_reference
from gapsweep.sweeps.analysis.diagnosis import LABELS, Diagnosis, diagnose_record
from gapsweep.sweeps.run.reference import sentence, versus

FORMATS = ("html", "png")
_DPI = 100
_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "front": "#d62728", "other": "#7f7f7f", "best": "#2ca02c"}
_LABEL_COLORS = dict(zip(LABELS, ("#d62728", "#7f7f7f", "#ff7f0e", "#1f77b4", "#2ca02c")))


@dataclass(frozen=True)
class Section:
    """One part of the report: a plot, or a note saying why there is none."""

    name: str
    heading: str
    figure: Figure | None = None
    note: str | None = None


@dataclass(frozen=True)
class Report:
    study: str
    trials: list[TrialRecord]
    diagnoses: dict[int, Diagnosis]
    sections: list[Section]
    #: The linear reference stored with the study, and the best trial it is compared with.
    reference: dict[str, Any] | None = None
    pick: TrialRecord | None = None


def build_report(study: str, storage: str | None = None, *, top: int = 5) -> Report:
    """Read ``study`` and draw its plots; raises ``StudyNotFoundError`` for an unknown study."""
    checks.whole("--top", top, 1)
    trials = list_trials(study, storage)
    diagnoses = {trial.number: diagnose_record(trial) for trial in trials}
    best = best_trials(study, storage, top)
    complete = [t for t in trials if t.state == "COMPLETE"]
    sections = [
        _history_section(trials),
        _curves_section(best, diagnoses),
        _pareto_section(complete),
        _importance_section(study, storage, len(complete)),
    ]
    return Report(
        study=study, trials=trials, diagnoses=diagnoses, sections=sections,
        reference=study_reference(study, storage), pick=best[0] if best else None,
    )


def check_destination(out: Path, fmt: str) -> None:
    """Refuse an unusable ``--out`` before any plot is drawn: an HTML file needs an existing folder,
    PNG files need a folder (created if missing) rather than a file."""
    if fmt == "html" and out.is_dir():
        raise ConfigError(f"{out} is a folder; --out names the HTML file to write, e.g. {out / 'report.html'}")
    if fmt == "html" and not out.parent.is_dir():
        raise ConfigError(f"folder {out.parent} does not exist; create it or choose another --out")
    if fmt == "html" and out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--out {out}: the report is an HTML page; name a .html file (or pass --format png and a folder)")
    if fmt == "png" and out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; with --format png, --out names a folder")
    if fmt == "png" and out.suffix:
        raise ConfigError(f"--out {out}: with --format png, --out names the folder the .png files go in, e.g. {out.with_suffix('')}")


def write_html(report: Report, out: Path) -> Path:
    """Write the self-contained page to ``out`` (its folder must exist)."""
    check_destination(out, "html")
    out.write_text(render_html(report), encoding="utf-8")
    return out


def write_pngs(report: Report, folder: Path) -> list[Path]:
    """Write each plot as ``<folder>/<name>.png``; returns the files written."""
    check_destination(folder, "png")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for section in report.sections:
        if section.figure is not None:
            path = folder / f"{section.name}.png"
            path.write_bytes(_png(section.figure))
            written.append(path)
    return written


# --- plots -------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _history_section(trials: Sequence[TrialRecord]) -> Section:
    """Score per trial and the best so far: is the sampler still finding better trials?"""
    name, heading = "history", "Optimization history"
    complete = [(t.number, t.value) for t in trials if t.state == "COMPLETE" and _finite(t.value)]
    pruned = [(t.number, t.value) for t in trials if t.state == "PRUNED" and _finite(t.value)]
    if not complete:
        return Section(name, heading, note="No complete trial yet: nothing to plot.")
    figure = _figure(10, 4)
    axes = figure.add_subplot()
    if pruned:
        axes.scatter(*zip(*pruned), marker="x", color=_COLORS["other"], label="pruned (last reported score)")
    axes.scatter(*zip(*complete), color=_COLORS["train"], label="complete", zorder=3)
    best_x, best_y, lowest = [], [], math.inf
    for number, value in complete:
        lowest = min(lowest, value)
        best_x.append(number)
        best_y.append(lowest)
    best_x.append(max(t.number for t in trials))
    best_y.append(lowest)
    axes.step(best_x, best_y, where="post", color=_COLORS["best"], label="best so far", zorder=2)
    values = [value for _, value in complete + pruned]
    if min(values) > 0 and max(values) > 10 * min(values):
        axes.set_yscale("log")  # a few hopeless trials would squash the interesting ones
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial number")
    # What the study minimizes: the score (val loss plus its bounded gap penalty), or the val loss
    # that a multi-objective study's first objective is.
    axes.set_ylabel("objective (score; val loss if multi-objective)")
    axes.set_title(f"Optimization history: {len(complete)} complete, {len(pruned)} pruned of {len(trials)} trials")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.grid(alpha=0.3)
    return Section(name, heading, figure)


def _curves_section(best: Sequence[TrialRecord], diagnoses: dict[int, Diagnosis]) -> Section:
    """Train and val loss per epoch of the best trials: where they part is where memorizing starts."""
    name, heading = "curves", f"Learning curves of the best {len(best)} trial(s)"
    drawn = [t for t in best if t.attrs.get(trial_keys.curve_key("val_loss"))]
    if not drawn:
        return Section(name, heading, note="No complete trial with stored curves yet.")
    columns = min(len(drawn), 3)
    rows = math.ceil(len(drawn) / columns)
    figure = _figure(4 * columns, 3.3 * rows)
    figure.suptitle("Train vs val loss (pure loss, train in inference mode) of the best trials by score")
    figure.legend(
        handles=[
            Line2D([], [], color=_COLORS["train"], label="train loss"),
            Line2D([], [], color=_COLORS["val"], label="val loss"),
            Line2D([], [], color=_COLORS["other"], linestyle="--", marker="o", markerfacecolor=_COLORS["val"],
                   label="best epoch (restored by early stopping)"),
        ],
        loc="outside lower center", ncols=3, frameon=False,
    )
    for index, trial in enumerate(drawn):
        axes = figure.add_subplot(rows, columns, index + 1)
        _draw_curves(axes, trial, diagnoses[trial.number])
    return Section(name, heading, figure)


def _draw_curves(axes: Any, trial: TrialRecord, diagnosis: Diagnosis) -> None:
    train = [v if _finite(v) else math.nan for v in trial.attrs.get(trial_keys.curve_key("train_loss"), [])]
    val = [v if _finite(v) else math.nan for v in trial.attrs[trial_keys.curve_key("val_loss")]]
    axes.plot(range(len(train)), train, color=_COLORS["train"])
    axes.plot(range(len(val)), val, color=_COLORS["val"])
    best = trial.attrs.get(trial_keys.BEST_EPOCH)
    marked = isinstance(best, int) and 0 <= best < len(val)
    if marked:
        axes.axvline(best, color=_COLORS["other"], linestyle="--", linewidth=1)
        axes.plot([best], [val[best]], "o", color=_COLORS["val"])
    if all(v > 0 for v in train + val if _finite(v)):
        axes.set_yscale("log")  # the gap at the end is small beside the first epoch's loss
        axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss (log scale)" if axes.get_yscale() == "log" else "loss")
    restored = f", best epoch {best}" if marked else ""
    axes.set_title(f"trial {trial.number}: {diagnosis.label}\nscore {trial.value:.4g}{restored}", fontsize=10,
                   color=_LABEL_COLORS[diagnosis.label])
    axes.grid(alpha=0.3)


def _pareto_section(complete: Sequence[TrialRecord]) -> Section:
    """Val loss against gap: the front holds every trial some gap penalty λ would pick."""
    name, heading = "pareto", "Val loss against gap, with the Pareto front"
    points = [
        (t.number, (t.attrs[trial_keys.GAP], t.attrs[trial_keys.VAL_LOSS]))
        for t in complete
        if _finite(t.attrs.get(trial_keys.GAP)) and _finite(t.attrs.get(trial_keys.VAL_LOSS))
    ]
    if not points:
        return Section(name, heading, note="No complete trial with a val loss and gap yet.")
    xy = [point for _, point in points]
    front = pareto_front(xy)
    figure = _figure(10, 4.5)
    axes = figure.add_subplot()
    on_front = set(front)
    others = [xy[i] for i in range(len(xy)) if i not in on_front]
    if others:
        axes.scatter(*zip(*others), color=_COLORS["other"], label="dominated")
    line = sorted(xy[i] for i in front)
    axes.step(*zip(*line), where="post", color=_COLORS["front"], zorder=2)
    axes.scatter(*zip(*line), color=_COLORS["front"], label="Pareto front", zorder=3)
    for number, (x, y) in points:
        axes.annotate(str(number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel("gap at best epoch (val − train loss, ≥ 0)")
    axes.set_ylabel("val loss at best epoch")
    axes.set_title(f"Val loss against gap of {len(points)} complete trials ({len(front)} on the Pareto front)")
    axes.legend(loc="best")  # where it covers the fewest points
    axes.grid(alpha=0.3)
    return Section(name, heading, figure)


def _importance_section(study: str, storage: str | None, complete: int) -> Section:
    """fANOVA importances (seeded, so a report is reproducible) when Optuna can compute them."""
    name, heading = "importances", "Parameter importances"
    if complete < 2:
        return Section(name, heading, note=f"Needs at least 2 complete trials; the study has {complete}.")
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    rdb = open_storage(storage)
    try:
        loaded = optuna.load_study(study_name=study, storage=rdb)
        # A multi-objective study ranks its models by val loss, its first value: the importances explain that.
        target = (lambda trial: trial.values[0]) if len(loaded.directions) > 1 else None
        importances = optuna.importance.get_param_importances(
            loaded, evaluator=FanovaImportanceEvaluator(seed=0), target=target
        )
    except (RuntimeError, ValueError) as exc:
        return Section(name, heading, note=f"Optuna could not compute importances: {exc}")
    finally:
        rdb.engine.dispose()
    if not importances:
        return Section(name, heading, note="The complete trials share no searched parameter.")
    ranked = sorted(importances.items(), key=lambda item: item[1])
    figure = _figure(10, 1.2 + 0.4 * len(ranked))
    axes = figure.add_subplot()
    axes.barh([param for param, _ in ranked], [float(value) for _, value in ranked], color=_COLORS["train"])
    axes.set_xlabel(f"importance (fANOVA share of the {'val loss' if len(loaded.directions) > 1 else 'score'}'s variance)")
    axes.set_ylabel("parameter")
    axes.set_title(f"Parameter importances over {complete} complete trials")
    axes.grid(alpha=0.3, axis="x")
    return Section(name, heading, figure)


# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
img { max-width: 100%; } .note { color: #666; font-style: italic; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.warn { color: #b00; font-weight: 600; } .label { font-weight: 600; } .why { color: #555; font-size: 12px; } .params { font-size: 12px; color: #444; }
"""


def render_html(report: Report) -> str:
    """The page as one string: inline CSS, images as ``data:image/png;base64`` URIs."""
    counts: dict[str, int] = {}
    for trial in report.trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
    labels: dict[str, int] = {}
    for diagnosis in report.diagnoses.values():
        labels[diagnosis.label] = labels.get(diagnosis.label, 0) + 1
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>gapsweep report: {_e(report.study)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Study {_e(report.study)}</h1>",
        f"<p>{len(report.trials)} trials: {_e(', '.join(f'{n} {s.lower()}' for s, n in sorted(counts.items())))}. "
        f"Diagnoses: {_e(', '.join(f'{n} {label}' for label, n in sorted(labels.items())))}. "
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.</p>",
    ]
    if report.reference is not None:
        parts.append(_reference_paragraph(report.reference, report.pick))
    for section in report.sections:
        parts.append(f"<h2>{_e(section.heading)}</h2>")
        if section.figure is not None:
            data = base64.b64encode(_png(section.figure)).decode("ascii")
            parts.append(f'<img alt="{_e(section.heading)}" src="data:image/png;base64,{data}">')
        else:
            parts.append(f'<p class="note">{_e(section.note or "")}</p>')
    parts.append("<h2>All trials</h2>")
    parts.append(_trial_table(report))
    parts.append("</body></html>")
    return "\n".join(parts)


def _reference_paragraph(reference: dict[str, Any], pick: TrialRecord | None) -> str:
    """The best trial's val loss beside the linear reference's; flagged when it is not lower."""
    val_loss = pick.attrs.get(trial_keys.VAL_LOSS) if pick is not None else None
    prior_loss = pick.attrs.get(trial_keys.PRIOR_LOSS) if pick is not None else None
    beaten = versus(reference, val_loss, prior_loss)["beaten"]
    linear_start = pick is not None and bool(pick.attrs.get(trial_keys.LINEAR_START))
    text = sentence(reference, pick.number if pick is not None else None, val_loss, linear_start=linear_start, prior_loss=prior_loss)
    return f'<p id="reference" class="{"" if beaten else "warn"}">{_e(text[0].upper() + text[1:])}.</p>'


def _trial_table(report: Report) -> str:
    head = ("trial", "state", "score", "val loss", "train loss", "gap", "best epoch", "epochs", "diagnosis", "parameters")
    rows = ['<table id="trials">', "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for trial in report.trials:
        diagnosis = report.diagnoses[trial.number]
        attrs = trial.attrs
        stopped = attrs.get(trial_keys.PRUNE_REASON) or attrs.get(trial_keys.FAIL_REASON)
        state = _e(trial.state.lower()) + (f'<div class="why">{_e(stopped)}</div>' if stopped else "")
        numbers = [trial.value, attrs.get(trial_keys.VAL_LOSS), attrs.get(trial_keys.TRAIN_LOSS), attrs.get(trial_keys.GAP)]
        params = ", ".join(f"{key}={_num(value)}" for key, value in sorted(trial.params.items()))
        cells = [
            f'<td class="num">{trial.number}</td>',
            f"<td>{state}</td>",
            *(f'<td class="num">{_e(_num(value))}</td>' for value in numbers),
            f'<td class="num">{_e(_num(attrs.get(trial_keys.BEST_EPOCH)))}</td>',
            f'<td class="num">{_e(_num(attrs.get(trial_keys.EPOCHS_RUN)))}</td>',
            f'<td><span class="label" style="color:{_LABEL_COLORS[diagnosis.label]}">{_e(diagnosis.label)}</span>'
            f'<div class="why">{_e(diagnosis.reason)}</div></td>',
            f'<td class="params">{_e(params)}</td>',
        ]
        rows.append(f'<tr data-number="{trial.number}">' + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _e(text: str) -> str:
    return html.escape(text, quote=True)
