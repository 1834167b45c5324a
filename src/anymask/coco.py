"""COCO JSON for mask results: one image entry, annotations with RLE segmentation, and a whole document.

Shared by ``anymask everything`` (one ``coco.json`` per run) and ``anymask batch`` (one JSON per image, merged
on request). Conventions: ``bbox`` is COCO XYWH in pixels, from the RLE (``pycocotools.mask.toBbox``);
``segmentation`` is COCO compressed RLE ``{"size": [H, W], "counts": str}``; ``score`` is the model's predicted
IoU.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from . import __version__

#: the one category of class-agnostic masks
OBJECT_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def rle_bbox(rle: Mapping[str, Any]) -> list[float]:
    """COCO XYWH box of a compressed RLE ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    counts = counts.encode("ascii") if isinstance(counts, str) else counts
    return [float(v) for v in mask_utils.toBbox({"size": list(rle["size"]), "counts": counts}).tolist()]


def image_entry(image_id: int, file_name: str, width: int, height: int) -> dict[str, Any]:
    """A COCO ``images`` entry."""
    return {"id": int(image_id), "file_name": file_name, "width": int(width), "height": int(height)}


def everything_annotation(mask: Mapping[str, Any], image_id: int, ann_id: int) -> dict[str, Any]:
    """A COCO annotation from one record of :meth:`AutomaticMaskGenerator.generate` (``output_mode="coco_rle"``).

    Keeps the generator's ``stability_score`` and ``point_coords`` (the click, ``[[x, y]]`` pixels) beside
    COCO's keys.
    """
    rle = mask["segmentation"]
    return {
        "id": int(ann_id), "image_id": int(image_id), "category_id": OBJECT_CATEGORY["id"],
        "segmentation": rle, "area": int(mask["area"]), "bbox": rle_bbox(rle), "iscrowd": 0,
        "score": float(mask["predicted_iou"]), "stability_score": float(mask["stability_score"]),
        "point_coords": mask["point_coords"],
    }


def coco_document(description: str, images: Iterable[dict[str, Any]], annotations: Iterable[dict[str, Any]],
                  categories: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A COCO results document: ``info``, ``images``, ``annotations``, ``categories``."""
    return {
        "info": {"description": description, "anymask_version": __version__},
        "images": list(images),
        "annotations": list(annotations),
        "categories": categories if categories is not None else [dict(OBJECT_CATEGORY)],
    }


__all__ = ["OBJECT_CATEGORY", "coco_document", "everything_annotation", "image_entry", "rle_bbox"]
