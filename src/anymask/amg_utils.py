"""Geometry helpers of the automatic mask generator: point grids, crop boxes, box NMS, RLE forms.

Conventions: points are ``(x, y)`` pixels (x = column); boxes are XYXY. Boxes computed from masks hold
**inclusive** pixel indices, as in :func:`anymask.masks.masks_to_boxes` and SAM's ``batched_mask_to_box``;
box areas and IoUs are computed on the coordinates as given (``(x1 - x0) * (y1 - y0)``), as SAM's NMS
(torchvision's) does, so that the same masks survive.

Everything here mirrors ``segment_anything.utils.amg`` in meaning; NMS is vectorised in torch and needs no
torchvision. The generator's fast paths live here too: :func:`upscale_window` (a low-res mask upsampled only
where it can be on), :func:`rle_from_window` and :func:`release_free_memory`.
"""

from __future__ import annotations

import ctypes
import functools
import math
import warnings
from itertools import product
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils

__all__ = [
    "build_point_grid",
    "build_all_layer_point_grids",
    "coarse_to_fine_order",
    "rle_from_window",
    "release_free_memory",
    "upscale_window",
    "generate_crop_boxes",
    "box_nms",
    "is_box_near_crop_edge",
    "masks_to_boxes_torch",
    "encode_rles",
    "rle_to_uncompressed",
    "decode_rle_bytes",
]


# ---------------------------------------------------------------------------------------------- grids


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``(n * n, 2)`` points ``(x, y)`` evenly spaced in ``[0, 1]``, cell centres, row by row (SAM's grid)."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One normalised grid per crop layer; layer ``i`` has ``int(n_per_side / scale_per_layer**i)`` a side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def coarse_to_fine_order(n_points: int) -> np.ndarray:
    """An order of ``n_points`` grid points that visits a coarse sub-grid first, then finer ones.

    For a square grid (``n_points = n * n``, row by row) point ``(row, col)`` gets the level
    ``min(trailing zeros of row, trailing zeros of col)`` (capped); points of higher levels come first, so the
    first batches sample the whole image sparsely. Other counts keep their order. Used by the optional
    grid-point skipping, where early masks decide which later points are needed.
    """
    n = int(round(math.sqrt(n_points)))
    if n * n != n_points or n < 2:
        return np.arange(n_points)

    def level(i: np.ndarray) -> np.ndarray:
        out = np.zeros_like(i)
        for k in range(1, 6):
            out = np.where(i % (2**k) == 0, k, out)
        return out

    rows, cols = np.divmod(np.arange(n_points), n)
    key = np.minimum(level(rows), level(cols))
    return np.argsort(-key, kind="stable")


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """SAM's crop boxes: the whole image, then ``(2**i)**2`` overlapping crops in layer ``i``.

    Args:
        im_size: ``(H, W)``.
        n_layers: number of crop layers after the whole image.
        overlap_ratio: overlap of neighbouring crops as a share of the short side (scaled down per layer).

    Returns:
        ``(boxes, layers)``: XYXY integer boxes (x1, y1 exclusive) and the layer index of each.
    """
    boxes, layers = [[0, 0, im_size[1], im_size[0]]], [0]
    im_h, im_w = im_size
    short_side = min(im_h, im_w)

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for layer in range(n_layers):
        n_crops = 2 ** (layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops))
        crop_w, crop_h = crop_len(im_w, n_crops, overlap), crop_len(im_h, n_crops, overlap)
        xs = [int((crop_w - overlap) * i) for i in range(n_crops)]
        ys = [int((crop_h - overlap) * i) for i in range(n_crops)]
        for x0, y0 in product(xs, ys):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(layer + 1)
    return boxes, layers


# ------------------------------------------------------------------------------------------------ NMS


