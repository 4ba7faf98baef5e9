"""Query scale: ``gapsweep best`` on a 10,000-trial study against loading the study with Optuna.

gapsweep answers "the best k" with SQL (``ORDER BY … LIMIT k``, then the params and attributes
of those k trials only: ``gapsweep.storage.queries``). The usual Optuna ways load every trial first:
``optuna.load_study(...).best_trials`` (the Pareto front of all trials: for one objective, the
trials that share the best value), ``get_trials()`` sorted in Python, or ``trials_dataframe()``
sorted with pandas. This benchmark builds one study on SQLite and one on PostgreSQL, the same
trials in each, and times each way of getting the top 10 by score, by gap, and by score among
trials with ``units`` in 32..128, on the same database. Each answer is checked against
the right one, computed from the trials in memory, and each way's peak memory is measured in a
fresh process.

The trials are made with ``optuna.create_trial``, not trained: each has the 7 parameters of
the built-in ``mlp`` space, drawn by a seeded random sampler, and what gapsweep's objective
records (the score parts as user attributes, the per-epoch curves, one intermediate value per
epoch); 70 % complete, 20 % pruned, 10 % failed. The first few hundred are written with
``study.add_trials``, timed; the rest are bulk inserted into Optuna's tables (``add_trials``
takes ~90 ms a trial here), and Optuna reads every trial back to check they are the same.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmarks import harness, report
from gapsweep.sweeps.trial.score import best_score

NAME = "query_scale"
TITLE = "Query scale: `gapsweep best` on 10,000 trials"
STUDY = "scale"
WARMUP_STUDY = "warmup"
TOP = 10
BATCH = 500
#: Share of trials per final state; the rest complete.
PRUNED_SHARE, FAILED_SHARE = 0.2, 0.1
PENALTY = 1.0
#: The way every other is compared with.
SUBJECT = "gapsweep api"


@dataclass(frozen=True)
class Query:
    """One ``gapsweep best`` question: rank by ``by``, optionally within parameter ranges."""

    name: str
    by: str = "score"
    params: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def cli_flags(self) -> list[str]:
        flags = ["--by", self.by]
        for name, (low, high) in self.params.items():
            flags += ["--param", f"{name}={'' if low is None else low:g}:{'' if high is None else high:g}"]
        return flags

    def keeps(self, params: dict[str, Any]) -> bool:
        return all(
            name in params and (low is None or params[name] >= low) and (high is None or params[name] <= high)
            for name, (low, high) in self.params.items()
        )


QUERIES = [
    Query("top 10 by score"),
    Query("top 10 by gap", by="gap"),
    Query("top 10 by score, units 32..128", params={"units": (32, 128)}),
]


# --- The study ----------------------------------------------------------------------------------


def fake_curves(rng: random.Random, params: dict[str, Any], epochs: int) -> tuple[list[float], list[float]]:
    """Train loss that falls; val loss that falls, then rises the more, the less regularized."""
    start = rng.uniform(1.5, 2.5)
    rate = min(0.6, params["learning_rate"] * 40 + 0.05)
    floor = rng.uniform(0.01, 0.2)
    overfit = 0.02 / (1 + 200 * params["l2"] + 3 * params.get("dropout", 0.0))  # no dropout at depth 0
    train, val = [], []
    for epoch in range(epochs):
        t = floor + (start - floor) * math.exp(-rate * epoch)
        v = t * rng.uniform(1.0, 1.3) + overfit * epoch + rng.uniform(0, 0.05)
        train.append(round(t, 6))
        val.append(round(v, 6))
    return train, val


def make_trials(n: int, seed: int = 0) -> list[FrozenTrial]:
    """``n`` finished trials as gapsweep's objective would have left them."""
    from gapsweep.search_spaces.loader import load_space

    space = load_space("mlp")
    sampler_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    rng = random.Random(seed)
    trials = []
    for _ in range(n):
        draw = sampler_study.ask()
        params = space.sample(draw)
        distributions = dict(draw.distributions)
        sampler_study.tell(draw, state=TrialState.FAIL)
        roll = rng.random()
        state = TrialState.PRUNED if roll < PRUNED_SHARE else TrialState.FAIL if roll < PRUNED_SHARE + FAILED_SHARE else TrialState.COMPLETE
        epochs = rng.randint(16, 24) if state == TrialState.COMPLETE else rng.randint(3, 12)
        train, val = fake_curves(rng, params, epochs)
        attrs: dict[str, Any] = {"epochs_run": epochs, "curve.train_loss": train, "curve.val_loss": val}
        steps = {epoch: val[epoch] + PENALTY * max(0.0, val[epoch] - train[epoch]) for epoch in range(epochs)}
        value = None
        if state == TrialState.COMPLETE:
            score = best_score(train, val, PENALTY)
            value = score.value
            attrs.update(score=score.value, val_loss=score.val_loss, train_loss=score.train_loss, gap=score.gap,
                         gap_penalty=score.penalty, best_epoch=score.epoch)
        elif state == TrialState.PRUNED:
            attrs["prune_reason"] = f"pruned at epoch {epochs - 1}"
        else:
            attrs["fail_reason"] = f"loss became NaN at epoch {epochs}"
        trial = optuna.trial.create_trial(
            state=state, value=value, params=params, distributions=distributions,
            user_attrs=attrs, intermediate_values=steps,
        )
        trial.number = len(trials)  # the number ``add_trials`` gives it, for checking answers
        trials.append(trial)
    return trials


