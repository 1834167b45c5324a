"""Carrying object masks from one video frame to the next with a SAM-family image model (no memory module).

The image models segment one frame at a time. To follow an object, each new frame is prompted with what the
previous frame gave: :class:`MaskPropagation` (the default) asks the decoder, for every object at once in
batched calls, for candidates prompted by the previous mask's box, moved by half the object's last
displacement (damped constant velocity) and enlarged by 5 %:

1. that box + the previous low-resolution logits as ``mask_input`` (one mask);
2. that box alone, three candidates (multimask);

and keeps the largest of the candidates whose predicted IoU is within ``prefer_larger`` (0.05) of the best:
the box covers the whole object, but the best-scored candidate is now and then a part of it (a horse without
its rider), and a track that takes a part once keeps shrinking. Loss is detected when the kept mask hardly overlaps
the previous mask or its area jumps; the track then keeps its last good mask as the reference (so later
frames are prompted from it, which recovers the object when it is visible again) and reports the candidate
only if the decoder is fairly confident, else an empty mask.

Measured on DAVIS 2016 (benchmarks/video_benchmark.py), a positive point at the previous mask's most interior
pixel (distance-transform maximum) made results worse (it lands on background when the object moves or
bends) and preferring the candidate most like the previous mask made the track stick to the old position, so
neither is used by default (``prior_weight`` = 0).

:class:`BoxPropagation` is the naive baseline: the box of the previous mask only.

All masks are ``(H, W)`` bool in frame pixels; logits ``(1, lh, lw)`` float32 in the resized and padded
model-input frame (``(1, 256, 256)``, or ``(1, 144, 256)`` for a 16:9 video encoded without padding to the
square: :attr:`anymask.Predictor.low_res_size`; the same for every frame of one video, since all frames have one
size).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .predictor import Predictor
from .prompts import LOW_RES


@dataclass
class Track:
    """What is known about one object after a frame.

    Attributes:
        mask: ``(H, W)`` bool, the last good mask (the reference that prompts the next frame).
        logits: ``(1, lh, lw)`` float32 low-res logits of that mask (``(1, 256, 256)`` for a padded frame).
        area: pixel area of ``mask``.
        lost: number of frames since the last good mask (0 = tracked on the last frame).
    """

    mask: np.ndarray
    logits: np.ndarray
    area: int
    lost: int = 0
    velocity: tuple[float, float] = (0.0, 0.0)


@dataclass
class StepResult:
    """One object's result on one frame: the mask reported, its score, and the updated track."""

    mask: np.ndarray
    score: float
    track: Track


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """XYXY box in pixel-edge coordinates (``x1``, ``y1`` exclusive) of a ``(H, W)`` mask; None if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if len(ys) == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=np.float64)


def mask_to_logits(mask: np.ndarray, input_size: tuple[int, int], strength: float = 8.0,
                   low_res_size: tuple[int, int] = (LOW_RES, LOW_RES)) -> np.ndarray:
    """A ``(H, W)`` mask as pseudo low-res logits ``(1, lh, lw)``: +strength inside, -strength outside.

    The mask is resized into the model-input frame (``input_size = (h, w)`` before padding), then to the
    low-res scale (the longer side to 256) in the top-left of a ``low_res_size`` array (default 256 x 256; pass
    :attr:`anymask.Predictor.low_res_size` for an image encoded without padding).
    """
    h, w = input_size
    scale = LOW_RES / max(h, w)
    lh, lw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    lh, lw = min(lh, low_res_size[0]), min(lw, low_res_size[1])
    small = cv2.resize(mask.astype(np.float32), (lw, lh), interpolation=cv2.INTER_AREA)
    logits = np.full((1, *low_res_size), -strength, dtype=np.float32)
    logits[0, :lh, :lw] = np.where(small >= 0.5, strength, -strength)
    return logits


def _low_res_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boolean stacks ``(..., h, w)`` (broadcast), 0 where both are empty."""
    inter = np.logical_and(a, b).sum(axis=(-2, -1))
    union = np.logical_or(a, b).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


class BoxPropagation:
    """Naive baseline: prompt each frame with the box of the previous mask only (single mask output)."""

    name = "box"

    def step(self, predictor: Predictor, tracks: list[Track]) -> list[StepResult]:
        """Decode every track's next mask on the predictor's current frame (one batched call)."""
        results: list[StepResult | None] = [None] * len(tracks)
        boxes, live = [], []
        for i, track in enumerate(tracks):
            box = mask_box(track.mask)
            if box is None:
                results[i] = StepResult(track.mask, 0.0, track)
            else:
                boxes.append(box)
                live.append(i)
        if live:
            low, scores = predictor.predict_low_res(box=np.stack(boxes), multimask=False)
            masks = predictor.masks_from_low_res(low[:, 0])
            for j, i in enumerate(live):
                track = Track(masks[j], low[j], int(masks[j].sum()))
                results[i] = StepResult(masks[j], float(scores[j, 0]), track)
        return results  # type: ignore[return-value]