def box_nms(boxes: Any, scores: Any, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, one kept box at a time against the boxes after it.

    A box is dropped when its IoU with a kept, higher-scored box is *greater* than ``iou_threshold``. IoU uses
    the areas ``(x1 - x0) * (y1 - y0)`` (torchvision's rule), in float64. Memory is ``O(N)``: an ``N x N`` IoU
    matrix (and its float64 temporaries: about 250 MB at 2000 boxes) would grow with the square of the number of
    prompts; the time is ``O(K N)`` for ``K`` kept boxes, a few ms for thousands of candidates.

    Args:
        boxes: ``(N, 4)`` XYXY.
        scores: ``(N,)``; ties keep the earlier box first.

    Returns:
        ``(K,) int64`` indices of the kept boxes, by decreasing score.
    """
    scores_np = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores_np) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores_np, kind="stable")
    ordered = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[order]
    area = (ordered[:, 2] - ordered[:, 0]) * (ordered[:, 3] - ordered[:, 1])
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = i + 1 + np.flatnonzero(~suppressed[i + 1 :])  # later boxes still standing
        if not len(rest):
            break
        others = ordered[rest]
        lt = np.maximum(ordered[i, :2], others[:, :2])
        rb = np.minimum(ordered[i, 2:], others[:, 2:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[:, 0] * wh[:, 1]
        union = area[i] + area[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        suppressed[rest[iou > iou_threshold]] = True
    return order[np.asarray(keep, dtype=np.int64)]


def is_box_near_crop_edge(boxes: np.ndarray, crop_box: list[int], orig_box: list[int], atol: float = 20.0) -> np.ndarray:
    """``(N,) bool``: boxes (in crop coordinates) within ``atol`` px of a crop edge that is not an image edge."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    crop = np.asarray(crop_box, dtype=np.float64)
    uncropped = boxes + np.array([crop[0], crop[1], crop[0], crop[1]])
    near_crop = np.abs(uncropped - crop[None]) <= atol
    near_image = np.abs(uncropped - np.asarray(orig_box, dtype=np.float64)[None]) <= atol
    return np.any(near_crop & ~near_image, axis=1)


# ----------------------------------------------------------------------------------------- masks, RLE


def masks_to_boxes_torch(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY inclusive boxes ``(N, 4) int64`` of bool masks ``(N, H, W)``; zeros for empty masks."""
    n, height, width = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.int64)
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (N, H), (N, W)
    nonempty = rows.any(dim=1)
    ar_h = torch.arange(height, device=masks.device)
    ar_w = torch.arange(width, device=masks.device)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1)
    y0 = torch.where(rows, ar_h, height).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1)
    x0 = torch.where(cols, ar_w, width).amin(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.int64)
    boxes[~nonempty] = 0
    return boxes


def encode_rles(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO compressed RLEs (``counts`` as ``bytes``, pycocotools' own form) of ``(N, H, W)`` bool masks."""
    if len(masks) == 0:
        return []
    fortran = np.asfortranarray(np.moveaxis(np.asarray(masks, dtype=np.uint8), 0, -1))
    return mask_utils.encode(fortran)


def rle_from_window(window: np.ndarray, top: int, left: int, height: int, width: int) -> dict[str, Any]:
    """COCO compressed RLE (as :func:`encode_rles` gives) of a ``(height, width)`` mask that is empty outside the
    bool ``window`` placed with its top-left pixel at row ``top``, column ``left``.

    The runs are read off the window alone (column-major, background first), so a small mask in a large image
    costs as little as its window.
    """
    window = np.asarray(window, dtype=bool)
    wh, ww = window.shape
    if not (0 <= top and top + wh <= height and 0 <= left and left + ww <= width):
        raise ValueError(f"a {wh}x{ww} window at ({top}, {left}) does not fit a {height}x{width} mask")
    columns = np.zeros((ww, wh + 2), dtype=np.int8)
    columns[:, 1:-1] = window.T
    change = np.flatnonzero(np.diff(columns, axis=1).ravel())  # a run starts or ends (column, row) of the window
    col, row = np.divmod(change, wh + 1)
    bounds = (left + col) * height + top + row
    joined = np.flatnonzero(bounds[1:] == bounds[:-1])  # a run ending at a column's foot goes on at the next's head
    bounds = np.delete(bounds, np.concatenate([joined, joined + 1]))
    counts = np.diff(np.concatenate([[0], bounds, [height * width]])).astype(np.int64)
    if len(counts) > 1 and counts[-1] == 0:  # the mask reaches the last pixel: no closing background run
        counts = counts[:-1]
    return mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)


def decode_rle_bytes(rle: dict[str, Any]) -> np.ndarray:
    """``(H, W) bool`` mask of a pycocotools RLE (``counts`` as bytes), as :func:`encode_rles` gives."""
    with warnings.catch_warnings():
        # pycocotools' Cython decoder trips a numpy 2 DeprecationWarning (__array__ without `copy`); harmless
        warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def rle_to_uncompressed(rle: dict[str, Any]) -> dict[str, Any]:
    """SAM's ``uncompressed_rle`` form ``{"size": [H, W], "counts": [runs...]}`` (column-major, background first)."""
    height, width = (int(v) for v in rle["size"])
    flat = decode_rle_bytes(rle).reshape(-1, order="F").astype(np.int8)
    if flat.size == 0:
        return {"size": [height, width], "counts": []}
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [height, width], "counts": counts}


# ------------------------------------------------------------------------------- upsampling, memory


def upscale_window(logits: np.ndarray, factor: int, floor: float, height: int, width: int
                    ) -> tuple[np.ndarray, int, int] | None:
    """The bilinear ``factor``x upsampling of ``(lh, lw)`` logits, cropped to ``(height, width)``, computed only where
    it can exceed ``floor``: ``(logits, y0, x0)`` of that window, or None when no logit exceeds ``floor``.

    A bilinear value is a convex combination of its (up to) 2 x 2 source logits, so outside the low-res cells above
    ``floor`` (plus a one-cell margin) every upsampled value is <= ``floor``. The window is resized with OpenCV
    (half-pixel centres, edge replication, as ``F.interpolate(..., align_corners=False)``); an integer factor maps
    window pixels onto the same source positions as the whole map, and the margin cells give the window's inner
    pixels their true neighbours, so the values that matter equal the full resize's (float rounding aside).
    """
    above = logits > floor
    rows, cols = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
    if not len(rows):
        return None
    r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, logits.shape[0])
    c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, logits.shape[1])
    y0, x0 = factor * r0, factor * c0
    if y0 >= height or x0 >= width:
        return None
    window = np.ascontiguousarray(logits[r0:r1, c0:c1], dtype=np.float32)
    up = cv2.resize(window, (factor * (c1 - c0), factor * (r1 - r0)), interpolation=cv2.INTER_LINEAR)
    return up[: height - y0, : width - x0], y0, x0


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    Freed memory otherwise stays in the process: after an image the heap keeps the encoder's and the decoder's
    freed activations. Measured on the three 1024 px benchmark photos (8 x 8 points, one thread): resident memory
    between images 1209 -> 903 MB; the peak, set by the encoder runs, only 1273 -> 1260 MB. A trim takes
    milliseconds.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
