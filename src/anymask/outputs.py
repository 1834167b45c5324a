"""Writing results: mask PNGs, RGBA cut-outs, overlays and JSON records.

Every writer encodes into memory first and then writes the file atomically
(:func:`anymask.fileio.atomic_write_bytes`), so a failure leaves either the old file or no file, never half a
new one. An output path that cannot be written (missing permissions, a parent that is a regular file, ...)
raises :class:`anymask.errors.OutputError`. Arguments of the wrong shape or dtype raise ``ValueError``.

Conventions: images are ``(H, W, 3) uint8`` RGB, masks ``(H, W) bool`` (a stack: ``(N, H, W)``), points
``(x, y)`` pixels (x = column, y = row), boxes XYXY pixels. In JSON, ``bbox`` is COCO XYWH and
``segmentation`` is COCO compressed RLE with ``counts`` as ``str``.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from .errors import OutputError
from .fileio import atomic_write_bytes, atomic_write_text
from .masks import encode_rle, mask_area, mask_to_box, mask_to_polygons

__all__ = [
    "PALETTE",
    "save_mask_png",
    "make_cutout",
    "save_cutout",
    "make_overlay",
    "save_overlay",
    "mask_record",
    "write_json",
]

#: Mask colours (RGB) of :func:`make_overlay`, used in order and repeated after the last one.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (30, 144, 255),  # dodger blue (SAM's demo colour)
    (255, 127, 14),  # orange
    (148, 103, 189),  # purple
    (23, 190, 207),  # cyan
    (227, 119, 194),  # pink
    (188, 189, 34),  # olive
    (140, 86, 75),  # brown
    (255, 215, 0),  # gold
    (0, 128, 128),  # teal
    (127, 127, 127),  # gray
)
#: Colours of foreground (label 1) and background (label 0) points, and of boxes.
POSITIVE_POINT_COLOR = (0, 200, 0)
NEGATIVE_POINT_COLOR = (230, 0, 0)
BOX_COLOR = (255, 255, 0)

_JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})


# --------------------------------------------------------------------------------------- validation


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 array, got {image.dtype} {tuple(image.shape)}")
    return image


def _check_mask(mask: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be an (H, W) array, got shape {tuple(mask.shape)}")
    if shape is not None and mask.shape != shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the image's {shape}")
    return mask if mask.dtype == np.bool_ else mask != 0


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ mask PNG


def save_mask_png(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Write ``mask`` as an 8-bit gray PNG: 255 inside the mask, 0 outside.

    Args:
        path: output file; PNG data is written whatever its suffix (use ``.png``).
        mask: ``(H, W)`` mask (bool; other dtypes: non-zero = inside).

    Returns:
        ``Path(path)``.

    Raises:
        OutputError: the file cannot be written.
    """
    m = _check_mask(mask)
    data = _encode(Image.fromarray(np.where(m, np.uint8(255), np.uint8(0)), mode="L"), "PNG")
    return atomic_write_bytes(path, data)


# ------------------------------------------------------------------------------------------- cut-out


def make_cutout(image: np.ndarray, mask: np.ndarray, crop: bool = True) -> np.ndarray:
    """Cut the masked object out of ``image`` as an RGBA array.

    Pixels inside the mask keep their colour with alpha 255; pixels outside are ``(0, 0, 0, 0)`` (fully
    transparent, colour cleared).

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        mask: ``(H, W)`` bool mask of the same height and width.
        crop: crop to the mask's tight box (inclusive pixel box, see :func:`anymask.masks.mask_to_box`).

    Returns:
        ``(h, w, 4) uint8`` RGBA: ``(H, W, 4)`` without crop, the tight box's size with crop. An empty mask with
        ``crop=True`` gives a ``(1, 1, 4)`` fully transparent image (an image file needs at least one pixel);
        without crop a fully transparent ``(H, W, 4)`` image.
    """
    image = _check_image(image)
    m = _check_mask(mask, image.shape[:2])
    if crop:
        if not m.any():
            return np.zeros((1, 1, 4), dtype=np.uint8)
        x0, y0, x1, y1 = mask_to_box(m)
        image = image[y0 : y1 + 1, x0 : x1 + 1]
        m = m[y0 : y1 + 1, x0 : x1 + 1]
    out = np.zeros(image.shape[:2] + (4,), dtype=np.uint8)
    out[m, :3] = image[m]
    out[m, 3] = 255
    return out


