#!/usr/bin/env bash
# Create .venv (Python 3.11) and install Trainyard with its dev tools; a no-op when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.trainyard-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch/torchvision are pinned in pyproject.toml (2.14.1 / 0.29.1); nothing else may pull another.
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    touch "$stamp"
fi
