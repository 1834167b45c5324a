#!/usr/bin/env bash
# Set up a test environment from scratch and run the test suite.
#
# The parity tests run the official segment-anything and MobileSAM code beside anymask; they import
# torchvision, which needs the torch 2.14.1 + torchvision 0.29.1 pair. anymask itself needs neither
# torchvision nor that torch version (see scripts/demo.sh for the plain install).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k parity -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${ANYMASK_TEST_VENV:-.venv-test}"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
# (pip's exit status is kept; only its noise about this machine's empty extra indexes is filtered)
pip_install() { "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
# The page's browser decoder (onnxruntime-web, from the npm registry at the version web/package-lock.json pins)
# goes into the package before it is installed; its test drives the system's Chromium. Both come from apt when
# missing (CI runs as root on Debian).
apt_install() { command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } || true; }
command -v npm >/dev/null || apt_install nodejs npm
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || apt_install chromium
"${PYTHON:-python3}" web/build.py
pip_install torch==2.14.1 torchvision==0.29.1
pip_install -e ".[test]"
"$venv/bin/python" -W ignore -c "import anymask, torch, torchvision, segment_anything, mobile_sam"
exec "$venv/bin/python" -m pytest "$@"
