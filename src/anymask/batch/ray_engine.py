"""The ``ray`` engine: the same per-image work as a Ray Data pipeline, on a Ray cluster or a local one.

``ray.data.from_items(items)`` -> ``map_batches(RayImageWorker, concurrency=workers, num_cpus=threads)`` ->
status records streamed back to the driver (``iter_batches``), which appends them to the run manifest. Each
actor of the pool builds one :class:`~anymask.batch.tasks.ImageWorker` (the model is loaded once per actor)
and writes its images' results itself, atomically, into the output folder; on a cluster that folder and the
images must be on a file system every node sees at the same path.

Ray's own fault tolerance restarts an actor that dies and retries its batch; a batch whose actor dies
:data:`MAX_TASK_RETRIES` + 1 times is dropped (``DataContext.max_errored_blocks``) and its images are recorded
as failed, so one image that crashes its worker does not stop the run.

Ray is an optional dependency (``pip install 'anymask[ray]'``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

from ..errors import AnymaskError
from .inputs import BatchItem
from .tasks import ImageWorker, TaskSpec, lost_record

logger = logging.getLogger(__name__)

#: retries of a batch whose actor died, before its images are recorded as failed
MAX_TASK_RETRIES = 2


class RayUnavailableError(AnymaskError):
    """``--engine ray`` without Ray installed."""

    exit_code = 1


def import_ray():
    """``ray`` with ``ray.data``, or a clear error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayUnavailableError(
            f"--engine ray needs Ray Data, which is not installed ({exc}): pip install 'anymask[ray]'") from None
    return ray


class RayImageWorker:
    """The callable class of ``map_batches``: one per actor, with the model loaded once in ``__init__``.

    :func:`run_ray` gives the :class:`TaskSpec` and the output folder as class attributes of a subclass.
    """

    spec: TaskSpec
    out_dir: str

    def __init__(self) -> None:
        self.worker = ImageWorker(self.spec, self.out_dir)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        records = []
        for i in range(len(batch["id"])):
            row = {key: batch[key][i] for key in batch}
            records.append(json.dumps(self.worker(BatchItem.from_row(row))))
        return {"id": np.asarray(batch["id"], dtype=object), "record": np.asarray(records, dtype=object)}


def _remote_args() -> dict[str, Any]:
    """Actor options: restart a dead actor (Ray Data's default) but retry its batch only a few times."""
    return {"max_restarts": -1, "max_task_retries": MAX_TASK_RETRIES}


def run_ray(items: list[BatchItem], spec: TaskSpec, out_dir: Path, workers: int, batch_size: int,
            address: str | None = None) -> Iterator[list[dict[str, Any]]]:
    """Process ``items`` on Ray; yields lists of status records as batches finish.

    Uses the Ray connection of this process when there is one; otherwise connects to ``address`` (a cluster's
    ``host:port`` or ``"auto"``) or, with None, starts a local Ray instance for the run and stops it after.
    """
    ray = import_ray()
    if not logger.isEnabledFor(logging.INFO):
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset INFO lines under a progress bar
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        started = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows one bar for the whole run
        context.max_errored_blocks = -1  # a batch that kills its actor every time is dropped, not fatal
        context.execution_options.verbose_progress = False
        dataset = ray.data.from_items([item.to_row() for item in items],
                                      override_num_blocks=max(1, math.ceil(len(items) / batch_size)))
        # the spec travels as class attributes (cloudpickled with the class), not as constructor arguments
        worker_class = type("RayImageWorker", (RayImageWorker,), {"spec": spec, "out_dir": os.fspath(out_dir)})
        with warnings.catch_warnings():
            # Ray 2.60 deprecates ray_remote_args_fn (removal planned for 2.64) but has no other way yet to bound
            # an actor's task retries; the pin in pyproject.toml keeps this call valid
            warnings.filterwarnings("ignore", message=".*ray_remote_args_fn.*is deprecated")
            dataset = dataset.map_batches(
                worker_class, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=spec.threads, ray_remote_args_fn=_remote_args,
            )
        seen: set[str] = set()
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            records = [json.loads(text) for text in batch["record"]]
            seen.update(r["id"] for r in records)
            yield records
        lost = [item for item in items if item.id not in seen]
        if lost:  # dropped batches: images finished before the crash are done, the others failed
            yield [lost_record(item, spec, out_dir, f"its Ray batch failed {MAX_TASK_RETRIES + 1} times (the "
                               "worker died: killed, out of memory, or a crash in native code)") for item in lost]
    finally:
        if started:
            ray.shutdown()


__all__ = ["MAX_TASK_RETRIES", "RayImageWorker", "RayUnavailableError", "import_ray", "run_ray"]
