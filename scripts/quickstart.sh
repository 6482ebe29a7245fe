#!/usr/bin/env bash
# Fresh machine -> working install -> the demo. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,ray]'
.venv/bin/python scripts/demo.py "$@"
