"""Mask math: COCO RLE, areas, boxes, polygons, IoU, stability score, small-region clean-up.

Conventions (see ``docs/architecture.md``):

* A mask is a numpy ``(H, W) bool`` array indexed ``mask[y, x]`` (row, column); a stack of masks is
  ``(..., H, W)``.
* Boxes are XYXY ``(x0, y0, x1, y1)`` with ``x`` the column and ``y`` the row. Boxes computed *from masks*
  (:func:`mask_to_box`, :func:`masks_to_boxes`) hold **inclusive** pixel indices: the mask's pixels lie in
  columns ``x0..x1`` and rows ``y0..y1``, both ends included, so a single-pixel mask at ``(x, y)`` has the box
  ``(x, y, x, y)``. This is the same as SAM's ``batched_mask_to_box``. An empty mask has the box ``(0, 0, 0, 0)``.
* COCO RLE is the *compressed* form, ``{"size": [H, W], "counts": str}``, as written by ``pycocotools``.

Functions take masks of any dtype where noted (non-zero = inside) but return ``bool`` masks. Malformed
arguments (wrong number of dimensions, mismatched shapes, unknown modes) raise ``ValueError``.

Only :func:`stability_score` uses torch; it is imported when that function is called.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal, Mapping

import cv2
import numpy as np
from pycocotools import mask as mask_utils

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "encode_rle",
    "decode_rle",
    "mask_area",
    "mask_to_box",
    "masks_to_boxes",
    "box_xyxy_to_xywh",
    "mask_to_polygons",
    "iou",
    "stability_score",
    "remove_small_regions",
]


def _as_mask2d(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """``mask`` as a ``(H, W) bool`` array (non-zero = inside); ``ValueError`` if it is not 2-D."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {tuple(mask.shape)}")
    return mask if mask.dtype == np.bool_ else mask != 0


# ------------------------------------------------------------------------------------------------- RLE


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode one mask as COCO compressed RLE.

    Args:
        mask: ``(H, W)`` array; ``bool`` (any other dtype: non-zero = inside).

    Returns:
        ``{"size": [H, W], "counts": str}`` (plain Python types, JSON-serialisable); the same encoding as
        ``pycocotools.mask.encode`` with ``counts`` decoded from ASCII bytes to ``str``.
    """
    m = _as_mask2d(mask)
    rle = mask_utils.encode(np.asfortranarray(m, dtype=np.uint8))
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else str(counts),
    }


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE into a ``(H, W) bool`` mask.

    Args:
        rle: ``{"size": [H, W], "counts": ...}`` where ``counts`` is the compressed string (``str`` or
            ``bytes``) or an uncompressed list of run lengths (column-major, starting with a background run).

    Returns:
        C-contiguous ``(H, W) bool`` array.
    """
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a COCO RLE (needs 'size': [H, W] and 'counts'): {exc}") from exc
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if isinstance(counts, bytes):
        compressed = {"size": [height, width], "counts": counts}
    else:
        compressed = mask_utils.frPyObjects({"size": [height, width], "counts": list(counts)}, height, width)
    with warnings.catch_warnings():
        # pycocotools' Cython decoder trips a numpy 2 DeprecationWarning (__array__ without `copy`); harmless
        warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
        decoded = mask_utils.decode([compressed])[:, :, 0]
    return np.ascontiguousarray(decoded, dtype=bool)


def mask_area(mask: np.ndarray) -> int:
    """Number of pixels inside ``mask`` (any shape; non-zero = inside), as a Python ``int``."""
    return int(np.count_nonzero(mask))


# ----------------------------------------------------------------------------------------------- boxes


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box of one ``(H, W)`` mask as XYXY **inclusive** pixel indices.

    Returns:
        ``(x0, y0, x1, y1)``: the mask's pixels lie in columns ``x0..x1`` and rows ``y0..y1`` (both ends
        included). ``(0, 0, 0, 0)`` for an empty mask.
    """
    m = _as_mask2d(mask)
    box = masks_to_boxes(m[None])[0]
    return (int(box[0]), int(box[1]), int(box[2]), int(box[3]))


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of a stack of masks, vectorised.

    Args:
        masks: ``(..., H, W)`` array, usually ``(N, H, W) bool`` (non-zero = inside).

    Returns:
        ``(..., 4) int64`` array of XYXY inclusive pixel indices ``(x0, y0, x1, y1)``; all zeros for empty
        masks (and for masks with ``H == 0`` or ``W == 0``).
    """
    masks = np.asarray(masks)
    if masks.ndim < 2:
        raise ValueError(f"masks must have shape (..., H, W), got {tuple(masks.shape)}")
    if masks.dtype != np.bool_:
        masks = masks != 0
    height, width = masks.shape[-2:]
    lead = masks.shape[:-2]
    out = np.zeros(lead + (4,), dtype=np.int64)
    if height == 0 or width == 0:
        return out
    rows = masks.any(axis=-1)  # (..., H)
    cols = masks.any(axis=-2)  # (..., W)
    nonempty = rows.any(axis=-1)
    x0 = np.argmax(cols, axis=-1)
    x1 = width - 1 - np.argmax(cols[..., ::-1], axis=-1)
    y0 = np.argmax(rows, axis=-1)
    y1 = height - 1 - np.argmax(rows[..., ::-1], axis=-1)
    out[...] = np.stack([x0, y0, x1, y1], axis=-1)
    out[~nonempty] = 0
    return out