def save_cutout(path: str | os.PathLike, image: np.ndarray, mask: np.ndarray, crop: bool = True) -> Path:
    """Write :func:`make_cutout` ``(image, mask, crop)`` as an RGBA PNG (whatever the suffix; use ``.png``).

    Returns:
        ``Path(path)``.

    Raises:
        OutputError: the file cannot be written.
    """
    rgba = make_cutout(image, mask, crop=crop)
    return atomic_write_bytes(path, _encode(Image.fromarray(rgba, mode="RGBA"), "PNG"))


# ------------------------------------------------------------------------------------------- overlay


def make_overlay(
    image: np.ndarray,
    masks: np.ndarray,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Draw masks, points and boxes over a copy of ``image``.

    Mask ``i`` is tinted with ``PALETTE[i % len(PALETTE)]`` (``(1 - alpha) * pixel + alpha * colour``; later
    masks are drawn over earlier ones) and its outline (outer boundary and holes) drawn in the same colour.
    Points are filled discs with a white rim: green for foreground (label 1), red for background (label 0).
    Boxes are outlined in yellow. Line widths and point sizes grow with the image size.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        masks: ``(N, H, W)`` bool masks (``N`` may be 0) or one ``(H, W)`` mask.
        points: ``(K, 2)`` float ``(x, y)`` pixels, or None.
        labels: ``(K,)`` labels, 1 = foreground, 0 = background; None = all foreground. Points with any
            other label (e.g. SAM's padding label -1) are not drawn.
        boxes: ``(M, 4)`` or ``(4,)`` XYXY pixels, or None.
        alpha: mask tint opacity in ``[0, 1]``.

    Returns:
        New ``(H, W, 3) uint8`` RGB array.
    """
    image = _check_image(image)
    height, width = image.shape[:2]
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[1:] != (height, width):
        raise ValueError(f"masks must have shape (N, {height}, {width}), got {tuple(masks.shape)}")
    if masks.dtype != np.bool_:
        masks = masks != 0
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")

    thickness = max(1, round(min(height, width) / 300))
    radius = max(3, round(min(height, width) / 80))
    out = image.astype(np.float32)
    for i, mask in enumerate(masks):
        colour = np.array(PALETTE[i % len(PALETTE)], dtype=np.float32)
        out[mask] = (1.0 - alpha) * out[mask] + alpha * colour
    out = np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    for i, mask in enumerate(masks):
        if not mask.any():
            continue
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, PALETTE[i % len(PALETTE)], thickness, lineType=cv2.LINE_AA)

    if boxes is not None:
        box_array = np.asarray(boxes, dtype=np.float64)
        if box_array.ndim == 1:
            box_array = box_array[None]
        if box_array.ndim != 2 or box_array.shape[1] != 4 or not np.all(np.isfinite(box_array)):
            raise ValueError(f"boxes must be finite with shape (M, 4), got {tuple(box_array.shape)}")
        for x0, y0, x1, y1 in np.rint(box_array).astype(np.int64):
            cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), BOX_COLOR, thickness + 1, cv2.LINE_AA)

    if points is not None:
        point_array = np.asarray(points, dtype=np.float64)
        if point_array.size == 0:
            point_array = point_array.reshape(0, 2)
        elif point_array.shape == (2,):
            point_array = point_array[None]
        if point_array.ndim != 2 or point_array.shape[1] != 2 or not np.all(np.isfinite(point_array)):
            raise ValueError(f"points must be finite with shape (K, 2), got {tuple(np.shape(points))}")
        if labels is None:
            label_array = np.ones(len(point_array), dtype=np.int64)
        else:
            label_array = np.asarray(labels).reshape(-1)
            if label_array.shape[0] != point_array.shape[0]:
                raise ValueError(f"{point_array.shape[0]} points but {label_array.shape[0]} labels")
        for (x, y), label in zip(np.rint(point_array).astype(np.int64), label_array):
            if int(label) not in (0, 1):
                continue  # e.g. SAM's padding label -1: not a point to show
            colour = POSITIVE_POINT_COLOR if int(label) == 1 else NEGATIVE_POINT_COLOR
            centre = (int(x), int(y))
            cv2.circle(out, centre, radius + max(1, thickness), (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, centre, radius, colour, -1, cv2.LINE_AA)
    return out


def save_overlay(
    path: str | os.PathLike,
    image: np.ndarray,
    masks: np.ndarray,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    alpha: float = 0.5,
) -> Path:
    """Write :func:`make_overlay` ``(image, masks, points, labels, boxes, alpha)`` to ``path``.

    The format follows the suffix (case-insensitive): ``.png`` -> PNG; ``.jpg``, ``.jpeg``, ``.jpe``, ``.jfif``
    -> JPEG (quality 95).

    Returns:
        ``Path(path)``.

    Raises:
        OutputError: the suffix is not one of those, or the file cannot be written.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        fmt, params = "PNG", {}
    elif suffix in _JPEG_SUFFIXES:
        fmt, params = "JPEG", {"quality": 95}
    else:
        raise OutputError(f"cannot write an overlay as {suffix or 'a file without suffix'!r}: use .png or .jpg")
    rgb = make_overlay(image, masks, points=points, labels=labels, boxes=boxes, alpha=alpha)
    return atomic_write_bytes(path, _encode(Image.fromarray(rgb, mode="RGB"), fmt, **params))


# ---------------------------------------------------------------------------------------------- JSON


def mask_record(
    mask: np.ndarray, score: float, *, index: int = 0, include_polygons: bool = True
) -> dict[str, Any]:
    """Describe one mask as a JSON-ready dict of plain Python types.

    Keys:
        ``index`` (int), ``score`` (float), ``area`` (int, pixel count),
        ``bbox``: COCO XYWH ``[x, y, w, h]`` ints, the pixel extent: ``w = x1 - x0 + 1``,
        ``h = y1 - y0 + 1`` (the same as ``pycocotools.mask.toBbox`` of the RLE); ``[0, 0, 0, 0]`` if empty,
        ``bbox_xyxy``: ``[x0, y0, x1, y1]`` inclusive pixel indices (:func:`anymask.masks.mask_to_box`),
        ``segmentation``: COCO compressed RLE ``{"size": [H, W], "counts": str}``,
        ``polygons``: list of flat ``[x0, y0, x1, y1, ...]`` outer contours (holes not represented; see
        :func:`anymask.masks.mask_to_polygons`); the key is left out when ``include_polygons`` is False.

    Args:
        mask: ``(H, W)`` bool mask.
        score: finite score (e.g. predicted IoU).
        index: position of the mask in its result.
        include_polygons: add the ``polygons`` key.
    """
    m = _check_mask(mask)
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"score must be finite, got {score}")
    area = mask_area(m)
    x0, y0, x1, y1 = mask_to_box(m)
    bbox = [x0, y0, x1 - x0 + 1, y1 - y0 + 1] if area else [0, 0, 0, 0]
    record: dict[str, Any] = {
        "index": int(index),
        "score": score,
        "area": area,
        "bbox": bbox,
        "bbox_xyxy": [x0, y0, x1, y1],
        "segmentation": encode_rle(m),
    }
    if include_polygons:
        record["polygons"] = mask_to_polygons(m)
    return record


def _json_default(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as UTF-8 JSON (indent 2, non-ASCII kept, trailing newline), atomically.

    numpy scalars and arrays and ``os.PathLike`` values are converted to plain types. The text is built
    before the file is opened, so an object that cannot be serialised (``TypeError``, or ``ValueError`` for
    NaN/infinity, which JSON does not allow) leaves no file.

    Returns:
        ``Path(path)``.

    Raises:
        OutputError: the file cannot be written.
    """
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
    return atomic_write_text(path, text)
