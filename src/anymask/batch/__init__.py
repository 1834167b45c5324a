"""Whole image collections: embeddings, segment-everything or box-prompted masks for every image, resumable.

    from anymask.batch import TaskSpec, read_inputs, run_batch

    items = read_inputs("photos/", "embed")            # a folder, a glob, or a CSV / JSONL manifest
    summary = run_batch(items, TaskSpec("embed", threads=1), Path("out"), engine="local", workers=2)
    print(summary.line())                              # done, skipped, failed, images/s

The same per-image function (:class:`~anymask.batch.tasks.ImageWorker`) runs under both engines: ``local``
(worker processes on this machine, :mod:`anymask.batch.local`) and ``ray`` (Ray Data on a cluster or a local
Ray, :mod:`anymask.batch.ray_engine`). See docs/batch.md.
"""

from __future__ import annotations

from .inputs import BatchItem, InputError, read_inputs
from .manifest import read_manifest
from .runner import ENGINES, BatchSummary, default_threads, run_batch
from .tasks import TaskSpec, result_path

__all__ = ["BatchItem", "BatchSummary", "ENGINES", "InputError", "TaskSpec", "default_threads", "read_inputs",
           "read_manifest", "result_path", "run_batch"]
