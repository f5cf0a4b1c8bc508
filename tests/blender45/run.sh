#!/usr/bin/env bash
# Run the Blender tests that must also pass on Blender 4.5 LTS, in their own virtual environment (.venv45).
# Idempotent: the environment is made once (a stamp file records what was installed), later runs go straight to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3.11}"
BPY45="4.5.15"  # newest 4.5 LTS wheel for Python 3.11 (pip index versions bpy)
VENV=.venv45
STAMP="$VENV/.cinepregen-bpy-$BPY45-2"
if [ ! -f "$STAMP" ]; then
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet -c constraints.txt "bpy==$BPY45" pytest numpy OpenEXR tqdm
    "$VENV/bin/python" -m pip install --quiet --no-deps -e .
    touch "$STAMP"
fi
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/blender45 tests/test_render_passes.py "$@"
