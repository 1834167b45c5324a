"""What a batch run processes: a folder, a glob pattern, or a manifest (CSV / JSONL) -> a list of :class:`BatchItem`.

* **folder**: every image file (by suffix, see :data:`IMAGE_SUFFIXES`) in the folder and its sub-folders, hidden
  files and folders left out, in path order.
* **glob**: a pattern with ``*``, ``?`` or ``[...]`` (``**`` matches sub-folders), e.g. ``"data/*/img_*.jpg"``;
  image files only.
* **manifest**: a ``.csv`` (header row) or ``.jsonl`` / ``.ndjson`` (one JSON object a line) file. Keys:
  ``image`` (required): the image path, relative paths are relative to the manifest's folder;
  ``id`` (optional): the result's name in the output folder (default: see below);
  ``boxes`` (``boxes`` task): a JSON list of boxes in the row itself (a JSON string in a CSV cell), or
  ``boxes_file``: a JSON file of the image's boxes (a detector's output, one file per image).
  A box is ``[x0, y0, x1, y1]`` (XYXY pixels of the displayed image) or an object ``{"box": [x0, y0, x1, y1],
  ...}`` whose other keys (``label``, ``score``, ...) are carried into the result. A boxes file holds a list of
  boxes or an object with a ``"boxes"`` list.

Result names (``BatchItem.id``): the path relative to the input root (the folder, the fixed part of a glob, the
manifest's folder) without its suffix, e.g. ``"val/000123"``; ``"val/000123.png"`` where two files differ only by
suffix; the file's stem for a manifest path outside the manifest's folder. Ids are unique; a manifest whose ids
collide is an error (give an ``id`` column).
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import ImageError, PromptError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jpe", ".jfif")
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")
TASKS = ("embed", "everything", "boxes")


class InputError(ImageError):
    """The batch input (folder, pattern or manifest) is missing, empty or malformed."""


@dataclass(frozen=True)
class BatchItem:
    """One image to process.

    Attributes:
        id: unique name of its result inside the output folder (``/`` separated, no suffix).
        image: path of the image file.
        boxes: for the ``boxes`` task, ``[{"box": [x0, y0, x1, y1], ...extra keys}]``; None otherwise.
        boxes_file: the JSON file to read the boxes from (in the worker), when the manifest names one.
    """

    id: str
    image: str
    boxes: list[dict[str, Any]] | None = None
    boxes_file: str | None = None

    def to_row(self) -> dict[str, Any]:
        """A JSON-ready dict (the form items travel in to Ray workers); :meth:`from_row` reverses it."""
        return {"id": self.id, "image": self.image, "boxes": json.dumps(self.boxes) if self.boxes is not None else "",
                "boxes_file": self.boxes_file or ""}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "BatchItem":
        boxes = str(row.get("boxes") or "")
        return cls(id=str(row["id"]), image=str(row["image"]), boxes=json.loads(boxes) if boxes else None,
                   boxes_file=str(row.get("boxes_file") or "") or None)


def is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def read_inputs(source: str | os.PathLike, task: str) -> list[BatchItem]:
    """The items of ``source`` (folder, glob or manifest) for ``task`` (``embed``, ``everything``, ``boxes``).

    Raises:
        InputError: missing or empty input, a malformed manifest, duplicate ids, or no boxes for ``boxes``.
    """
    if task not in TASKS:
        raise InputError(f"unknown batch task {task!r}: choose one of {', '.join(TASKS)}")
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        items = _from_paths(_walk_images(path), path)
    elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        items = read_manifest(path)
    elif is_glob(text):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        files = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        items = _from_paths(files, _glob_root(text))
    elif path.is_file():
        raise InputError(f"{path}: give a folder, a glob pattern or a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    else:
        raise InputError(f"{path} does not exist")
    if not items:
        raise InputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) found in {text}")
    if task == "boxes":
        missing = [it.id for it in items if it.boxes is None and it.boxes_file is None]
        if missing:
            raise InputError(f"the boxes task needs a manifest with a 'boxes' or 'boxes_file' column; "
                             f"{len(missing)} image(s) have neither (first: {missing[0]})")
    return items


def _walk_images(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, f) for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def _glob_root(pattern: str) -> Path:
    """The longest leading folder of ``pattern`` without wildcards."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if is_glob(p))]]
    return Path(*fixed) if fixed else Path(".")


