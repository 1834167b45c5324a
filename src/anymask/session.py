"""Interactive segmentation: click until the mask is right (:class:`InteractiveSession`).

A session turns a growing list of clicks (and an optional box) into one mask on the predictor's current
image. How prompts are turned into a mask is a :class:`SessionStrategy`; the default
(:data:`DEFAULT_STRATEGY`) is SAM's protocol with two measured changes: the largest near-best candidate on the
first click, and a floor under the logits fed back after each click (see ``docs/interactive.md`` and
``benchmarks/click_benchmark.py``)::

    predictor.set_image(image)
    session = predictor.session(image)          # or InteractiveSession(predictor, image)
    mask = session.add_click(320, 240)          # (H, W) bool
    mask = session.add_click(400, 260, positive=False)
    session.undo()                              # back to the mask after the first click

Coordinates are pixels of the original image: clicks ``(x, y)`` (x = column, y = row), boxes XYXY.
Passing the RGB ``image`` (the one the predictor holds) makes zoom-in refinement possible for strategies
that ask for it (``zoom_after``; off by default, it did not pay on GrabCut / Berkeley): once the object is
roughly known, a crop around it is encoded again at the encoder's full resolution and the clicks are
decoded there (one extra encoder run per crop).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Literal

import cv2
import numpy as np

from .errors import PromptError
from .images import load_image

if TYPE_CHECKING:  # pragma: no cover
    from .predictor import ImageEmbedding, Predictor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionStrategy:
    """How a session turns its prompts into a mask.

    Attributes:
        multimask: ``"first"``: three candidates for a lone first click, one mask afterwards (SAM's
            protocol); ``"always"``: three candidates on every click-only step; ``"both"``: after the first
            click, the single-mask output and the three candidates compete (two decoder runs).
        select: which candidate to keep: ``"score"`` = highest predicted IoU; ``"consistent"`` = the
            candidate that agrees with most clicks (positive clicks inside, negative outside), ties broken
            by predicted IoU; ``"refine"`` (with ``multimask="both"``): the single-mask refinement (SAM's
            step) unless one of the three candidates agrees with more clicks.
        prefer_larger: among the candidates chosen by ``select``, those whose predicted IoU is within this
            margin of the best one compete and the largest mask wins (a click usually means the whole
            object, not a part of it); 0 keeps the best-scored candidate.
        feed_logits: give the previous step's low-resolution logits back as ``mask_input``.
        zoom_after: from this many clicks on, decode in a crop around the object encoded at full
            resolution; ``None`` never zooms. Needs the image (see :class:`InteractiveSession`).
        zoom_box: zoom at once when a box is given (the box locates the object).
        zoom_max_area: zoom only when the crop covers at most this fraction of the image.
        zoom_margin: the crop is the object's box grown by this fraction of its width/height on each side.
        zoom_keep_object: in the crop, keep the candidate closest to the whole-image mask (the crop refines
            the object chosen on the whole image instead of choosing again).
        zoom_min_side: the crop's smallest side in pixels (tiny objects keep some context).
        min_region: remove islands (and fill holes) smaller than this fraction of the mask's area, unless
            they hold a click; 0 keeps the raw mask.
        logit_floor: fed-back logits below this value are raised to it (None: fed back as they are). SAM's
            background logits saturate at -30 to -90 after a few clicks, and a fed-back mask that certain
            outweighs a new positive click there: the click is ignored and the mask stalls.
        logit_ceiling: fed-back logits above this value are lowered to it (None: unchanged); studied, not
            used by the default (it hurt).
    """

    multimask: Literal["first", "always", "both"] = "first"
    select: Literal["score", "consistent", "refine"] = "score"
    prefer_larger: float = 0.0
    feed_logits: bool = True
    zoom_after: int | None = None
    zoom_box: bool = False
    zoom_max_area: float = 0.6
    zoom_margin: float = 0.4
    zoom_min_side: int = 48
    zoom_keep_object: bool = False
    min_region: float = 0.0
    logit_floor: float | None = None
    logit_ceiling: float | None = None


#: SAM's reference protocol (multimask on the first click, then one mask with the previous logits fed back).
SAM_STRATEGY = SessionStrategy()
#: The first click of the default strategy (and the default until the logit floor was added): SAM's protocol,
#: except that the first click keeps the largest of the candidates whose predicted IoU is within 0.05 of the
#: best one (a click on an object usually means the whole object, and the three predicted IoUs are often
#: nearly equal).
LARGER_FIRST_STRATEGY = SessionStrategy(prefer_larger=0.05)
#: The default strategy of :meth:`Predictor.session`: :data:`LARGER_FIRST_STRATEGY`, and the logits fed back
#: after each click are raised to at least -10 (``logit_floor``) so that saturated background cannot
#: outvote a new positive click. Measured with ``benchmarks/click_benchmark.py`` (see
#: ``docs/interactive.md``) against SAM's protocol on the official predictor.
DEFAULT_STRATEGY = SessionStrategy(prefer_larger=0.05, logit_floor=-10.0)
#: Single-mask refinement and three candidates compete each click, the one agreeing with most clicks wins.
BOTH_CONSISTENT_STRATEGY = SessionStrategy(multimask="both", select="consistent", feed_logits=True)

Crop = tuple[int, int, int, int]  # XYXY, integer pixel edges (x1, y1 exclusive)


@dataclass
class _State:
    """Everything a step produced, kept on a stack for :meth:`InteractiveSession.undo`."""

    clicks: list[tuple[float, float, bool]]
    box: np.ndarray | None
    mask: np.ndarray
    score: float | None
    global_logits: np.ndarray | None
    crop: Crop | None
    crop_logits: np.ndarray | None


class InteractiveSession:
    """Clicks and a box on one image, turned into one mask by a :class:`SessionStrategy`.

    Args:
        predictor: a :class:`~anymask.Predictor` whose image is already set (``set_image`` or
            ``set_embedding``). The session does not change the predictor's image.
        image: the same image as RGB (path, PIL image or ``(H, W, 3)`` uint8 array) to enable zoom-in
            refinement; without it the session never zooms.
        strategy: a :class:`SessionStrategy`; default :data:`DEFAULT_STRATEGY`.
        encode_crop: optional ``crop (h, w, 3) uint8 -> ImageEmbedding`` replacing the encoder run on a
            crop (e.g. a cache in benchmarks); the default runs the predictor's model on the crop.
    """

    def __init__(
        self,
        predictor: "Predictor",
        image: Any = None,
        strategy: SessionStrategy | None = None,
        encode_crop: Callable[[np.ndarray], "ImageEmbedding"] | None = None,
    ) -> None:
        self.predictor = predictor
        self.size: tuple[int, int] = tuple(predictor.embedding.original_size)  # type: ignore[assignment]
        self.strategy = strategy or DEFAULT_STRATEGY
        self.image: np.ndarray | None = None
        if image is not None:
            self.image = load_image(image)
            if self.image.shape[:2] != self.size:
                raise PromptError(f"image of size {self.image.shape[:2]} given, the predictor holds {self.size}")
        self._encode_crop = encode_crop
        self._zoom: "Predictor | None" = None
        self.crop_encodings = 0  # how many crops were encoded (each one an encoder run)
        self._history: list[_State] = []
        self._state = self._empty_state()

    # ------------------------------------------------------------------------------------------ public API

    @property
    def mask(self) -> np.ndarray:
        """The current ``(H, W)`` bool mask (all False before any prompt)."""
        return self._state.mask.copy()

    @property
    def score(self) -> float | None:
        """Predicted IoU of the current mask, or None before any prompt."""
        return self._state.score

    @property
    def clicks(self) -> list[tuple[float, float, bool]]:
        """The clicks so far as ``(x, y, positive)``."""
        return list(self._state.clicks)

    @property
    def box(self) -> np.ndarray | None:
        """The current XYXY box prompt, or None."""
        return None if self._state.box is None else self._state.box.copy()

    @property
    def crop(self) -> tuple[int, int, int, int] | None:
        """The zoom-in crop (XYXY, integer pixel edges) the current mask was decoded in, or None."""
        return self._state.crop

    def add_click(self, x: float, y: float, positive: bool = True) -> np.ndarray:
        """Add a click at pixel ``(x, y)`` (foreground if ``positive``) and return the new ``(H, W)`` mask.

        Raises:
            PromptError: the point lies outside the image or is not finite.
        """
        height, width = self.size
        if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x <= width and 0 <= y <= height):
            raise PromptError(f"click ({x}, {y}) is outside the {width}x{height} image")
        clicks = self._state.clicks + [(float(x), float(y), bool(positive))]
        return self._step(clicks, self._state.box)

    def add_box(self, box: Any) -> np.ndarray:
        """Set the XYXY box prompt (replacing an earlier box) and return the new ``(H, W)`` mask.

        Raises:
            PromptError: not 4 finite numbers, x1 < x0 or y1 < y0, or outside the image.
        """
        b = np.asarray(box, dtype=np.float64).reshape(-1)
        height, width = self.size
        if b.shape != (4,) or not np.isfinite(b).all():
            raise PromptError(f"a box is 4 finite numbers x0, y0, x1, y1, got {box!r}")
        if b[2] < b[0] or b[3] < b[1]:
            raise PromptError(f"box {b.tolist()} has x1 < x0 or y1 < y0")
        if b.min() < 0 or b[2] > width or b[3] > height:
            raise PromptError(f"box {b.tolist()} is outside the {width}x{height} image")
        return self._step(list(self._state.clicks), b)

    def undo(self) -> np.ndarray:
        """Take back the last click or box and return the mask as it was before it.

        Raises:
            PromptError: there is nothing to undo.
        """
        if not self._history:
            raise PromptError("nothing to undo: the session has no clicks or box")
        self._state = self._history.pop()
        return self.mask

    def reset(self) -> None:
        """Forget every prompt (a new object on the same image)."""
        self._history.clear()
        self._state = self._empty_state()

    # ------------------------------------------------------------------------------------------ internals

    def _empty_state(self) -> _State:
        return _State([], None, np.zeros(self.size, dtype=bool), None, None, None, None)

    def _step(self, clicks: list[tuple[float, float, bool]], box: np.ndarray | None) -> np.ndarray:
        previous = self._state
        state = replace(previous, clicks=clicks, box=box)
        self.predictor.embedding  # raises PromptError when the predictor lost its image
        logits, score, mask = self._decode(self.predictor, clicks, box, previous.global_logits, (0, 0))
        state.global_logits, state.score, state.mask = logits, score, mask
        crop = self._zoom_crop(clicks, box, mask, previous.crop)
        inside = [c for c in clicks if crop and crop[0] <= c[0] <= crop[2] and crop[1] <= c[1] <= crop[3]]
        if crop is not None and (inside or box is not None):
            zoom = self._zoom_predictor(crop)
            feed = previous.crop_logits if crop == previous.crop else None
            crop_box = None if box is None else np.clip(box - np.tile(crop[:2], 2), 0, None)
            if crop_box is not None:
                crop_box = np.minimum(crop_box, np.tile([crop[2] - crop[0], crop[3] - crop[1]], 2))
            like = mask[crop[1]:crop[3], crop[0]:crop[2]] if self.strategy.zoom_keep_object else None
            logits, score, crop_mask = self._decode(zoom, inside, crop_box, feed, crop[:2], like)
            mask = np.zeros(self.size, dtype=bool)
            mask[crop[1]:crop[3], crop[0]:crop[2]] = crop_mask
            state.crop, state.crop_logits, state.score, state.mask = crop, logits, score, mask
        else:
            state.crop, state.crop_logits = None, None
        if self.strategy.min_region > 0:
            state.mask = self._clean(state.mask, clicks)
        self._history.append(previous)
        self._state = state
        return self.mask

    def _decode(self, predictor: "Predictor", clicks, box, previous_logits, offset, like=None):
        """One decoder run in ``predictor``'s frame; returns ``(logits (256, 256), score, mask (h, w))``.

        With ``like`` (an ``(h, w)`` bool mask in the same frame) the candidate closest to it (IoU) is kept
        among those that agree with most clicks: zooming refines the object chosen on the whole image.
        """
        strategy = self.strategy
        points = labels = None
        if clicks:
            points = np.array([(c[0] - offset[0], c[1] - offset[1]) for c in clicks], dtype=np.float64)
            labels = np.array([int(c[2]) for c in clicks])
        lone = box is None and len(clicks) == 1
        multimask = box is None and (lone or strategy.multimask != "first")
        mask_input = previous_logits[None] if strategy.feed_logits and previous_logits is not None else None
        if mask_input is not None and (strategy.logit_floor is not None or strategy.logit_ceiling is not None):
            mask_input = np.clip(mask_input, strategy.logit_floor, strategy.logit_ceiling)
        low, scores = predictor.predict_low_res(points, labels, box, mask_input, multimask=multimask)
        low, scores = low[0], scores[0]
        if multimask and not lone and strategy.multimask == "both":
            single, single_score = predictor.predict_low_res(points, labels, box, mask_input, multimask=False)
            low, scores = np.concatenate([single[0], low]), np.concatenate([single_score[0], scores])
        masks = predictor.masks_from_low_res(low)
        order = list(np.argsort(-scores, kind="stable"))
        if strategy.select == "refine" and len(low) == 4:  # the single-mask refinement comes first
            order = [0] + [i for i in order if i != 0]
        if strategy.select in ("consistent", "refine") and points is not None and len(order) > 1:
            xs = np.clip(np.round(points[:, 0]).astype(int), 0, masks.shape[-1] - 1)
            ys = np.clip(np.round(points[:, 1]).astype(int), 0, masks.shape[-2] - 1)
            agree = (masks[:, ys, xs] == labels.astype(bool)[None]).sum(axis=1)
            order = sorted(order, key=lambda i: -agree[i])  # stable: keeps score order among ties
            order = [i for i in order if agree[i] == agree[order[0]]]
        if like is not None and len(order) > 1:
            inter = (masks & like).reshape(len(masks), -1).sum(axis=1)
            union = (masks | like).reshape(len(masks), -1).sum(axis=1)
            order = sorted(order, key=lambda i: -inter[i] / max(union[i], 1))
        best = int(order[0])
        if strategy.prefer_larger > 0 and len(order) > 1:
            near = [i for i in order if scores[i] >= scores[best] - strategy.prefer_larger]
            areas = masks.reshape(len(masks), -1).sum(axis=1)
            best = int(max(near, key=lambda i: areas[i]))  # max keeps the first (best-scored) among ties
        return low[best], float(scores[best]), masks[best]

    def _zoom_crop(self, clicks, box, mask: np.ndarray, previous: Crop | None) -> Crop | None:
        """The crop to decode in for this step, or None to keep the whole image."""
        strategy, (height, width) = self.strategy, self.size
        if self.image is None or strategy.zoom_after is None:
            return None
        if len(clicks) < strategy.zoom_after and not (strategy.zoom_box and box is not None):
            return None
        ys, xs = np.nonzero(mask)
        px = [c[0] for c in clicks if c[2]] + ([box[0], box[2]] if box is not None else [])
        py = [c[1] for c in clicks if c[2]] + ([box[1], box[3]] if box is not None else [])
        if len(xs) == 0 and not px:
            return None
        x0, x1 = min([*px, *(xs.min(),) * bool(len(xs))]), max([*px, *(xs.max() + 1,) * bool(len(xs))])
        y0, y1 = min([*py, *(ys.min(),) * bool(len(ys))]), max([*py, *(ys.max() + 1,) * bool(len(ys))])
        if previous is not None and previous[0] <= x0 and previous[1] <= y0 and x1 <= previous[2] \
                and y1 <= previous[3]:
            return previous
        mx = max((x1 - x0) * strategy.zoom_margin, (strategy.zoom_min_side - (x1 - x0)) / 2, 0)
        my = max((y1 - y0) * strategy.zoom_margin, (strategy.zoom_min_side - (y1 - y0)) / 2, 0)
        crop = (int(max(0, np.floor(x0 - mx))), int(max(0, np.floor(y0 - my))),
                int(min(width, np.ceil(x1 + mx))), int(min(height, np.ceil(y1 + my))))
        if (crop[2] - crop[0]) * (crop[3] - crop[1]) > strategy.zoom_max_area * width * height:
            return None
        return crop

    def _zoom_predictor(self, crop: Crop) -> "Predictor":
        """A predictor holding the crop's embedding (encoded once per crop)."""
        if self._zoom is not None and getattr(self._zoom, "_anymask_crop", None) == crop:
            return self._zoom
        from .predictor import Predictor

        if self._zoom is None:
            self._zoom = Predictor(self.predictor.model, self.predictor.spec)
        pixels = np.ascontiguousarray(self.image[crop[1]:crop[3], crop[0]:crop[2]])
        if self._encode_crop is not None:
            self._zoom.set_embedding(self._encode_crop(pixels))
        else:
            self._zoom.set_image(pixels)
        self._zoom._anymask_crop = crop  # type: ignore[attr-defined]
        self.crop_encodings += 1
        logger.debug("zoom: encoded crop %s", crop)
        return self._zoom

    def _clean(self, mask: np.ndarray, clicks) -> np.ndarray:
        """Remove small islands and fill small holes that hold no click."""
        area = int(mask.sum())
        limit = self.strategy.min_region * area
        if area == 0 or limit < 1:
            return mask
        out = mask.copy()
        for value in (True, False):  # islands of the mask, then holes (islands of the background)
            count, labels, stats, _ = cv2.connectedComponentsWithStats((out == value).astype(np.uint8), 8)
            keep = {labels[int(min(c[1], self.size[0] - 1)), int(min(c[0], self.size[1] - 1))] for c in clicks}
            for i in range(1, count):
                if stats[i, cv2.CC_STAT_AREA] < limit and i not in keep:
                    out[labels == i] = not value
        return out if out.any() else mask


__all__ = ["InteractiveSession", "SessionStrategy", "DEFAULT_STRATEGY", "LARGER_FIRST_STRATEGY", "SAM_STRATEGY",
           "BOTH_CONSISTENT_STRATEGY"]
