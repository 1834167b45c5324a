"""The ``local`` engine: worker processes on this machine (``concurrent.futures.ProcessPoolExecutor``).

Each worker process loads the model once (the pool's initializer builds an :class:`ImageWorker`) and then takes
chunks of ``batch_size`` images. For every image it sends ``("start", id)`` and then ``("done", record)`` to the
driver over a pipe, so results stream back image by image and the driver always knows which images are being
processed. Processes are started with ``spawn`` (no fork of a process that holds threads), and each dies with
the driver (``PR_SET_PDEATHSIG`` on Linux), so killing the driver leaves no orphan writing results.

A worker process that dies (killed, out of memory, a crash in native code) breaks the pool. Images of the lost
chunks that had not started are queued again; the ones that were being processed are run again one at a time,
each alone in a fresh single-worker pool: an image whose worker dies again is recorded as failed with that
reason. The run then goes on with a new pool.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Iterator

from ..errors import ModelError
from .inputs import BatchItem
from .tasks import ImageWorker, TaskSpec, lost_record

logger = logging.getLogger(__name__)

#: chunks queued per worker beyond the one it runs, so that no worker waits for the driver
PREFETCH = 1
#: seconds between looks at the result pipe while chunks run
POLL_S = 0.2

_worker: ImageWorker | None = None
_worker_error: str | None = None
_events: Any = None


class WorkerStartError(Exception):
    """A worker process could not load the model."""


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except OSError:  # pragma: no cover - no libc by that name
            pass


def _init_worker(spec: TaskSpec, out_dir: str, parent_pid: int, events: Any) -> None:
    global _worker, _worker_error, _events
    _die_with_parent()
    if os.getppid() != parent_pid:  # the driver died before the signal was armed
        os._exit(1)
    _events = events
    try:
        _worker = ImageWorker(spec, out_dir)
    except Exception as exc:  # noqa: BLE001 - reported by every task, and turned into one error by the driver
        _worker_error = f"{type(exc).__name__}: {exc}"


def _process(items: list[BatchItem]) -> int:
    """Run in a worker: process ``items``, sending ``("start", id)`` and ``("done", record)`` for each."""
    if _worker is None:
        raise WorkerStartError(_worker_error or "worker not initialised")
    for item in items:
        _events.put(("start", item.id))
        _events.put(("done", _worker(item)))  # SimpleQueue: written to the pipe before put returns
    return len(items)


class _Pool:
    """``workers`` model-holding processes and the pipe their events come back on."""

    def __init__(self, spec: TaskSpec, out_dir: Path, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.events = context.SimpleQueue()
        self.executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_worker,
            initargs=(spec, os.fspath(out_dir), os.getpid(), self.events),
        )
        self.started: set[str] = set()

    def drain(self) -> list[dict[str, Any]]:
        """Records that arrived since the last call (and notes the images that started)."""
        records = []
        while not self.events.empty():
            kind, value = self.events.get()
            if kind == "start":
                self.started.add(value)
            else:
                self.started.discard(value["id"])
                records.append(value)
        return records

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.events.close()


def run_local(items: list[BatchItem], spec: TaskSpec, out_dir: Path, workers: int,
              batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Process ``items`` in ``workers`` processes (0: in this process); yields lists of status records as images
    finish."""
    if workers == 0:
        worker = ImageWorker(spec, os.fspath(out_dir))
        for item in items:
            yield [worker(item)]
        return
    queue = collections.deque(items[i : i + batch_size] for i in range(0, len(items), batch_size))
    while queue:
        pool = _Pool(spec, out_dir, min(workers, len(queue)))
        reported: set[str] = set()
        lost: list[BatchItem] = []
        try:
            in_flight: dict[Future, list[BatchItem]] = {}
            while queue or in_flight:
                while queue and len(in_flight) < workers * (1 + PREFETCH):
                    chunk = queue.popleft()
                    in_flight[pool.executor.submit(_process, chunk)] = chunk
                finished, _ = wait(in_flight, timeout=POLL_S, return_when=FIRST_COMPLETED)
                records = pool.drain()
                if records:
                    reported.update(r["id"] for r in records)
                    yield records
                for future in finished:
                    chunk = in_flight.pop(future)
                    try:
                        future.result()
                    except BrokenProcessPool:
                        lost += chunk
                    except WorkerStartError as exc:
                        raise ModelError(f"a worker could not load the model: {exc}") from None
                if lost:  # the pool is broken: every chunk still in flight is lost too
                    for chunk in in_flight.values():
                        lost += chunk
                    break
            records = pool.drain()
            if records:
                reported.update(r["id"] for r in records)
                yield records
        finally:
            pool.close()
        if lost:
            suspects = [it for it in lost if it.id in pool.started and it.id not in reported]
            unstarted = [it for it in lost if it.id not in pool.started and it.id not in reported]
            logger.warning("a worker process died; %d image(s) it was processing are retried alone, %d queued again",
                           len(suspects), len(unstarted))
            queue.extendleft(reversed([unstarted[i : i + batch_size] for i in range(0, len(unstarted), batch_size)]))
            yield from _run_isolated(suspects, spec, out_dir)


def _run_isolated(items: list[BatchItem], spec: TaskSpec, out_dir: Path) -> Iterator[list[dict[str, Any]]]:
    """Each image alone in a single-worker pool: one whose worker dies again is recorded as failed."""
    pool: _Pool | None = None
    try:
        for item in items:
            pool = pool or _Pool(spec, out_dir, 1)
            try:
                pool.executor.submit(_process, [item]).result()
                yield pool.drain()
            except BrokenProcessPool:
                pool.close()
                pool = None
                yield [lost_record(item, spec, out_dir, "the worker process died while processing this image, "
                                   "twice (killed, out of memory, or a crash in native code)")]
            except WorkerStartError as exc:
                raise ModelError(f"a worker could not load the model: {exc}") from None
    finally:
        if pool is not None:
            pool.close()


__all__ = ["run_local"]
