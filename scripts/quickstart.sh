#!/usr/bin/env bash
# Install LinearLink and run it on the synthetic sample night.
# Masters and previews land in sample_output/ (masters/, previews/, run.json).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
"$VENV_PY" -m pip install --quiet -e .
.venv/bin/linearlink sample sample_night
.venv/bin/linearlink run sample_night -o sample_output