def build(url: str, trials: list[FrozenTrial], through_optuna: int) -> dict[str, Any]:
    """Write ``trials`` as one study (and a 5-trial one that warms up processes) into ``url``.

    The first ``through_optuna`` go through ``study.add_trials``, timed; the rest are bulk
    inserted into Optuna's own tables in the form Optuna stores (``add_trials`` writes each
    value with its own ORM round trip: ~90 ms a trial here, a quarter of an hour for 10,000).
    ``check_stored`` then reads every trial back through Optuna.
    """
    study = optuna.create_study(study_name=STUDY, storage=url)
    start = time.perf_counter()
    for first in range(0, through_optuna, BATCH):
        study.add_trials(trials[first:min(first + BATCH, through_optuna)])
    optuna_s = time.perf_counter() - start
    _dispose(study)
    start = time.perf_counter()
    bulk_insert(url, STUDY, trials[through_optuna:], first_number=through_optuna)
    bulk_s = time.perf_counter() - start
    warmup = optuna.create_study(study_name=WARMUP_STUDY, storage=url)
    warmup.add_trials(make_trials(5, seed=1))
    _dispose(warmup)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    return {
        "trials": len(trials), **counts, "add_trials": through_optuna,
        "add_trials_ms_per_trial": 1000 * optuna_s / max(through_optuna, 1),
        "bulk": len(trials) - through_optuna, "bulk_s": bulk_s,
    }


