# Sourced by the other scripts: make (or reuse) the project's virtual environment in .venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(command -v python3.11 || command -v python3)"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  if ! "$PY" -m venv "$ROOT/.venv" 2>/dev/null; then
    rm -rf "$ROOT/.venv"
    "$PY" -m pip install --quiet virtualenv
    "$PY" -m virtualenv --quiet "$ROOT/.venv"
  fi
fi
VENV_PY="$ROOT/.venv/bin/python"
"$VENV_PY" -m pip install --quiet --upgrade pip
