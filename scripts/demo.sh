#!/usr/bin/env bash
# Install anymask from scratch (torch 2.13.0; the CPU build on our machines) and segment the shipped photo with the default model.
# The first run fetches the MobileSAM weights (40 MB, sha256-verified) into ~/.cache/anymask.
# Outputs: out/astronaut_mask.png, out/astronaut_cutout.png, out/astronaut_overlay.png, out/astronaut.json
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${ANYMASK_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
# (pip's exit status is kept; only its noise about this machine's empty extra indexes is filtered)
pip_install() { "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
pip_install torch==2.13.0
pip_install .
"$venv/bin/anymask" segment examples/astronaut.png --point 405,150 -o out "$@"
