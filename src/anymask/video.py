"""Segment objects in a video and follow them through its frames: :class:`VideoPredictor`.

    >>> video = VideoPredictor(Predictor(load_model("mobile_sam")))
    >>> video.open("clip.mp4")
    >>> video.add_prompt(0, obj_id=1, box=(120, 60, 400, 380))
    >>> video.add_prompt(0, obj_id=2, points=[(500, 200)], labels=[1])
    >>> for frame_index, masks in video.propagate():
    ...     masks[1]  # (H, W) bool mask of object 1 on this frame

Frames are read lazily (:mod:`anymask.video_io`): memory is bounded by a window of frames and a few
embeddings, not by the video's length, and :meth:`VideoPredictor.propagate` yields results instead of keeping
them. The image encoder runs once per frame visited; all objects of a frame are decoded in batched calls.

Objects join the propagation on the frames where they were prompted (:meth:`add_prompt`): propagating
forward, an object appears from its first prompted frame on; backward, from its last prompted frame down.
A prompted frame reports the prompt's mask and restarts the object's track from it. How an object is carried
from frame to frame is in :mod:`anymask.tracking`.

Coordinates are pixels of the frame: points ``(x, y)``, boxes XYXY; masks ``(H, W)`` bool.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Iterator

import numpy as np

from .errors import PromptError
from .predictor import ImageEmbedding, Predictor
from .prompts import check_prompts
from .tracking import STRATEGIES, StepResult, Track, mask_to_logits
from .video_io import DEFAULT_WINDOW, FrameSource, open_frames

logger = logging.getLogger(__name__)


class VideoPredictor:
    """Prompt objects on any frame of a video and propagate their masks forward or backward."""

    def __init__(self, predictor: Predictor, strategy: str = "mask", window: int = DEFAULT_WINDOW,
                 embedding_cache: int = 2, pad_to_square: bool = False) -> None:
        """Args:
        predictor: the image :class:`~anymask.predictor.Predictor` (its model runs every frame).
        strategy: ``"mask"`` (default: previous mask's box moved by its motion, its logits, loss detection) or
            ``"box"`` (naive baseline: the box of the previous mask only). See :mod:`anymask.tracking`.
        window: frames a video file or iterator keeps decoded (reverse reading goes in chunks of this size).
        embedding_cache: frame embeddings kept (each ``256 x 64 x 64`` float32, 4 MiB, or less unpadded).
        pad_to_square: False (default): frames are encoded padded only to a multiple of the encoder's stride;
            on a 16:9 video the encoder and decoder do 44 % less work than with True, SAM's padding to the
            model's square input (2.1x the frames/s on DAVIS, with the same J-mean within 0.01: see
            docs/video.md).
        """
        if strategy not in STRATEGIES:
            raise PromptError(f"unknown propagation strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
        self.predictor = predictor
        self.propagation = STRATEGIES[strategy]()
        self.pad_to_square = bool(pad_to_square)
        self.window = window
        self._cache_size = max(1, embedding_cache)
        self._source: FrameSource | None = None
        self._embeddings: collections.OrderedDict[int, ImageEmbedding] = collections.OrderedDict()
        self._current: int | None = None  # frame whose embedding the predictor holds
        self._prompts: dict[int, dict[int, StepResult]] = {}  # frame -> object -> prompt result

    # ------------------------------------------------------------------------------------------ video

    def open(self, source: Any) -> "VideoPredictor":
        """Open a video file, a folder of frames, a list / array of frames or an iterator of frames.

        Forgets the previous video and all prompts. Returns ``self``.

        Raises:
            ImageError: unreadable or missing video, an empty video, frames that are not images.
        """
        self.close()
        self._source = open_frames(source, self.window)
        return self

    def close(self) -> None:
        """Release the current video (if any) and forget its prompts."""
        if self._source is not None:
            self._source.close()
        self._source = None
        self.reset()

    @property
    def source(self) -> FrameSource:
        """The open :class:`~anymask.video_io.FrameSource`. Raises PromptError if no video is open."""
        if self._source is None:
            raise PromptError("no video is open: call open() first")
        return self._source

    @property
    def num_frames(self) -> int | None:
        """Number of frames (None while unknown: an iterator not read to its end)."""
        return self.source.num_frames

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames."""
        return self.source.frame_size

    @property
    def objects(self) -> list[int]:
        """Ids of the prompted objects, sorted."""
        return sorted({obj for prompts in self._prompts.values() for obj in prompts})

    def reset(self) -> None:
        """Forget every prompt and object (the video stays open)."""
        self._prompts.clear()
        self._embeddings.clear()
        self._current = None

    def remove_object(self, obj_id: int) -> None:
        """Forget object ``obj_id`` and its prompts. Raises PromptError for an unknown object."""
        if obj_id not in self.objects:
            raise PromptError(f"unknown object {obj_id!r}: prompted objects are {self.objects}")
        for frame in list(self._prompts):
            self._prompts[frame].pop(obj_id, None)
            if not self._prompts[frame]:
                del self._prompts[frame]

    # ---------------------------------------------------------------------------------------- prompts

    def add_prompt(self, frame: int, obj_id: int, points: Any = None, labels: Any = None, box: Any = None,
                   mask: Any = None) -> np.ndarray:
        """Prompt object ``obj_id`` on frame ``frame`` and return its ``(H, W)`` bool mask there.

        A new prompt for the same object and frame replaces the earlier one. ``mask`` (an ``(H, W)`` mask,
        non-zero = inside) is taken as the object's mask on that frame as it is, unless points or a box are
        given too, which are then decoded with the mask as ``mask_input``. Points (``(N, 2)`` (x, y), labels
        1/0) and a box (XYXY) are decoded on the frame; a single point alone picks the best of three masks.

        Raises:
            ImageError: the frame is past the end of the video or cannot be read.
            PromptError: no prompt, a malformed prompt, an object id that is not an integer.
        """
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise PromptError(f"object ids are integers, got {obj_id!r}")
        source = self.source
        source.check_index(frame)
        size = source.frame_size
        given = None
        if mask is not None:
            given = np.asarray(mask)
            if given.shape != size:
                raise PromptError(f"mask prompt of shape {given.shape}, the frames are {size}")
            given = given != 0
            if not given.any():
                raise PromptError("the mask prompt is empty")
        if given is not None and points is None and box is None:
            input_size = self._embed(frame).input_size
            logits = mask_to_logits(given, input_size, low_res_size=self.predictor.low_res_size)
            result = StepResult(given, 1.0, Track(given, logits, int(given.sum())))
        else:
            if points is None and box is None:
                raise PromptError("no prompt given: pass points (with labels), a box, or a mask")
            check_prompts(points, labels, box, image_size=size)
            embedding = self._embed(frame)
            mask_input = (mask_to_logits(given, embedding.input_size, low_res_size=self.predictor.low_res_size)
                          if given is not None else None)
            single_click = box is None and given is None and np.asarray(points, dtype=float).reshape(-1, 2).shape[0] == 1
            low, scores = self.predictor.predict_low_res(points, labels, box, mask_input, multimask=single_click)
            best = int(np.argmax(scores[0]))
            logits = low[0, best][None]
            chosen = self.predictor.masks_from_low_res(logits)[0]
            result = StepResult(chosen, float(scores[0, best]), Track(chosen, logits, int(chosen.sum())))
        self._prompts.setdefault(int(frame), {})[int(obj_id)] = result
        return result.mask

    # ------------------------------------------------------------------------------------ propagation

    def propagate(self, start: int | None = None, reverse: bool = False) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        """Yield ``(frame_index, {obj_id: (H, W) bool mask})`` frame by frame from ``start``.

        Args:
            start: first frame; default the first prompted frame (the last one with ``reverse``).
            reverse: go towards frame 0 instead of the end (needs a seekable source: not an iterator).

        Each yielded dict holds the objects tracked so far in this pass (an object joins on its prompted
        frame). Frames are read and encoded lazily, one at a time.

        Raises:
            PromptError: nothing was prompted.
            ImageError: ``start`` past the end; reverse over an iterator; unreadable frames.
        """
        if not self._prompts:
            raise PromptError("no object prompted: call add_prompt() before propagate()")
        source = self.source
        if start is None:
            start = max(self._prompts) if reverse else min(self._prompts)
        source.check_index(start)
        tracks: dict[int, Track] = {}
        for index, frame in source.frames(start, reverse):
            prompted = self._prompts.get(index, {})
            carried = [obj for obj in sorted(tracks) if obj not in prompted]
            out: dict[int, np.ndarray] = {}
            if carried:
                self._embed(index, frame)
                steps = self.propagation.step(self.predictor, [tracks[obj] for obj in carried])
                for obj, step in zip(carried, steps):
                    tracks[obj] = step.track
                    out[obj] = step.mask
                    if step.track.lost:
                        logger.debug("frame %d: object %d uncertain (%d frames)", index, obj, step.track.lost)
            for obj, result in prompted.items():
                tracks[obj] = result.track
                out[obj] = result.mask
            yield index, {obj: out[obj] for obj in sorted(out)}

    # ------------------------------------------------------------------------------------- embeddings

    def _embed(self, index: int, frame: np.ndarray | None = None) -> ImageEmbedding:
        """Put frame ``index``'s embedding into the predictor (encoding it unless cached) and return it."""
        if self._current == index and self._current in self._embeddings:
            return self._embeddings[index]
        embedding = self._embeddings.get(index)
        if embedding is not None:
            self.predictor.set_embedding(embedding)
            self._embeddings.move_to_end(index)
        else:
            embedding = self.encode(index, self.source.read(index) if frame is None else frame)
            self._embeddings[index] = embedding
            while len(self._embeddings) > self._cache_size:
                self._embeddings.popitem(last=False)
        self._current = index
        return embedding

    def encode(self, index: int, frame: np.ndarray) -> ImageEmbedding:
        """Run the image encoder on frame ``index`` (``(H, W, 3)`` uint8 RGB); the predictor keeps it set.

        A subclass may override this, e.g. to reuse embeddings computed elsewhere (the benchmark does).
        """
        return self.predictor.set_image(frame, pad_to_square=self.pad_to_square)


__all__ = ["VideoPredictor"]
