"""Checking prompts at the API edge: points, labels, boxes and mask inputs.

:func:`check_prompts` turns what a caller passes (lists, tuples, numpy arrays) into validated numpy arrays
with a leading batch dimension, or raises :class:`~anymask.errors.PromptError` saying what is wrong. It
needs only the image size, so a command line can check prompts before it loads a model.

Conventions (pixels of the original image): points ``(x, y)``, x = column, y = row, within
``0 <= x <= W`` and ``0 <= y <= H``; labels 1 = foreground, 0 = background; boxes XYXY with x0 <= x1 and
y0 <= y1, inside the image; mask inputs are ``(256, 256)`` low-resolution logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import PromptError

LOW_RES = 256  # side of the low-resolution mask logits


@dataclass
class Prompts:
    """Validated prompts, batch-first; every present array has the same batch size B.

    Attributes:
        points: ``(B, N, 2)`` float64 (x, y) pixels, or None.
        labels: ``(B, N)`` int64 (1 foreground, 0 background), or None.
        boxes: ``(B, 4)`` float64 XYXY pixels, or None.
        mask_input: ``(B, 1, 256, 256)`` float32 logits, or None.
        batched: whether the caller asked for a batch (a 2-D box, 3-D points or 4-D mask input); results
            then keep the batch dimension.
    """

    points: np.ndarray | None
    labels: np.ndarray | None
    boxes: np.ndarray | None
    mask_input: np.ndarray | None
    batched: bool

    @property
    def batch_size(self) -> int:
        return next(len(a) for a in (self.points, self.boxes, self.mask_input) if a is not None)


def check_prompts(
    points: Any = None,
    labels: Any = None,
    box: Any = None,
    mask_input: Any = None,
    *,
    image_size: tuple[int, int],
    low_res_size: tuple[int, int] = (LOW_RES, LOW_RES),
) -> Prompts:
    """Validate prompts for an image of ``image_size = (H, W)`` pixels.

    Args:
        points: ``(N, 2)`` or ``(B, N, 2)``; ``(N, 2)`` points given with a batch are shared by every prompt.
        labels: ``(N,)`` or ``(B, N)`` of 0/1; all foreground when omitted.
        box: ``(4,)`` or ``(B, 4)`` XYXY.
        mask_input: ``(256, 256)``, ``(1, 256, 256)`` or ``(B, 1, 256, 256)``.
        image_size: ``(H, W)`` of the image.
        low_res_size: ``(lh, lw)`` the mask input must have instead of ``(256, 256)`` (an image encoded without
            padding to the square input, see :attr:`anymask.Predictor.low_res_size`).

    Raises:
        PromptError: no prompt; wrong shapes; NaN or infinite values; labels other than 0/1; points and
            labels of different lengths; boxes with x1 < x0 or y1 < y0; coordinates outside the image;
            batch sizes that disagree.
    """
    height, width = image_size
    if points is None and box is None and mask_input is None:
        raise PromptError("no prompt given: pass points (with labels), a box, or a mask_input")
    if labels is not None and points is None:
        raise PromptError("labels given without points")
    batched = False

    boxes = None
    if box is not None:
        boxes = _as_array(box, "box", np.float64)
        batched = boxes.ndim == 2
        boxes = boxes.reshape(1, -1) if boxes.ndim == 1 else boxes
        if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0:
            raise PromptError(f"box must have shape (4,) or (B, 4), got {np.shape(box)}")
        if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
            raise PromptError("boxes must be XYXY with x0 <= x1 and y0 <= y1")
        _check_inside(boxes.reshape(-1, 2), width, height, "box corner")

    coords = point_labels = None
    if points is not None:
        coords = _as_array(points, "points", np.float64)
        batched = batched or coords.ndim == 3
        coords = coords[None] if coords.ndim == 2 else coords
        if coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[1] == 0:
            raise PromptError(f"points must have shape (N, 2) or (B, N, 2), got {np.shape(points)}")
        _check_inside(coords.reshape(-1, 2), width, height, "point")
        if labels is None:
            point_labels = np.ones(coords.shape[:2], dtype=np.int64)
        else:
            point_labels = _as_array(labels, "labels", np.float64)
            if point_labels.ndim == 1:
                point_labels = np.broadcast_to(point_labels, (len(coords), len(point_labels)))
            if point_labels.shape != coords.shape[:2]:
                raise PromptError(f"points and labels do not match: points of shape {np.shape(points)}, "
                                  f"labels of shape {np.shape(labels)}")
            if not np.all(np.isin(point_labels, (0, 1))):
                raise PromptError("labels must be 1 (foreground) or 0 (background)")
            point_labels = point_labels.astype(np.int64)

    masks_in = None
    if mask_input is not None:
        masks_in = _as_array(mask_input, "mask_input", np.float32)
        batched = batched or masks_in.ndim == 4
        while masks_in.ndim < 4:
            masks_in = masks_in[None]
        lh, lw = low_res_size
        if masks_in.ndim != 4 or masks_in.shape[1:] != (1, lh, lw):
            raise PromptError(f"mask_input must be low-res logits of shape ({lh}, {lw}), "
                              f"(1, {lh}, {lw}) or (B, 1, {lh}, {lw}), got {np.shape(mask_input)}")

    sizes = {len(a) for a in (boxes, coords, masks_in) if a is not None}
    batch = max(sizes)
    if sizes - {1, batch}:
        raise PromptError(f"prompt batch sizes differ: {sorted(sizes)}")

    def expand(a: np.ndarray | None) -> np.ndarray | None:
        return a if a is None or len(a) == batch else np.repeat(a, batch, axis=0)

    return Prompts(expand(coords), expand(point_labels), expand(boxes), expand(masks_in), batched)


def _as_array(value: Any, name: str, dtype: type) -> np.ndarray:
    try:
        array = np.array(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{name} must be numeric, in an array of regular shape: {exc}") from None
    if not np.all(np.isfinite(array)):
        raise PromptError(f"{name} contains NaN or infinite values")
    return array


def _check_inside(xy: np.ndarray, width: int, height: int, name: str) -> None:
    outside = (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)
    if np.any(outside):
        x, y = xy[np.argmax(outside)]
        raise PromptError(f"{name} ({x:g}, {y:g}) lies outside the {width}x{height} image")