def bulk_insert(url: str, study: str, trials: list[FrozenTrial], *, first_number: int) -> None:
    """Rows for ``trials`` in Optuna's tables, numbered on from ``first_number``, in one transaction."""
    import sqlalchemy as sa
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models

    if not trials:
        return
    engine = sa.create_engine(url)
    tables = {name: getattr(models, name).__table__ for name in (
        "StudyModel", "TrialModel", "TrialParamModel", "TrialValueModel", "TrialIntermediateValueModel",
        "TrialUserAttributeModel",
    )}
    value_repr = models.TrialValueModel.value_to_stored_repr
    step_repr = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
    try:
        with engine.begin() as conn:
            studies = tables["StudyModel"]
            study_id = conn.execute(sa.select(studies.c.study_id).where(studies.c.study_name == study)).scalar_one()
            trial_table = tables["TrialModel"]
            conn.execute(trial_table.insert(), [
                {"number": first_number + i, "study_id": study_id, "state": t.state,
                 "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete}
                for i, t in enumerate(trials)
            ])
            ids = dict(conn.execute(
                sa.select(trial_table.c.number, trial_table.c.trial_id)
                .where(trial_table.c.study_id == study_id, trial_table.c.number >= first_number)
            ).all())
            params, values, steps, attrs = [], [], [], []
            for i, t in enumerate(trials):
                trial_id = ids[first_number + i]
                for name, value in t.params.items():
                    dist = t.distributions[name]
                    params.append({"trial_id": trial_id, "param_name": name, "param_value": dist.to_internal_repr(value),
                                   "distribution_json": distribution_to_json(dist)})
                if t.value is not None:
                    stored, kind = value_repr(t.value)
                    values.append({"trial_id": trial_id, "objective": 0, "value": stored, "value_type": kind})
                for step, value in t.intermediate_values.items():
                    stored, kind = step_repr(value)
                    steps.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                                  "intermediate_value_type": kind})
                for key, value in t.user_attrs.items():
                    attrs.append({"trial_id": trial_id, "key": key, "value_json": json.dumps(value)})
            for table, rows in (("TrialParamModel", params), ("TrialValueModel", values),
                                ("TrialIntermediateValueModel", steps), ("TrialUserAttributeModel", attrs)):
                for first in range(0, len(rows), 10_000):
                    conn.execute(tables[table].insert(), rows[first:first + 10_000])
    finally:
        engine.dispose()


def check_stored(url: str, trials: list[FrozenTrial]) -> int:
    """Trials that Optuna reads back different from what was written (0 when the build is faithful)."""
    loaded = optuna.load_study(study_name=STUDY, storage=url)
    try:
        stored = loaded.get_trials(deepcopy=False)
    finally:
        _dispose(loaded)
    if len(stored) != len(trials):
        return abs(len(stored) - len(trials))

    def view(t: FrozenTrial) -> tuple[Any, ...]:
        return (t.number, t.state, t.value, t.params, t.distributions, t.user_attrs, t.intermediate_values)

    return sum(view(a) != view(b) for a, b in zip(stored, trials))


def expected(trials: list[FrozenTrial], query: Query) -> list[int]:
    """The right answer, from the trials in memory."""
    return _ranked(trials, query)


# --- The ways of asking -------------------------------------------------------------------------


def _dispose(study: optuna.Study) -> None:
    """Close the pool ``optuna.load_study(storage=URL)`` opened, as the gapsweep API does."""
    backend = getattr(study._storage, "_backend", study._storage)
    with contextlib.suppress(AttributeError):
        backend.engine.dispose()


def _ranked(trials: list[FrozenTrial], query: Query) -> list[int]:
    def key(t: FrozenTrial) -> tuple[float, int]:
        return (t.value if query.by == "score" else float(t.user_attrs[query.by]), t.number)

    chosen = [t for t in trials if t.state == TrialState.COMPLETE and query.keeps(t.params)]
    return [t.number for t in sorted(chosen, key=key)[:TOP]]


def ask_gapsweep_api(url: str, study: str, query: Query) -> list[int]:
    from gapsweep.api import best_trials

    return [t.number for t in best_trials(study, url, TOP, by=query.by, params=query.params or None)]


def cli_command() -> list[str]:
    """``gapsweep`` as ``python -m gapsweep.cli`` (the entry point's module), run from the repository, so
    the process runs this checkout's code even where an installed ``gapsweep`` maps elsewhere."""
    return [sys.executable, "-m", "gapsweep.cli"]


def cli_args(url: str, study: str, query: Query) -> list[str]:
    return [*cli_command(), "best", "--study", study, "--top", str(TOP), "--json", "--storage", url, *query.cli_flags()]


def ask_gapsweep_cli(url: str, study: str, query: Query) -> list[int]:
    done = subprocess.run(cli_args(url, study, query), capture_output=True, text=True, check=True, cwd=harness.REPO)
    return [row["number"] for row in json.loads(done.stdout)["trials"]]


