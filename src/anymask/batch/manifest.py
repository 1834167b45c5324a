"""The output folder of a batch run: its lock, its settings (``run.json``) and its run manifest (``manifest.jsonl``).

``manifest.jsonl`` has one JSON line per image and outcome, appended by the driver as results arrive (each
append is one ``write`` followed by ``fsync``, so a killed driver leaves whole lines; a torn last line from a
power cut is ignored when read)::

    {"run": "20261126T083000-1234", "time": "...", "id": "val/000123", "image": "/data/val/000123.jpg",
     "status": "done", "output": "embeddings/val/000123.npz", "seconds": {"load": 0.01, "compute": 0.8, ...},
     "worker": "host:pid"}
    {"run": ..., "id": "val/bad", "status": "failed", "reason": "...: cannot decode image: ..."}

The latest line of an id is its status. A result file that exists is complete (results are written to a
temporary file and renamed into place), so a rerun skips exactly the images whose result file exists, redoes
failed and unfinished ones, and adds a ``done`` line (``"recovered": true``) for a result whose line was lost
when a driver was killed between the rename and the append.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from .. import __version__
from ..errors import OutputError
from ..fileio import atomic_write_text

MANIFEST_NAME = "manifest.jsonl"
SETTINGS_NAME = "run.json"
LOCK_NAME = ".anymask-batch.lock"


@contextlib.contextmanager
def locked_output(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` for one run (two runs never write into the same folder at once).

    Raises:
        OutputError: the folder cannot be created, or another run holds the lock.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"cannot write to {out_dir}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another anymask batch run is writing to {out_dir}") from None
        yield
    finally:
        os.close(fd)


def check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Record the run's settings in ``OUT/run.json``, or check that they match the ones recorded there.

    Raises:
        OutputError: the folder holds results made with other settings (task, model, generator options).
    """
    path = out_dir / SETTINGS_NAME
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path} is unreadable ({exc}); use another output folder") from None
    if recorded is None:
        atomic_write_text(path, json.dumps({"anymask_version": __version__, "settings": settings}, indent=2) + "\n")
        return
    if recorded.get("settings") != settings:
        raise OutputError(f"{out_dir} holds results made with other settings ({_diff(recorded.get('settings'), settings)});"
                          " use another output folder, or the same settings to resume")


def _diff(old: Any, new: dict[str, Any]) -> str:
    if not isinstance(old, dict):
        return "unknown settings"
    def short(value: Any) -> str:
        if isinstance(value, dict) and isinstance(other := (old if value is new else new), dict):
            value = {k: v for k, v in value.items() if other.get(k) != v}  # only the options that differ
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."

    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {short(old.get(k))} there, {short(new.get(k))} now" for k in keys)


def scan_results(out_dir: Path, folder: str, suffix: str) -> set[str]:
    """Ids of the complete results under ``OUT/folder``; removes temporary files left by a killed writer.

    Call it only while holding :func:`locked_output` (no writer of this folder is running then).
    """
    root = out_dir / folder
    done: set[str] = set()
    for dirpath, _dirs, files in os.walk(root):
        base = Path(dirpath)
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):  # fileio.atomic_write's temporary files
                with contextlib.suppress(OSError):
                    (base / name).unlink()
            elif name.endswith(suffix):
                done.add((base / name).relative_to(root).as_posix()[: -len(suffix)])
    return done


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """The latest record of every id in a run manifest (torn or malformed lines are ignored)."""
    latest: dict[str, dict[str, Any]] = {}
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return latest
    with handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                latest[record["id"]] = record
    return latest


class ManifestWriter:
    """Appends status records to ``manifest.jsonl``: whole lines, flushed to disk at every :meth:`append`."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(self._fd).st_size
            if size and _last_byte(path, size) != b"\n":  # a torn line from an earlier crash: start a new one
                os.write(self._fd, b"\n")
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        data = "".join(json.dumps({"run": self.run_id, "time": stamp, **r}, ensure_ascii=False) + "\n"
                       for r in records).encode("utf-8")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(size - 1)
        return handle.read(1)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"


__all__ = ["ManifestWriter", "check_settings", "locked_output", "new_run_id", "read_manifest", "scan_results"]
