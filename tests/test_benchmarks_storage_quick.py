"""The storage benchmarks' ``--quick`` runs (query scale, worker scaling) into a temporary folder.

Both need the PostgreSQL server (``postgres_server`` skips without it, fails under CI). Only
the shape of the results and the benchmarks' own correctness checks are asserted: timings
depend on the machine and its load.
"""

from __future__ import annotations

import pytest

from quick_benchmarks import run_quick

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def run_storage_quick(name: str, out) -> dict:
    """A storage benchmark's quick run, which must have reached the PostgreSQL server."""
    payload = run_quick(name, out, machine_keys={"postgresql", "run_minutes"})
    assert payload["skipped"] == {}
    return payload


def test_query_scale_quick(tmp_path, postgres_server):
    from benchmarks.query_scale import APPROACHES, QUERIES, applies

    payload = run_storage_quick("query_scale", tmp_path)
    settings = payload["settings"]
    assert settings["trials"] == 500
    backends = ("sqlite", "postgresql")
    for build in payload["builds"]:
        assert build["trials"] == build["complete"] + build["pruned"] + build["fail"] == 500
        assert build["add_trials"] + build["bulk"] == 500
        assert build["read_back_mismatches"] == 0  # Optuna reads back exactly the trials made
    assert [b["backend"] for b in payload["builds"]] == list(backends)

    skipped = set(payload["skipped_approaches"])
    expected = {
        (backend, query.name, approach)
        for backend in backends for query in QUERIES for approach in APPROACHES
        if applies(approach, query) and approach not in skipped
    }
    rows = payload["rows"]
    assert {(r["backend"], r["query"], r["approach"]) for r in rows} == expected
    for row in rows:
        if row["error"] is None:
            assert row["correct"], row  # every answer that came back is the right top 10
            assert len(row["runs_s"]) == settings["repeats"] and row["median_s"] > 0
            assert row["returned"] == (1 if row["approach"] == "optuna best_trials" else 10)
        else:
            assert row["median_s"] is None and row["error"]
    assert all(r["error"] is None for r in rows if r["query"] == "top 10 by score")

    memory = {(m["backend"], m["approach"]): m for m in payload["memory"]}
    assert set(memory) == {(b, a) for b in backends for a in APPROACHES if a not in skipped}
    for (backend, approach), row in memory.items():
        if approach == "gapsweep cli":
            assert row["process_peak_rss_mb"] > 0
        else:
            assert row["tracemalloc_peak_mb"] > 0 and row["rss_growth_mb"] is not None


def test_workers_quick(tmp_path, postgres_server):
    payload = run_storage_quick("workers", tmp_path)
    per_worker = payload["settings"]["trials_per_worker"]
    rows = payload["rows"]
    ways = ("default pool", "no pool", "proxy", "proxy, 2 processes")
    assert [(row["pool"], row["workers"]) for row in rows] == [(way, n) for way in ways for n in (1, 2)]
    for row in rows:
        assert row["correct"] is True and row["errors"] == [] and row["duplicates"] == 0
        assert row["budget"] == per_worker * row["workers"] == row["states"]["complete"] and row["states"]["running"] == 0
        assert sum(row["per_worker"]) == row["budget"] and len(row["per_worker"]) == row["workers"]
        assert row["tensorflow_imported"] is False
        assert row["trials_per_s"] > 0 and row["claims"] >= row["budget"]
        assert row["connections_peak"] >= 1  # the sampler sees the workers' connections
    assert rows[0]["speedup"] == pytest.approx(1.0)
    assert payload["target"]["all_correct"] is True