def ask_optuna_best_trials(url: str, study: str, query: Query) -> list[int]:
    """Optuna's own "best": loads every trial and returns the front (one trial here)."""
    loaded = optuna.load_study(study_name=study, storage=url)
    try:
        return [t.number for t in loaded.best_trials]
    finally:
        _dispose(loaded)


def ask_optuna_get_trials(url: str, study: str, query: Query) -> list[int]:
    loaded = optuna.load_study(study_name=study, storage=url)
    try:
        return _ranked(loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), query)
    finally:
        _dispose(loaded)


def ask_optuna_dataframe(url: str, study: str, query: Query) -> list[int]:
    loaded = optuna.load_study(study_name=study, storage=url)
    try:
        frame = loaded.trials_dataframe()
    finally:
        _dispose(loaded)
    frame = frame[frame["state"] == "COMPLETE"]
    for name, (low, high) in query.params.items():
        if low is not None:
            frame = frame[frame[f"params_{name}"] >= low]
        if high is not None:
            frame = frame[frame[f"params_{name}"] <= high]
    column = "value" if query.by == "score" else f"user_attrs_{query.by}"
    return [int(n) for n in frame.sort_values([column, "number"]).head(TOP)["number"]]


APPROACHES: dict[str, Callable[[str, str, Query], list[int]]] = {
    "gapsweep api": ask_gapsweep_api,
    "gapsweep cli": ask_gapsweep_cli,
    "optuna best_trials": ask_optuna_best_trials,
    "optuna get_trials + sort": ask_optuna_get_trials,
    "optuna trials_dataframe + sort": ask_optuna_dataframe,
}
#: ``best_trials`` has no ranking by another key and no parameter filter.
ONLY_SCORE = {"optuna best_trials"}


def applies(approach: str, query: Query) -> bool:
    return approach not in ONLY_SCORE or (query.by == "score" and not query.params)


