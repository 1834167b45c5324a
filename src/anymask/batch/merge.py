"""One COCO document from the per-image results of an ``everything`` or ``boxes`` run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..coco import coco_document, image_entry
from .inputs import BatchItem
from .tasks import result_path


def merge_coco(out_dir: Path, items: list[BatchItem], task: str) -> dict[str, Any]:
    """COCO results of every item whose result file exists, in ``items`` order.

    Image ids are 1, 2, ... in that order (``file_name`` is the result id plus the image's suffix, unique in
    the run); annotation ids are renumbered 1, 2, ... across the document.
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for item in items:
        try:
            result = json.loads(result_path(out_dir, task, item.id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        image_id = len(images) + 1
        info = result["image"]
        images.append(image_entry(image_id, item.id + Path(item.image).suffix, info["width"], info["height"]))
        for ann in result["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": image_id})
    return coco_document(f"anymask batch {task}", images, annotations)


__all__ = ["merge_coco"]
