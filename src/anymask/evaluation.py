"""The standard interactive-segmentation click benchmark (NoC@85/90, mIoU@k, box mIoU).

The protocol is the one of RITM / f-BRS / SimpleClick and of SAM's interactive evaluation:

- a simulated user places the next click in the current error, at the error pixel farthest from the
  boundary of its error region (``cv2.distanceTransform``, L2, with a one-pixel zero border so that the
  image border counts as boundary). The click is *positive* when that farthest point lies in missed
  foreground (false negative) and *negative* when it lies in false foreground (false positive); ties go to
  the negative side, as in RITM. With an empty prediction the first click is the interior point of the
  object farthest from its boundary.
- ground-truth pixels marked "ignore" (GrabCut's 128 band) count neither for IoU nor as error, so no click
  is ever placed on them; a pixel that already holds a click is never clicked again.
- an instance is run for at most ``max_clicks`` (20) clicks; it stops early once its IoU reaches the
  highest threshold (0.90) *and* at least ``min_clicks`` (5) clicks were made, which leaves NoC@85/90 and
  mIoU@1/3/5 exact (later IoUs are carried forward from the last click for the per-click curves).

A system under test is a :class:`ClickAdapter`: given an image, then clicks one by one, it returns the mask
after each click. One implementation of the protocol (:func:`evaluate_instance`) runs every system.

Coordinates: clicks are ``(x, y)`` pixel centres (x = column, y = row); masks are ``(H, W)`` bool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Protocol

import cv2
import numpy as np

from .errors import PromptError

logger = logging.getLogger(__name__)

IOU_THRESHOLDS = (0.85, 0.90)
MAX_CLICKS = 20
MIN_CLICKS = 5


@dataclass(frozen=True)
class Click:
    """One simulated click: pixel ``(x, y)`` and whether it marks foreground (``positive``)."""

    x: int
    y: int
    positive: bool


class ClickAdapter(Protocol):
    """A system under test. ``set_image`` once per image, ``new_object`` before each instance."""

    def set_image(self, image: np.ndarray, key: str) -> None:
        """Take a new ``(H, W, 3)`` uint8 RGB image; ``key`` names it (for caches)."""

    def new_object(self) -> None:
        """Forget all clicks: the next click starts a new object on the same image."""

    def add_click(self, click: Click) -> np.ndarray:
        """Add one click and return the ``(H, W)`` bool mask after it."""

    def box_mask(self, box: np.ndarray) -> np.ndarray:
        """The ``(H, W)`` bool mask for an XYXY box prompt alone (a fresh object)."""


def masked_iou(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """IoU of ``pred`` against ``gt`` over the pixels not in ``ignore`` (all ``(H, W)`` bool).

    1.0 when both are empty outside the ignored pixels.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {gt.shape} and {pred.shape}")
    valid = np.ones_like(gt, dtype=bool) if ignore is None else ~ignore
    inter = np.count_nonzero(gt & pred & valid)
    union = np.count_nonzero((gt | pred) & valid)
    return 1.0 if union == 0 else inter / union


