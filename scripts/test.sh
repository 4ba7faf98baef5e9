#!/usr/bin/env bash
# One command from a fresh clone: install gapsweep with its test extras into .venv and run the
# whole test suite (SQLite files and the PostgreSQL server at 127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest "$@"
