#!/usr/bin/env bash
# Install LinearLink with its test dependencies and run the whole test suite (slow tests too).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
"$VENV_PY" -m pip install --quiet -e ".[test]"
"$VENV_PY" -m ruff check pipeline sample_data tests
"$VENV_PY" -m ruff format --check pipeline sample_data tests
"$VENV_PY" -m pytest -m "slow or not slow" "$@"