def _border_distance(mask: np.ndarray) -> np.ndarray:
    """L2 distance of every pixel of ``mask`` to the nearest pixel outside it, image border = outside."""
    padded = np.pad(mask.astype(np.uint8), 1, mode="constant")
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def next_click(
    gt: np.ndarray,
    pred: np.ndarray,
    ignore: np.ndarray | None = None,
    clicked: np.ndarray | None = None,
) -> Click | None:
    """The simulated user's next click for prediction ``pred`` of ground truth ``gt``.

    Args:
        gt: ``(H, W)`` bool ground truth.
        pred: ``(H, W)`` bool current prediction (all False before the first click).
        ignore: ``(H, W)`` bool pixels to leave out (never clicked, not error), or None.
        clicked: ``(H, W)`` bool pixels already clicked (never clicked again), or None.

    Returns:
        The click at the error pixel farthest from its error region's boundary (the first such pixel in
        row-major order), or None when there is no error left.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {gt.shape} and {pred.shape}")
    valid = np.ones_like(gt, dtype=bool) if ignore is None else ~ignore
    fn = _border_distance(gt & ~pred & valid)
    fp = _border_distance(~gt & pred & valid)
    if clicked is not None:
        fn[clicked] = 0
        fp[clicked] = 0
    fn_max, fp_max = float(fn.max()), float(fp.max())
    if max(fn_max, fp_max) <= 0:
        return None
    positive = fn_max > fp_max
    dist = fn if positive else fp
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Click(int(x), int(y), bool(positive))


@dataclass
class InstanceResult:
    """Clicks and IoUs of one ground-truth object.

    ``ious[k]`` is the IoU after ``k + 1`` clicks (length ``max_clicks``; values after an early stop repeat
    the last measured IoU), ``clicks`` the clicks actually made, ``box_iou`` the IoU of the box prompt.
    """

    name: str
    ious: list[float]
    clicks: list[Click] = field(default_factory=list)
    box_iou: float | None = None

    def noc(self, threshold: float, max_clicks: int = MAX_CLICKS) -> int:
        """Number of clicks to reach ``threshold`` IoU; ``max_clicks`` when it is never reached."""
        for k, value in enumerate(self.ious[:max_clicks]):
            if value >= threshold:
                return k + 1
        return max_clicks


def evaluate_instance(
    adapter: ClickAdapter,
    gt: np.ndarray,
    ignore: np.ndarray | None = None,
    name: str = "",
    max_clicks: int = MAX_CLICKS,
    min_clicks: int = MIN_CLICKS,
    stop_iou: float = max(IOU_THRESHOLDS),
    box: bool = True,
) -> InstanceResult:
    """Run the click protocol (and optionally the box prompt) for one object on the adapter's image.

    The adapter must already hold the image (:meth:`ClickAdapter.set_image`). ``gt`` and ``ignore`` are
    ``(H, W)`` bool. With ``box``, the tight box of ``gt`` (XYXY, pixel edges: ``x1 = last column + 1``) is
    given as a prompt after the clicks.
    """
    if not gt.any():
        raise PromptError(f"{name or 'instance'}: the ground-truth mask is empty")
    adapter.new_object()
    pred = np.zeros_like(gt, dtype=bool)
    clicked = np.zeros_like(gt, dtype=bool)
    ious: list[float] = []
    clicks: list[Click] = []
    for k in range(max_clicks):
        click = next_click(gt, pred, ignore, clicked)
        if click is None:  # perfect mask: nothing left to correct
            break
        clicks.append(click)
        clicked[click.y, click.x] = True
        pred = np.asarray(adapter.add_click(click), dtype=bool)
        ious.append(masked_iou(gt, pred, ignore))
        if ious[-1] >= stop_iou and k + 1 >= min_clicks:
            break
    ious += [ious[-1] if ious else 1.0] * (max_clicks - len(ious))
    box_iou = None
    if box:
        ys, xs = np.nonzero(gt)
        tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
        adapter.new_object()
        box_iou = masked_iou(gt, np.asarray(adapter.box_mask(tight), dtype=bool), ignore)
    return InstanceResult(name=name, ious=ious, clicks=clicks, box_iou=box_iou)


@dataclass
class Summary:
    """The benchmark's figures over a set of instances."""

    count: int
    noc85: float
    noc90: float
    failures90: int  # instances that never reach 0.90 in max_clicks clicks
    miou_at: dict[int, float]  # clicks -> mean IoU after that many clicks
    box_miou: float | None

    def as_dict(self) -> dict:
        return {
            "instances": self.count,
            "NoC@85": round(self.noc85, 3),
            "NoC@90": round(self.noc90, 3),
            ">=20@90": self.failures90,
            **{f"mIoU@{k}": round(v, 4) for k, v in self.miou_at.items()},
            "box mIoU": None if self.box_miou is None else round(self.box_miou, 4),
        }


def summarize(results: Iterable[InstanceResult], max_clicks: int = MAX_CLICKS,
              miou_clicks: tuple[int, ...] = (1, 3, 5)) -> Summary:
    """NoC@85, NoC@90, failures at 90 %, mIoU after ``miou_clicks`` clicks and box mIoU."""
    results = list(results)
    if not results:
        raise ValueError("no results to summarize")
    boxes = [r.box_iou for r in results if r.box_iou is not None]
    return Summary(
        count=len(results),
        noc85=float(np.mean([r.noc(0.85, max_clicks) for r in results])),
        noc90=float(np.mean([r.noc(0.90, max_clicks) for r in results])),
        failures90=sum(1 for r in results if max(r.ious[:max_clicks]) < 0.90),
        miou_at={k: float(np.mean([r.ious[k - 1] for r in results])) for k in miou_clicks},
        box_miou=float(np.mean(boxes)) if boxes else None,
    )




class SessionAdapter:
    """Runs anymask's :class:`~anymask.session.InteractiveSession` under the click protocol.

    Args:
        predictor: a :class:`~anymask.Predictor`.
        strategy: the session's :class:`~anymask.session.SessionStrategy` (default: the session's default).
        embed: optional ``(image, key) -> ImageEmbedding`` (e.g. a cache); default runs the encoder.
        encode_crop: optional crop encoder handed to the session (see :class:`InteractiveSession`).
    """

    def __init__(self, predictor, strategy=None, embed=None, encode_crop=None) -> None:
        self.predictor, self.strategy = predictor, strategy
        self.embed, self.encode_crop = embed, encode_crop
        self.image: np.ndarray | None = None
        self.session = None

    def set_image(self, image: np.ndarray, key: str) -> None:
        if self.embed is None:
            self.predictor.set_image(image)
        else:
            self.predictor.set_embedding(self.embed(image, key))
        self.image = image
        self.session = None

    def new_object(self) -> None:
        from .session import InteractiveSession

        self.session = InteractiveSession(self.predictor, self.image, self.strategy, self.encode_crop)

    def add_click(self, click: Click) -> np.ndarray:
        return self.session.add_click(click.x, click.y, click.positive)

    def box_mask(self, box: np.ndarray) -> np.ndarray:
        return self.session.add_box(box)


__all__ = [
    "Click",
    "ClickAdapter",
    "InstanceResult",
    "SessionAdapter",
    "Summary",
    "evaluate_instance",
    "masked_iou",
    "next_click",
    "summarize",
    "IOU_THRESHOLDS",
    "MAX_CLICKS",
]