def available() -> dict[str, str]:
    """Approaches that cannot run here, with the reason (pandas is not a gapsweep dependency)."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        return {"optuna trials_dataframe + sort": "pandas is not installed (optuna's trials_dataframe needs it)"}
    return {}


# --- Time ---------------------------------------------------------------------------------------


def time_all(url: str, trials: list[FrozenTrial], repeats: int, skipped: dict[str, str]) -> list[dict[str, Any]]:
    """Every (query, approach) ``repeats`` times, interleaved, after one untimed round.

    A way that raises is not timed: its row carries the error instead, so one broken query
    does not hide the others' figures.
    """
    cases = [(q, a) for q in QUERIES for a in APPROACHES if applies(a, q) and a not in skipped]
    answers: dict[tuple[str, str], list[int]] = {}
    errors: dict[tuple[str, str], str] = {}
    for query, approach in cases:  # warm-up: imports, dialect setup, the server's caches
        try:
            answers[(query.name, approach)] = APPROACHES[approach](url, STUDY, query)
        except Exception as exc:  # noqa: BLE001 - reported in the row, never swallowed silently
            errors[(query.name, approach)] = _one_line(exc)
    timed = [(q, a) for q, a in cases if (q.name, a) not in errors]
    runs: dict[tuple[str, str], list[float]] = {(q.name, a): [] for q, a in timed}
    for _ in range(repeats):
        for query, approach in timed:
            start = time.perf_counter()
            APPROACHES[approach](url, STUDY, query)
            runs[(query.name, approach)].append(time.perf_counter() - start)
    rows = []
    for query, approach in cases:
        key = (query.name, approach)
        if key in errors:
            rows.append({"query": query.name, "approach": approach, "median_s": None, "min_s": None, "runs_s": [],
                         "returned": None, "correct": False, "error": errors[key]})
            continue
        want = expected(trials, query)
        got, seconds = answers[key], runs[key]
        rows.append({
            "query": query.name, "approach": approach, "median_s": statistics.median(seconds),
            "min_s": min(seconds), "runs_s": seconds, "returned": len(got),
            "correct": got == (want[:1] if approach in ONLY_SCORE else want), "error": None,
        })
    for row in rows:
        subject = next(r for r in rows if r["query"] == row["query"] and r["approach"] == SUBJECT)
        both = row["median_s"] is not None and subject["median_s"] is not None
        row["time_vs_gapsweep_api"] = row["median_s"] / subject["median_s"] if both else None
    return rows


def _timed(ask: Callable[[str, str, Query], list[int]], url: str, study: str, query: Query) -> float:
    start = time.perf_counter()
    ask(url, study, query)
    return time.perf_counter() - start


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, subprocess.CalledProcessError):
        text = (exc.stderr or "").strip()
    last = re.sub(r" object at 0x[0-9a-f]+", "", text.splitlines()[-1] if text else "")
    return f"{type(exc).__name__}: {last}"[:300]


# --- Memory -------------------------------------------------------------------------------------


def _status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def memory_in_child(url: str, approach: str, query: Query) -> dict[str, float]:
    """In a fresh process, after a warm-up on a tiny study: MB an approach adds at its peak.

    First the resident set's high-water mark above the process before the call (reset through
    ``/proc/self/clear_refs``), then, on a second call, the peak of Python allocations that
    tracemalloc sees (second, so tracemalloc's own bookkeeping does not inflate the RSS figure).
    """
    import tracemalloc

    harness.quiet_optuna()
    ask = APPROACHES[approach]
    ask(url, WARMUP_STUDY, Query("warm-up", by=query.by, params=query.params))
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    ask(url, STUDY, query)
    process_peak = _status_kb("VmHWM") / 1024
    rss_growth = process_peak - before / 1024
    tracemalloc.start()
    tracemalloc.reset_peak()
    ask(url, STUDY, query)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"rss_growth_mb": rss_growth, "tracemalloc_peak_mb": peak / 2**20, "process_peak_rss_mb": process_peak}


#: Runs ``gapsweep`` and prints the process's own peak resident set (VmHWM) as it exits. A
#: child's ``ru_maxrss`` would not do: Linux carries the forking parent's high-water mark over
#: the exec, and this parent holds the whole study in memory.
_CLI_PEAK = """
import atexit, runpy, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("VmHWM " + line.split()[1] + "\\n")
atexit.register(peak)
sys.argv = ["gapsweep", *sys.argv[1:]]
runpy.run_module("gapsweep.cli", run_name="__main__")
"""


def cli_peak_rss_mb(url: str, query: Query) -> float:
    """Peak resident memory of a whole ``gapsweep best`` process (interpreter and imports included)."""
    args = cli_args(url, STUDY, query)[len(cli_command()):]
    done = subprocess.run([sys.executable, "-c", _CLI_PEAK, *args], capture_output=True, text=True, check=True, cwd=harness.REPO)
    kb = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("VmHWM ")]
    return kb[-1] / 1024


def memory_all(url: str, skipped: dict[str, str]) -> list[dict[str, Any]]:
    """Peak memory of each in-process approach for the top 10 by score, each in a fresh process."""
    query = QUERIES[0]
    rows = []
    for approach in APPROACHES:
        if approach in skipped:
            continue
        if approach == "gapsweep cli":
            rows.append({"approach": approach, "tracemalloc_peak_mb": None, "rss_growth_mb": None,
                         "process_peak_rss_mb": cli_peak_rss_mb(url, query)})
            continue
        rows.append({"approach": approach, **harness.in_fresh_process(memory_in_child, url, approach, query)})
    return rows


# --- Report -------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "postgresql":
        with harness.postgres_schema() as url:
            yield url
    else:
        with harness.sqlite_file() as url:
            yield url


def measure(backend: str, n: int, through_optuna: int, repeats: int, skipped: dict[str, str]) -> dict[str, Any]:
    trials = make_trials(n)
    with database(backend) as url:
        built = build(url, trials, through_optuna)
        built["read_back_mismatches"] = check_stored(url, trials)
        rows = time_all(url, trials, repeats, skipped)
        floor = [_timed(ask_gapsweep_cli, url, WARMUP_STUDY, QUERIES[0]) for _ in range(repeats)]
        memory = memory_all(url, skipped)
    built["cli_on_5_trials_s"] = statistics.median(floor)
    for row in [*rows, *memory]:
        row["backend"] = backend
    return {"build": {"backend": backend, **built}, "rows": rows, "memory": memory}


def plot(rows: list[dict[str, Any]], trials: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(dict.fromkeys(r["backend"] for r in rows))
    approaches = [a for a in APPROACHES if any(r["approach"] == a for r in rows)]
    fig, axes = plt.subplots(1, len(backends), figsize=(5.5 * len(backends), 4.2), squeeze=False, sharey=True)
    width = 0.8 / len(approaches)
    labelled: set[str] = set()
    for ax, backend in zip(axes[0], backends):
        for i, approach in enumerate(approaches):
            for x, query in enumerate(QUERIES):
                row = next((r for r in rows if r["backend"] == backend and r["query"] == query.name and r["approach"] == approach), None)
                if row is None:
                    continue
                if row["median_s"] is None:  # the way raised: mark where its bar would be
                    ax.text(x + i * width, 0.5, "error", rotation=90, ha="center", va="bottom", fontsize=7,
                            color=f"C{i}", transform=ax.get_xaxis_transform())
                    continue
                ax.bar(x + i * width, row["median_s"], width, color=f"C{i}", label=None if approach in labelled else approach)
                labelled.add(approach)
        ax.set_xticks([x + width * (len(approaches) - 1) / 2 for x in range(len(QUERIES))],
                      [q.name.replace("top 10 by ", "by ") for q in QUERIES], fontsize=8)
        ax.set_yscale("log")
        ax.set_title(backend)
        ax.set_ylabel("median seconds (log; lower is better)")
    handles, labels = [sum(parts, []) for parts in zip(*(ax.get_legend_handles_labels() for ax in axes[0]))]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle(f"Top {TOP} of a {trials:,}-trial study", fontsize=10)
    report.save_figure(fig, path, rect=(0, 0.07, 1, 1))


def main(argv: list[str] | None = None) -> None:
    options = harness.parse_args(__doc__.splitlines()[0], argv)
    harness.quiet_optuna()
    n, through_optuna, repeats = (500, 50, 1) if options.quick else (10_000, 200, 3)
    started, machine = time.monotonic(), harness.machine()
    skipped_approaches = available()
    backends = {"sqlite": None, "postgresql": harness.postgres_reason()}
    builds, rows, memory = [], [], []
    for backend, reason in backends.items():
        if reason is None:
            result = measure(backend, n, through_optuna, repeats, skipped_approaches)
            builds.append(result["build"])
            rows += result["rows"]
            memory += result["memory"]
    skipped = {backend: reason for backend, reason in backends.items() if reason is not None}
    if "postgresql" not in skipped:
        machine["postgresql"] = harness.postgres_version()

    errors = [f"{r['backend']}, {r['query']}, {r['approach']}: `{r['error']}`" for r in rows if r["error"]]
    table = report.markdown_table(rows, ["backend", "query", "approach", "median_s", "min_s", "time_vs_gapsweep_api", "returned", "correct"])
    memory_table = report.markdown_table(memory, ["backend", "approach", "tracemalloc_peak_mb", "rss_growth_mb", "process_peak_rss_mb"])
    build_table = report.markdown_table(
        builds, ["backend", "trials", "complete", "pruned", "fail", "add_trials", "add_trials_ms_per_trial", "bulk", "bulk_s",
                 "read_back_mismatches", "cli_on_5_trials_s"]
    )
    print(build_table, table, memory_table, sep="\n\n")
    for name, reason in {**skipped, **skipped_approaches}.items():
        print(f"{name} skipped: {reason}")
    for line in errors:
        print(f"error: {line}")

    plot(rows, n, report.plot_path(options.out, NAME))
    harness.finish(machine, started)
    slower = [r for r in rows if r["approach"].startswith("optuna") and r["approach"] != "optuna best_trials"]
    speedups = {r["backend"]: [] for r in slower}
    for r in slower:
        if r["time_vs_gapsweep_api"] is not None:
            speedups[r["backend"]].append(r["time_vs_gapsweep_api"])
    speedups = {backend: ratios for backend, ratios in speedups.items() if ratios}
    all_correct = all(r["correct"] for r in rows)
    target = {
        "gapsweep_api_faster_than_loading_the_study": {b: min(v) > 1 for b, v in speedups.items()},
        "min_time_ratio_of_optuna_top10_ways": {b: min(v) for b, v in speedups.items()},
        "all_answers_correct": all_correct,
        "errors": errors,
    }
    payload = {
        "benchmark": NAME, "quick": options.quick, "machine": machine,
        "settings": {"trials": n, "through_add_trials": through_optuna, "top": TOP, "repeats": repeats, "batch": BATCH, "space": "mlp (built-in)",
                     "states": {"pruned": PRUNED_SHARE, "fail": FAILED_SHARE, "complete": 1 - PRUNED_SHARE - FAILED_SHARE},
                     "queries": [{"name": q.name, "by": q.by, "params": q.params} for q in QUERIES],
                     "cli": "python -m gapsweep.cli best --study S --top 10 --json --storage URL [--by B] [--param P]"},
        "skipped": skipped, "skipped_approaches": skipped_approaches,
        "builds": builds, "rows": rows, "memory": memory, "target": target,
    }
    report.write_json(options.out, NAME, payload)
    verdict = "; ".join(
        f"{backend}: the fastest Optuna top-10 way took {ratio:.1f}× gapsweep's time"
        for backend, ratio in target["min_time_ratio_of_optuna_top10_ways"].items()
    )
    body = "\n\n".join([
        f"`python -m benchmarks.query_scale{' --quick' if options.quick else ''}`: one study of {n:,} made-up trials "
        f"(7 `mlp` parameters, score parts, 16–24-epoch curves and intermediate values; 70 % complete, 20 % pruned, "
        f"10 % failed) on each backend; every way asked once untimed, then {repeats} interleaved timed rounds (median "
        f"and min in seconds). Each in-process call opens and closes its own connection pool, as `gapsweep.api` does; "
        f"`gapsweep cli` is a whole `gapsweep best --top {TOP} --json` process (as `python -m gapsweep.cli`). `optuna best_trials` gives Optuna's "
        f"best (one trial), the others the top {TOP}; `correct` compares each answer with the top {TOP} computed from "
        "the trials in memory.",
        report.machine_line(machine),
        f"Building the study: the first {through_optuna} trials through Optuna's `study.add_trials` (timed per trial), "
        "the rest bulk inserted into Optuna's own tables in the form Optuna writes them; `read_back_mismatches` counts "
        "trials that `optuna.load_study(...).get_trials()` reads back different from the trials made (state, value, "
        "params, distributions, user attributes, intermediate values). `cli_on_5_trials_s` is the median time of the "
        "same `gapsweep best` process on a 5-trial study: the CLI's fixed cost (interpreter start, imports, connection).",
        build_table,
        "Time:",
        table,
        *(["Errors (these ways raised and were not timed):", "\n".join(f"- {line}" for line in errors)] if errors else []),
        f"Peak memory of one top-{TOP}-by-score call, each in a fresh process after a warm-up on a 5-trial study "
        "(tracemalloc: peak of Python allocations during the call; RSS growth: resident high-water mark above the "
        "process before the call; process peak: the whole process's high-water mark, interpreter and imports "
        "included, which is all there is to measure for the CLI):",
        memory_table,
        *[f"{name} skipped: {reason}" for name, reason in {**skipped, **skipped_approaches}.items()],
        "![median seconds per query](benchmarks/query_scale.png)",
        f"Target: gapsweep's SQL top {TOP} faster than every Optuna way of getting the same top {TOP}, with the same "
        f"answer. {verdict}; answers {'all correct' if all_correct else '**not all correct**'}.",
    ])
    report.write_section(options.out, NAME, TITLE, body)


if __name__ == "__main__":
    main()
