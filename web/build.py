"""Build the page into the Python package: ``python web/build.py`` (run by ``scripts/test.sh`` before installing).

Copies the page's files (``web/*.html``, ``*.js``, ``*.css``) and the three onnxruntime-web files the page
loads into ``src/anymask/server/static/`` (``vendor/ort.wasm.min.mjs``, ``vendor/ort-wasm-simd-threaded.mjs``
and ``.wasm``), so that ``pip install`` ships them and the page works offline (no CDN). onnxruntime-web comes
from the npm registry at the version ``web/package-lock.json`` pins (``npm ci --ignore-scripts``). Without npm
(``--no-npm``, or npm not installed) only the page is copied: ``anymask serve`` then decodes on the server.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parent
STATIC = WEB.parent / "src" / "anymask" / "server" / "static"
PAGE_SUFFIXES = (".html", ".js", ".css")
ORT_DIST = WEB / "node_modules" / "onnxruntime-web" / "dist"
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def install_onnxruntime_web() -> bool:
    """``npm ci`` in ``web/`` when the pinned onnxruntime-web is not installed there yet; False without npm."""
    package = WEB / "node_modules" / "onnxruntime-web" / "package.json"
    lock = json.loads((WEB / "package-lock.json").read_text())
    wanted = lock["packages"]["node_modules/onnxruntime-web"]["version"]
    if package.is_file() and json.loads(package.read_text())["version"] == wanted:
        return True
    npm = shutil.which("npm")
    if npm is None:
        return False
    try:
        subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=WEB, check=True)
    except subprocess.CalledProcessError as exc:
        print(f"npm ci failed ({exc}): is the npm registry reachable?", file=sys.stderr)
        return False
    return True


def build(use_npm: bool = True) -> Path:
    """Copy the page (and, with npm, onnxruntime-web) into the package; return the static folder."""
    STATIC.mkdir(parents=True, exist_ok=True)
    for path in sorted(WEB.iterdir()):
        if path.is_file() and path.suffix in PAGE_SUFFIXES:
            shutil.copy2(path, STATIC / path.name)
    vendor = STATIC / "vendor"
    if use_npm and install_onnxruntime_web():
        vendor.mkdir(exist_ok=True)
        for name in ORT_FILES:
            shutil.copy2(ORT_DIST / name, vendor / name)
        meta = json.loads((ORT_DIST.parent / "package.json").read_text())
        (vendor / "NOTICE.txt").write_text(
            f"{', '.join(ORT_FILES)}: from the npm package onnxruntime-web {meta['version']} "
            f"({meta.get('license', 'MIT')} licence, Copyright (c) Microsoft Corporation).\n")
        print(f"built the page with onnxruntime-web {meta['version']} into {STATIC}")
    else:
        shutil.rmtree(vendor, ignore_errors=True)
        print(f"built the page without onnxruntime-web (npm missing or --no-npm) into {STATIC}: "
              "prompts will be decoded on the server", file=sys.stderr)
    return STATIC


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-npm", action="store_true", help="copy only the page, not onnxruntime-web")
    build(use_npm=not parser.parse_args().no_npm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
