#!/usr/bin/env bash
# Create .venv (if missing) and install gapsweep into it with the given extras (default: none).
# Usage: scripts/setup.sh [dev|gpu|dev,gpu]
# With gpu, the CPU build of TensorFlow that the default install brings is swapped for the CUDA
# build: both wheels install the same `tensorflow` package, so only one may stay.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip)
"${pip[@]}" install --quiet --upgrade pip
if [ -n "$extras" ]; then
  "${pip[@]}" install --quiet -e ".[$extras]"
else
  "${pip[@]}" install --quiet -e .
fi
case ",$extras," in
  *,gpu,*)
    if "${pip[@]}" show tensorflow-cpu >/dev/null 2>&1; then
      version=$("${pip[@]}" show tensorflow-cpu | sed -n 's/^Version: //p')
      "${pip[@]}" uninstall --quiet -y tensorflow-cpu
      "${pip[@]}" install --quiet --force-reinstall --no-deps "tensorflow==$version"
    fi
    ;;
esac
