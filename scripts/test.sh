#!/usr/bin/env bash
# One command from a fresh clone: install gapsweep with its test extras into .venv and run the
# whole test suite (SQLite files and the PostgreSQL server at 127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
export TF_CPP_MIN_LOG_LEVEL=2
# One pytest process per core (pytest-xdist): most tests wait on one single-threaded trainer or
# on subprocesses, so a lone process leaves the other cores idle.
exec .venv/bin/python -m pytest -n "${GAPSWEEP_TEST_PROCESSES:-auto}" "$@"
