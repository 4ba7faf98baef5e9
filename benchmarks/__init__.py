"""Benchmarks for gapsweep, one command each, sized for a 2-core machine.

    python -m benchmarks.overhead         # trial-loop overhead vs plain Optuna (SQLite, PostgreSQL)
    python -m benchmarks.pruning          # median pruning vs none: epochs, wall time, best val loss
    python -m benchmarks.generalization   # gap penalty vs plain val loss: held-out test loss and gap
    python -m benchmarks.vs_kerastuner    # gapsweep vs KerasTuner Hyperband/RandomSearch

Each prints its table and writes ``docs/benchmarks/NAME.json`` (and ``NAME.png``) plus its
section of ``docs/benchmarks.md``; ``--quick`` is a CI-sized smoke run and ``--out DIR`` writes
somewhere else than ``docs/``.
"""
