#!/usr/bin/env bash
# One command from a fresh clone: install gapsweep into .venv, run a real 10-trial sweep on
# scikit-learn's bundled digits into the SQLite file gapsweep.db, and print the best trial.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/gapsweep launch examples/digits.toml
.venv/bin/gapsweep best --study digits-demo --json
