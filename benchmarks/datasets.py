"""Where the evaluation data lives and how to read its index files (benchmarks and tests).

The data (``../shared/data`` beside the repository, research-use terms) is referenced by path and never
copied into the repo; ``ANYMASK_SHARED_DATA`` points elsewhere.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ANYMASK_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def read_index(folder: Path) -> list[dict]:
    """Rows of a data set's ``index.csv`` (GrabCut, Berkeley, DAVIS) with absolute paths and int fields."""
    rows = []
    with open(folder / "index.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            row["image"] = folder / row["image"]
            row["mask"] = folder / row["mask"]
            for key in ("width", "height", "fg_pixels", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"):
                row[key] = int(row[key])
            rows.append(row)
    return rows


def read_coco_instances(folder: Path, min_pixels: int = 96 * 96) -> list[dict]:
    """Non-crowd instances of ``coco128_instances`` with at least ``min_pixels`` mask pixels, as index rows.

    The rows have the keys of :func:`read_index` (absolute ``image``/``mask`` paths, ``width``/``height`` left
    out, inclusive ``bbox_*`` from COCO's XYWH box). ``96 * 96`` keeps COCO's "large" objects, the kind of
    instances COCO-MVal selects for interactive evaluation.
    """
    import json

    rows = []
    for record in json.loads((folder / "index.json").read_text()):
        if record["iscrowd"] or record["mask_pixels"] < min_pixels:
            continue
        x, y, w, h = record["bbox_xywh"]
        rows.append({"image": folder / "images" / record["image"], "mask": folder / "masks" / record["mask"],
                     "fg_pixels": record["mask_pixels"], "bbox_x0": int(x), "bbox_y0": int(y),
                     "bbox_x1": int(np.ceil(x + w)) - 1, "bbox_y1": int(np.ceil(y + h)) - 1})
    return rows


def load_mask(path: Path) -> np.ndarray:
    """A ground-truth mask PNG as ``(H, W)`` bool (values above 127 are foreground)."""
    from PIL import Image

    return np.asarray(Image.open(path).convert("L")) > 127


def box_of(row: dict) -> np.ndarray:
    """The index's inclusive tight box as an XYXY box in pixel-edge coordinates (x1, y1 exclusive)."""
    return np.array([row["bbox_x0"], row["bbox_y0"], row["bbox_x1"] + 1, row["bbox_y1"] + 1], dtype=np.float64)