def _from_paths(files: Iterable[Path], root: Path) -> list[BatchItem]:
    files = list(files)
    rel = [p.relative_to(root).as_posix() for p in files]
    stems = [r.rsplit(".", 1)[0] if "." in Path(r).name else r for r in rel]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [BatchItem(id=s if counts[s] == 1 else r, image=os.fspath(p)) for p, r, s in zip(files, rel, stems)]


# ------------------------------------------------------------------------------------------ manifests


def read_manifest(path: Path) -> list[BatchItem]:
    """Items of a CSV or JSONL manifest (see the module docstring)."""
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        where = f"{path}:{line}"
        image = row.get("image")
        if not isinstance(image, str) or not image.strip():
            raise InputError(f"{where}: no 'image' path")
        image_path = Path(image.strip())
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        item_id = row.get("id")
        if item_id in (None, ""):
            item_id = _default_id(image_path, path.parent)
        item_id = _check_id(str(item_id), where)
        if item_id in seen:
            raise InputError(f"{where}: id {item_id!r} already used on line {seen[item_id]}; give an 'id' column")
        seen[item_id] = line
        boxes = row.get("boxes")
        boxes_file = row.get("boxes_file")
        parsed = None
        if boxes not in (None, ""):
            if isinstance(boxes, str):
                try:
                    boxes = json.loads(boxes)
                except ValueError as exc:
                    raise InputError(f"{where}: 'boxes' is not JSON: {exc}") from None
            parsed = parse_boxes(boxes, where)
        file_name = None
        if boxes_file not in (None, ""):
            bf = Path(str(boxes_file).strip())
            file_name = os.fspath(bf if bf.is_absolute() else path.parent / bf)
        items.append(BatchItem(id=item_id, image=os.fspath(image_path), boxes=parsed, boxes_file=file_name))
    return items


def _csv_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "image" not in [f.strip() for f in reader.fieldnames]:
                raise InputError(f"{path}: the CSV header must name an 'image' column, got {reader.fieldnames}")
            return [(reader.line_num, {(k or "").strip(): (v or "").strip() for k, v in row.items()})
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the CSV manifest: {exc}") from None


def _jsonl_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the JSONL manifest: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}:{number}: not a JSON object: {exc}") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number}: each line must be a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    return rows


def _default_id(image: Path, root: Path) -> str:
    try:
        rel = image.relative_to(root).as_posix()
    except ValueError:
        return image.stem
    return rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel


def _check_id(item_id: str, where: str) -> str:
    parts = item_id.strip().strip("/").split("/")
    if not item_id.strip() or any(p in ("", ".", "..") or p.startswith(".") for p in parts) or "\\" in item_id:
        raise InputError(f"{where}: id {item_id!r} is not a usable relative name")
    return "/".join(parts)


def parse_boxes(value: Any, where: str) -> list[dict[str, Any]]:
    """Validate a list of boxes (``[x0, y0, x1, y1]`` or ``{"box": [...], ...}``) -> ``[{"box": [...], ...}]``.

    Raises:
        PromptError: not a list, or a box that is not 4 finite numbers with ``x0 <= x1`` and ``y0 <= y1``.
    """
    if isinstance(value, dict) and "boxes" in value:
        value = value["boxes"]
    if not isinstance(value, list):
        raise PromptError(f"{where}: boxes must be a list, got {type(value).__name__}")
    boxes = []
    for i, entry in enumerate(value):
        extra = {}
        if isinstance(entry, dict):
            extra = {k: v for k, v in entry.items() if k != "box"}
            entry = entry.get("box")
        ok = isinstance(entry, (list, tuple)) and len(entry) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in entry)
        if not ok or entry[0] > entry[2] or entry[1] > entry[3]:
            raise PromptError(f"{where}: box {i} must be [x0, y0, x1, y1] numbers with x0 <= x1, y0 <= y1, "
                              f"got {entry!r}")
        boxes.append({"box": [float(v) for v in entry], **extra})
    return boxes


def read_boxes_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The boxes in a detector's JSON file (see :func:`parse_boxes`).

    Raises:
        PromptError: the file is missing, not JSON, or holds malformed boxes.
    """
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PromptError(f"{path}: cannot read the boxes file: {exc}") from None
    return parse_boxes(value, os.fspath(path))


__all__ = ["BatchItem", "IMAGE_SUFFIXES", "InputError", "TASKS", "parse_boxes", "read_boxes_file", "read_inputs",
           "read_manifest"]
