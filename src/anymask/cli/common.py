"""Helpers shared by the command modules: parsing numbers, checking output directories."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputError, PromptError


def parse_numbers(text: str, counts: tuple[int, ...], what: str) -> list[float]:
    """``"1,2.5,3"`` -> ``[1.0, 2.5, 3.0]``; a :class:`PromptError` unless there are ``counts`` numbers."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise PromptError(f"bad {what} {text!r}: expected {' or '.join(map(str, counts))} comma-separated numbers")
    return values


def check_output_dir(out_dir: Path) -> None:
    """Fail before any work if ``out_dir`` could not be created or written; create nothing yet."""
    existing = out_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot create output directory {out_dir}: {existing} is not a writable directory")