def box_xyxy_to_xywh(box: Any) -> np.ndarray:
    """Convert boxes from XYXY ``(x0, y0, x1, y1)`` to XYWH ``(x0, y0, x1 - x0, y1 - y0)``.

    A plain coordinate conversion (``w = x1 - x0``), the same as SAM's ``box_xyxy_to_xywh``. For the
    *pixel extent* of an inclusive mask box (the COCO ``bbox`` that ``pycocotools.mask.toBbox`` gives) add 1 to
    ``w`` and ``h`` of a non-empty box, as :func:`anymask.outputs.mask_record` does.

    Args:
        box: array-like of shape ``(4,)`` or ``(..., 4)``.

    Returns:
        ``np.ndarray`` of the same shape and dtype (float for non-array input of floats).
    """
    arr = np.array(box, copy=True)
    if arr.ndim == 0 or arr.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4), got {tuple(arr.shape)}")
    arr[..., 2] = arr[..., 2] - arr[..., 0]
    arr[..., 3] = arr[..., 3] - arr[..., 1]
    return arr


# -------------------------------------------------------------------------------------------- polygons


def mask_to_polygons(mask: np.ndarray, min_area: float = 0) -> list[list[float]]:
    """Outer contours of a mask as COCO polygons.

    Contours are found with ``cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE)``: one polygon per
    8-connected region, tracing its outer boundary. **Holes are not represented** (COCO polygons cannot
    subtract a hole: ``pycocotools`` rasterises a list of polygons as their union); use the RLE for exact
    shapes.

    Coordinates follow COCO's *continuous* convention, in which pixel ``(column, row)`` covers the square
    ``[column, column + 1] x [row, row + 1]``: each vertex is the centre ``(column + 0.5, row + 0.5)`` of a
    boundary pixel (the ``+ 0.5`` that detectron2 also applies to OpenCV's integer contours), so that
    ``pycocotools`` rasterises the polygon back onto the right pixels. Because vertices are pixel centres, a
    polygon's area is a little smaller than its region's pixel count (about half a pixel along the perimeter;
    a single row or column of pixels has zero area).

    Args:
        mask: ``(H, W)`` array (non-zero = inside).
        min_area: polygons whose area (shoelace formula, ``cv2.contourArea``) is below this are dropped.

    Returns:
        List of flat ``[x0, y0, x1, y1, ...]`` lists of Python floats, each with at least 3 points; empty
        for an empty mask.
    """
    m = _as_mask2d(mask)
    if m.size == 0 or not m.any():
        return []
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons: list[list[float]] = []
    for contour in contours:
        if len(contour) < 3:
            continue
        if cv2.contourArea(contour) < min_area:
            continue
        polygons.append([float(v) + 0.5 for v in contour.reshape(-1)])
    return polygons


# -------------------------------------------------------------------------------------- IoU, stability


def low_res_extent(shape: tuple[int, int], factor: int, input_size: tuple[int, int]) -> tuple[int, int]:
    """``(rows, cols)``: the leading low-res rows and columns of a ``shape = (lh, lw)`` map that a bilinear resize
    by ``factor`` (half-pixel centres) reads for its first ``input_size = (h, w)`` output pixels.

    Output row ``y`` samples the map at ``(y + 0.5) / factor - 0.5``, between rows ``floor`` of that and the one
    after, so the last output row ``h - 1`` reads up to row ``floor((h - 0.5) / factor - 0.5) + 1``.
    """
    return tuple(min(length, int(np.floor((size - 0.5) / factor - 0.5)) + 2)
                 for length, size in zip(shape, input_size))