@dataclass
class MaskPropagation:
    """The default propagation (see the module docstring). Parameters are generic, not set per video.

    Attributes:
        box_margin: the previous box grows by this fraction of its sides (at least 2 pixels) on each side.
        motion: the box is moved by this fraction of the object's last displacement (damped constant velocity;
            0 = no motion model).
        use_logits: add the candidate prompted with the previous low-res logits as ``mask_input``.
        multimask: add the three multimask candidates of the box alone.
        prior_weight: weight of the IoU with the previous mask added to the predicted IoU when choosing.
        prefer_larger: candidates whose predicted IoU is within this margin of the best compete, and the
            largest is kept: the box covers the whole object, and the best-scored candidate is now and then a
            part of it (0: the best-scored candidate). The same rule and margin as the interactive sessions'
            first click (:class:`anymask.session.SessionStrategy`).
        lost_iou: a kept mask overlapping the previous mask less than this is a loss.
        max_area_ratio: a kept mask whose area changes by more than this factor is a loss.
        confident_score: on a loss, the candidate is still reported when its predicted IoU is this high,
            else an empty mask is reported.
    """

    box_margin: float = 0.05
    motion: float = 0.5
    use_logits: bool = True
    multimask: bool = True
    prior_weight: float = 0.0
    prefer_larger: float = 0.05
    lost_iou: float = 0.1
    max_area_ratio: float = 2.5
    confident_score: float = 0.5
    name: str = "mask"

    def step(self, predictor: Predictor, tracks: list[Track]) -> list[StepResult]:
        """Decode every track's next mask on the predictor's current frame (batched decoder calls)."""
        if not (self.use_logits or self.multimask):
            raise ValueError("MaskPropagation needs use_logits or multimask")
        results: list[StepResult | None] = [None] * len(tracks)
        height, width = predictor.embedding.original_size
        boxes, logits, live = [], [], []
        for i, track in enumerate(tracks):
            box = mask_box(track.mask)
            if box is None:
                results[i] = StepResult(track.mask, 0.0, track)
                continue
            box = box + self.motion * np.array(track.velocity * 2)
            grow = np.maximum(2.0, self.box_margin * (box[2:] - box[:2]))
            box = np.concatenate([box[:2] - grow, box[2:] + grow])
            boxes.append(np.clip(box, 0, (width, height, width, height)))
            logits.append(track.logits)
            live.append(i)
        if not live:
            return results  # type: ignore[return-value]
        boxes_a = np.stack(boxes)
        lows, scs = [], []
        if self.use_logits:
            low, sc = predictor.predict_low_res(box=boxes_a, mask_input=np.stack(logits), multimask=False)
            lows.append(low), scs.append(sc)
        if self.multimask:
            low, sc = predictor.predict_low_res(box=boxes_a, multimask=True)
            lows.append(low), scs.append(sc)
        low = np.concatenate(lows, axis=1)  # (B, C, 256, 256)
        scores = np.concatenate(scs, axis=1)  # (B, C)

        h, w = predictor.embedding.input_size
        lh, lw = int(round(h * LOW_RES / max(h, w))), int(round(w * LOW_RES / max(h, w)))
        cand = low[:, :, :lh, :lw] > 0
        prev = np.stack([tracks[i].logits[0, :lh, :lw] > 0 for i in live])[:, None]
        overlap = _low_res_iou(cand, prev)  # (B, C)
        ranked = scores + self.prior_weight * overlap
        choice = np.argmax(ranked, axis=1)
        if self.prefer_larger > 0:
            areas = cand.sum(axis=(-2, -1)).astype(np.float64)  # (B, C), at low resolution
            close = ranked >= ranked.max(axis=1, keepdims=True) - self.prefer_larger
            choice = np.argmax(np.where(close, areas, -1.0), axis=1)
        best_low = low[np.arange(len(live)), choice]
        masks = predictor.masks_from_low_res(best_low)
        for j, i in enumerate(live):
            track, mask, score = tracks[i], masks[j], float(scores[j, choice[j]])
            area = int(mask.sum())
            ratio = max(area, 1) / max(track.area, 1)
            lost = overlap[j, choice[j]] < self.lost_iou or not 1 / self.max_area_ratio <= ratio <= self.max_area_ratio
            if lost:
                shown = mask if score >= self.confident_score else np.zeros_like(mask)
                results[i] = StepResult(shown, score, Track(track.mask, track.logits, track.area, track.lost + 1))
                continue
            velocity = (0.0, 0.0)
            new_box, old_box = mask_box(mask), mask_box(track.mask)
            if new_box is not None and old_box is not None:
                shift = (new_box[:2] + new_box[2:] - old_box[:2] - old_box[2:]) / 2
                velocity = (float(shift[0]), float(shift[1]))
            results[i] = StepResult(mask, score, Track(mask, best_low[j][None], area, 0, velocity))
        return results  # type: ignore[return-value]


STRATEGIES = {"mask": MaskPropagation, "box": BoxPropagation}

__all__ = ["Track", "StepResult", "MaskPropagation", "BoxPropagation", "STRATEGIES", "mask_box",
           "mask_to_logits"]
