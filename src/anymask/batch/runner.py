"""The driver of a batch run: lock the output folder, skip finished images, run an engine, keep the manifest.

    summary = run_batch(read_inputs("photos/", "embed"), TaskSpec("embed"), Path("out"), engine="local", workers=2)

The driver alone writes ``manifest.jsonl`` (workers write result files); see :mod:`anymask.batch.manifest` for
the resume rules and :mod:`anymask.batch.tasks` for the result files.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PromptError
from .inputs import BatchItem
from .manifest import MANIFEST_NAME, ManifestWriter, check_settings, locked_output, new_run_id, read_manifest, scan_results
from .tasks import RESULT_LAYOUT, TaskSpec, result_path

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")


@dataclass
class BatchSummary:
    """What a run did. ``images_per_s`` = images done / ``seconds`` (wall time of the engine, model loading
    included); ``first_result_s``: seconds to the first result (mostly worker start-up); ``failures`` =
    ``[(id, reason), ...]``; ``worker_seconds``: seconds summed over done images (``load``, ``compute``, ``write``,
    ``total``)."""

    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    first_result_s: float | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    worker_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.done} done, {self.skipped} skipped, {self.failed} failed of {self.total} images "
                f"in {self.seconds:.1f} s ({self.images_per_s:.2f} images/s)")

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "done": self.done, "skipped": self.skipped, "failed": self.failed,
                "seconds": round(self.seconds, 3), "images_per_s": round(self.images_per_s, 4),
                "first_result_s": None if self.first_result_s is None else round(self.first_result_s, 3),
                "worker_seconds": {k: round(v, 3) for k, v in self.worker_seconds.items()}}


def default_threads(workers: int) -> int:
    """Compute threads per worker so that the workers together use this machine's cores once."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_batch(items: list[BatchItem], spec: TaskSpec, out_dir: Path, *, engine: str = "local", workers: int = 1,
              batch_size: int = 4, ray_address: str | None = None, progress: bool = True) -> BatchSummary:
    """Process ``items`` into ``out_dir`` with ``engine``; returns the summary.

    Raises:
        PromptError: bad engine, workers or batch size.
        OutputError: the folder is locked by another run, holds other settings, or cannot be written.
        ModelError / WeightsError: the model cannot be loaded (by the driver's check or by a worker).
    """
    from tqdm import tqdm

    if engine not in ENGINES:
        raise PromptError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if workers < (1 if engine == "ray" else 0) or batch_size < 1:
        raise PromptError(f"--workers must be >= 1 (>= 0 with the local engine) and --batch-size >= 1, got {workers} "
                          f"and {batch_size}")
    if engine == "ray":
        from .ray_engine import import_ray

        import_ray()  # a clear error before any work
    out_dir = Path(out_dir)
    summary = BatchSummary(total=len(items))
    with locked_output(out_dir):
        check_settings(out_dir, spec.settings())
        folder, suffix = RESULT_LAYOUT[spec.task]
        finished = scan_results(out_dir, folder, suffix)
        todo = [item for item in items if item.id not in finished]
        summary.skipped = len(items) - len(todo)
        manifest_path = out_dir / MANIFEST_NAME
        latest = read_manifest(manifest_path)
        with ManifestWriter(manifest_path, new_run_id()) as manifest:
            recovered = [{"id": it.id, "image": it.image, "status": "done", "recovered": True,
                          "output": result_path(out_dir, spec.task, it.id).relative_to(out_dir).as_posix()}
                         for it in items if it.id in finished and latest.get(it.id, {}).get("status") != "done"]
            if recovered:
                manifest.append(recovered)
            if summary.skipped:
                logger.warning("skipping %d of %d images whose results exist", summary.skipped, len(items))
            if todo:
                _check_model(spec)
                start = time.perf_counter()
                bar = tqdm(total=len(todo), desc=f"batch {spec.task}", unit="image", disable=not progress or None)
                try:
                    for records in _engine_runs(engine, todo, spec, out_dir, workers, batch_size, ray_address):
                        manifest.append(records)
                        if summary.first_result_s is None:
                            summary.first_result_s = time.perf_counter() - start
                        _count(summary, records)
                        bar.update(len(records))
                        bar.set_postfix(done=summary.done, failed=summary.failed, refresh=False)
                finally:
                    bar.close()
                    summary.seconds = time.perf_counter() - start
    return summary


def _engine_runs(engine: str, todo: list[BatchItem], spec: TaskSpec, out_dir: Path, workers: int, batch_size: int,
                 ray_address: str | None):
    if engine == "ray":
        from .ray_engine import run_ray

        return run_ray(todo, spec, out_dir, workers, batch_size, ray_address)
    from .local import run_local

    return run_local(todo, spec, out_dir, workers, batch_size)


def _check_model(spec: TaskSpec) -> None:
    """Fail early on an unknown model, and fetch its weights once here rather than in every worker."""
    from .. import weights
    from ..models import get_model_spec

    model_spec = get_model_spec(spec.model)
    if spec.checkpoint is None or spec.verify:
        weights.resolve(model_spec.weights, path=spec.checkpoint)


def _count(summary: BatchSummary, records: list[dict[str, Any]]) -> None:
    for r in records:
        if r.get("status") == "done":
            summary.done += 1
            for k, v in (r.get("seconds") or {}).items():
                summary.worker_seconds[k] = summary.worker_seconds.get(k, 0.0) + float(v)
        else:
            summary.failed += 1
            summary.failures.append((r["id"], str(r.get("reason", "unknown"))))


__all__ = ["BatchSummary", "ENGINES", "default_threads", "run_batch"]