def upscale_logits(logits: np.ndarray, factor: int, input_size: tuple[int, int],
                   original_size: tuple[int, int]) -> np.ndarray:
    """One low-resolution logit map ``(lh, lw)`` float32 -> ``(H, W)`` logits of the original image.

    The map covers the padded model input: it is resized ``factor`` times (``factor * lh x factor * lw``), cropped
    to the resized image ``input_size = (h, w)`` and resized to ``original_size = (H, W)``; bilinear with
    half-pixel centres and no antialiasing (OpenCV), as SAM's ``postprocess_masks`` does in torch (the logits
    agree to float rounding, ~1e-6).

    Only the low-res rows and columns that the crop reads are resized (:func:`low_res_extent`): the same values
    as resizing the whole map and cropping, bit for bit, without the padding's share of the work.
    """
    h, w = input_size
    height, width = original_size
    rows, cols = low_res_extent(logits.shape, factor, input_size)
    full = cv2.resize(np.ascontiguousarray(logits[:rows, :cols], dtype=np.float32), (factor * cols, factor * rows),
                      interpolation=cv2.INTER_LINEAR)
    full = np.ascontiguousarray(full[:h, :w])
    if (h, w) == (height, width):
        return full
    return cv2.resize(full, (width, height), interpolation=cv2.INTER_LINEAR)


def iou(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Intersection over union of masks, over the last two dimensions.

    Args:
        a, b: ``(..., H, W)`` masks (non-zero = inside) whose shapes broadcast together.

    Returns:
        A Python ``float`` for two single masks, else a ``float64`` array of the broadcast leading shape.
        Two empty masks have an IoU of 1.0.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"masks must have shape (..., H, W), got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a if a.dtype == np.bool_ else a != 0
    b = b if b.dtype == np.bool_ else b != 0
    try:
        inter = np.logical_and(a, b).sum(axis=(-2, -1), dtype=np.int64)
        union = np.logical_or(a, b).sum(axis=(-2, -1), dtype=np.int64)
    except ValueError as exc:
        raise ValueError(f"mask shapes do not match: {tuple(a.shape)} and {tuple(b.shape)}") from exc
    result = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(result) if result.ndim == 0 else result


def stability_score(logits: "torch.Tensor", threshold: float, offset: float) -> "torch.Tensor":
    """SAM's stability score of mask logits.

    The IoU between the mask thresholded at ``threshold + offset`` and the one thresholded at
    ``threshold - offset`` (``logits > t``), computed over the last two dimensions. Because the first mask is a
    subset of the second, that IoU is ``count(logits > threshold + offset) / count(logits > threshold - offset)``.

    Args:
        logits: ``(..., H, W)`` float tensor of mask logits (any device).
        threshold: the mask threshold (SAM: ``0.0``).
        offset: the threshold offset (SAM's automatic mask generator: ``1.0``).

    Returns:
        ``(...)`` float32 tensor on ``logits.device``. Where no pixel is above ``threshold - offset`` (the union
        is empty) the score is ``0.0`` (SAM's code gives NaN there; both fail any positive score cut-off).
    """
    import torch

    if logits.ndim < 2:
        raise ValueError(f"logits must have shape (..., H, W), got {tuple(logits.shape)}")
    flat = logits.flatten(-2)
    intersections = (flat > (threshold + offset)).sum(-1, dtype=torch.int64)
    unions = (flat > (threshold - offset)).sum(-1, dtype=torch.int64)
    scores = intersections.to(torch.float32) / unions.clamp(min=1).to(torch.float32)
    return torch.where(unions > 0, scores, torch.zeros_like(scores))


# ---------------------------------------------------------------------------------------- clean-up


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: Literal["holes", "islands"]
) -> tuple[np.ndarray, bool]:
    """Remove small holes or small islands from a mask (SAM's ``remove_small_regions``).

    Connected components are 8-connected (``cv2.connectedComponentsWithStats``).

    * ``mode="holes"``: every connected region of *background* with fewer than ``area_thresh`` pixels is filled
      (including small background regions that touch the image border, as in SAM).
    * ``mode="islands"``: every connected region of the mask with fewer than ``area_thresh`` pixels is removed;
      if all regions are that small, the largest one is kept.

    Args:
        mask: ``(H, W)`` mask (non-zero = inside).
        area_thresh: regions with an area (pixel count) strictly below this are removed.
        mode: ``"holes"`` or ``"islands"``.

    Returns:
        ``(new_mask, changed)``: a new ``(H, W) bool`` array, and whether any region was removed.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', not {mode!r}")
    m = _as_mask2d(mask)
    if m.size == 0:
        return m.copy(), False
    correct_holes = mode == "holes"
    working = (m ^ correct_holes).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the complement of `working`
    small = [i + 1 for i, size in enumerate(sizes) if size < area_thresh]
    if not small:
        return m.copy(), False
    fill_labels = [0] + small
    if not correct_holes:
        fill_labels = [i for i in range(n_labels) if i not in fill_labels]
        if not fill_labels:  # every island is small: keep the largest
            fill_labels = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill_labels), True
