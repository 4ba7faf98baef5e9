"""Benchmarks for gapsweep, one command each, sized for a 2-core machine.

    python -m benchmarks.overhead         # trial-loop overhead vs plain Optuna (SQLite, PostgreSQL)
    python -m benchmarks.pruning          # median pruning vs none: epochs, wall time, best val loss
    python -m benchmarks.generalization   # gap penalty vs plain val loss: held-out test loss and gap
    python -m benchmarks.vs_kerastuner    # gapsweep vs KerasTuner Hyperband/RandomSearch
    python -m benchmarks.checkpoints      # real sweeps checkpointing every epoch, every 30 s, never
    python -m benchmarks.query_scale      # `gapsweep best` vs loading a 10,000-trial study in Optuna
    python -m benchmarks.workers          # 1-8 workers sharing one PostgreSQL study

Each prints its table and writes ``docs/benchmarks/NAME.json`` (and ``NAME.png``) plus its
section of ``docs/benchmarks.md``; ``--quick`` is a CI-sized smoke run and ``--out DIR`` writes
somewhere else than ``docs/``.
"""
