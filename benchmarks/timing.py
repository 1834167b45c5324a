"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 0, pause_s: float = 0.0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, in milliseconds, after ``warmup`` untimed calls.

    ``pause_s``: sleep this long before each timed call (untimed), as between the clicks of a person.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if pause_s:
            time.sleep(pause_s)
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def write_results(out: str | Path, result: dict, table: str) -> None:
    """Write ``result`` to ``out.json`` and the markdown ``table`` to ``out.md``, atomically; print the table."""
    from anymask.fileio import atomic_write_text

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), table if table.endswith("\n") else table + "\n")
    print(table)
