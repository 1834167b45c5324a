"""Where the page's files are, and whether the browser decoder (onnxruntime-web) is among them.

``web/build.py`` copies the page (``web/index.html``, ``app.js``, ``style.css``, ...) and the few onnxruntime-web
files it needs (``vendor/ort.wasm.min.mjs``, ``vendor/ort-wasm-simd-threaded.{mjs,wasm}``) into
``anymask/server/static/``, which ships in the package. In a source checkout that was never built, the page is
served from ``web/`` itself, without the vendor files: the page then asks the server to decode each prompt
(the fallback), and :func:`find_page_assets` logs a warning saying how to build them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGE_STATIC = Path(__file__).resolve().parent / "static"
SOURCE_WEB = Path(__file__).resolve().parents[3] / "web"  # a source checkout's web/ folder
#: the onnxruntime-web files the page loads (relative to the static folder)
VENDOR_FILES = ("vendor/ort.wasm.min.mjs", "vendor/ort-wasm-simd-threaded.mjs", "vendor/ort-wasm-simd-threaded.wasm")


@dataclass(frozen=True)
class PageAssets:
    """The page's folder (None when the page is missing) and whether it holds the browser decoder."""

    directory: Path | None
    browser_decoding: bool

    @staticmethod
    def missing_page() -> str:
        return ("<!doctype html><title>anymask</title><p>The page's files are not installed. Build them with "
                "<code>python web/build.py</code> in a source checkout, then reinstall. The API works: see "
                "<a href=\"/docs\">/docs</a>.</p>")


def find_page_assets(directory: str | Path | None = None) -> PageAssets:
    """The page's files: ``directory`` if given, else the package's ``static/``, else a checkout's ``web/``."""
    candidates = [Path(directory)] if directory is not None else [PACKAGE_STATIC, SOURCE_WEB]
    for folder in candidates:
        if (folder / "index.html").is_file():
            vendor = all((folder / name).is_file() for name in VENDOR_FILES)
            if not vendor:
                logger.warning("the page's onnxruntime-web files are missing from %s: the page will ask the "
                               "server to decode every prompt (slower). Build them with `python web/build.py`.",
                               folder)
            return PageAssets(folder, vendor)
    logger.warning("the page's files are not installed (looked in %s): only the API is served. Build them with "
                   "`python web/build.py`.", ", ".join(map(str, candidates)))
    return PageAssets(None, False)


__all__ = ["PageAssets", "VENDOR_FILES", "find_page_assets"]
