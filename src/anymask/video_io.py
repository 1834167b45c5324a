"""Reading video frames one at a time, with memory bounded by a small window (not by the video's length).

:func:`open_frames` turns what a caller has into a :class:`FrameSource`:

- a video file (``.mp4``, ``.avi``, ``.mov``, ``.webm``, ``.mkv``, ...), decoded with OpenCV's bundled FFmpeg;
- a folder of image files (JPEG, PNG, ...), taken in sorted file-name order;
- a sequence of frames already in memory (a list of arrays, or a ``(T, H, W, 3)`` array);
- any other iterable of frames (a generator, a camera reader, ...).

Every frame comes out as a new ``(H, W, 3) uint8`` RGB array (OpenCV's BGR is converted). Frames are indexed
from 0. Files, folders and in-memory sequences are *seekable*: any frame can be read, in any order; reverse
iteration over a video file reads it in forward chunks of ``window`` frames from the end (seek with
``CAP_PROP_POS_FRAMES``, read forward, hand out backwards), so at most ``window`` decoded frames are held.
A plain iterator is read once, forward: it keeps only the last ``window`` frames, so frames further back
and reverse iteration are not available (:class:`~anymask.errors.ImageError` says so).

Writing: :func:`open_video_writer` writes an overlay video with OpenCV: ``.mp4`` (MPEG-4 Part 2, ``mp4v``)
and ``.avi`` (Motion-JPEG) work with the OpenCV wheel anymask pins; H.264 is not in that wheel.
"""

from __future__ import annotations

import collections
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from .errors import ImageError, OutputError
from .images import load_image

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
DEFAULT_WINDOW = 16


class FrameSource(ABC):
    """Frames of one video, read lazily. ``num_frames`` is None while the length is unknown (iterators)."""

    seekable: bool = True

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self.num_frames: int | None = None
        self.frame_size: tuple[int, int] = (0, 0)  # (H, W) of the first frame

    @abstractmethod
    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``(H, W, 3) uint8`` RGB. Raises ImageError past the end or when unreadable."""

    def frames(self, start: int = 0, reverse: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, frame)`` from ``start`` to the last frame (or down to frame 0 with ``reverse``)."""
        if reverse:
            for index in range(start, -1, -1):
                yield index, self.read(index)
            return
        index = start
        while self.num_frames is None or index < self.num_frames:
            try:
                frame = self.read(index)
            except _EndOfFrames:
                return
            yield index, frame
            index += 1

    def check_index(self, index: int) -> None:
        """Raise ImageError unless ``index`` is a frame of this video (reads ahead for iterators)."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ImageError(f"frame index must be a non-negative integer, got {index!r}")
        if self.num_frames is not None and index >= self.num_frames:
            raise ImageError(f"frame {index} is past the end of the video ({self.num_frames} frames)")

    def close(self) -> None:
        """Release the decoder (if any)."""

    def _checked(self, frame: Any, index: int) -> np.ndarray:
        if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3:
            rgb = frame  # already RGB uint8: no copy (never modified)
        else:
            rgb = load_image(frame)  # paths, PIL images, gray / RGBA / float arrays
        if self.frame_size == (0, 0):
            self.frame_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        elif rgb.shape[:2] != self.frame_size:
            raise ImageError(f"frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, the video's first frame "
                             f"{self.frame_size[1]}x{self.frame_size[0]}: all frames must have one size")
        return rgb


class _EndOfFrames(ImageError):
    """Internal: an iterator or a stream ended before the frame asked for."""


class VideoFileSource(FrameSource):
    """A video file decoded by OpenCV; sequential reads decode on, other reads seek first."""

    def __init__(self, path: str | os.PathLike, window: int = DEFAULT_WINDOW) -> None:
        super().__init__(window)
        self.path = Path(path)
        if not self.path.is_file():
            raise ImageError(f"{self.path}: no such video file")
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise ImageError(f"{self.path}: cannot open as a video (unknown or corrupt format)")
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS)) or 0.0
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self._position = 0  # index of the frame the next capture.read() returns
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        ok, first = self._capture.read()
        if not ok or first is None:
            self.close()
            raise ImageError(f"{self.path}: the video has no readable frames (empty or corrupt)")
        self._position = 1
        self._remember(0, self._convert(first, 0))
        self.num_frames = count if count > 0 else None

    def _convert(self, bgr: np.ndarray, index: int) -> np.ndarray:
        return self._checked(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), index)

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        self._cache.move_to_end(index)
        while len(self._cache) > self.window:
            self._cache.popitem(last=False)

    def read(self, index: int) -> np.ndarray:
        self.check_index(index)
        if index in self._cache:
            return self._cache[index]
        if index != self._position:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            self._position = index
        ok, bgr = self._capture.read()
        if not ok or bgr is None:
            # the container's frame count can be an estimate: the video really ends here
            self.num_frames = index
            raise _EndOfFrames(f"frame {index} is past the end of the video ({index} frames)")
        self._position = index + 1
        frame = self._convert(bgr, index)
        self._remember(index, frame)
        return frame

    def frames(self, start: int = 0, reverse: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        if not reverse:
            yield from super().frames(start, reverse)
            return
        self.check_index(start)
        stop = start + 1
        while stop > 0:  # chunks [begin, stop) decoded forward, handed out backwards
            begin = max(0, stop - self.window)
            chunk = [self.read(i) for i in range(begin, stop)]
            for offset in range(len(chunk) - 1, -1, -1):
                yield begin + offset, chunk[offset]
            stop = begin

    def close(self) -> None:
        self._capture.release()


class FolderSource(FrameSource):
    """Image files of one folder in sorted name order (e.g. ``00000.jpg``, ``00001.jpg``, ...)."""

    def __init__(self, folder: str | os.PathLike, window: int = DEFAULT_WINDOW) -> None:
        super().__init__(window)
        self.folder = Path(folder)
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise ImageError(f"{self.folder}: no image frames in this folder (empty video)")
        self.num_frames = len(self.files)
        self.read(0)

    def read(self, index: int) -> np.ndarray:
        self.check_index(index)
        return self._checked(load_image(self.files[index]), index)


class SequenceSource(FrameSource):
    """Frames already in memory: a list/tuple of arrays or a ``(T, H, W, 3)`` array."""

    def __init__(self, frames: Any, window: int = DEFAULT_WINDOW) -> None:
        super().__init__(window)
        self._frames = frames
        self.num_frames = len(frames)
        if self.num_frames == 0:
            raise ImageError("the frame sequence is empty (empty video)")
        self.read(0)

    def read(self, index: int) -> np.ndarray:
        self.check_index(index)
        return self._checked(self._frames[index], index)


class IteratorSource(FrameSource):
    """Any iterable of frames, read once and forward; keeps the last ``window`` frames."""

    seekable = False

    def __init__(self, frames: Iterable[Any], window: int = DEFAULT_WINDOW) -> None:
        super().__init__(window)
        self._iterator = iter(frames)
        self._recent: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._next = 0
        try:
            self.read(0)
        except _EndOfFrames:
            raise ImageError("the frame iterator yielded no frames (empty video)") from None

    def check_index(self, index: int) -> None:
        super().check_index(index)
        while self.num_frames is None and self._next <= index:
            self._pull()
        if self.num_frames is not None and index >= self.num_frames:
            raise ImageError(f"frame {index} is past the end of the video ({self.num_frames} frames)")

    def _pull(self) -> None:
        try:
            raw = next(self._iterator)
        except StopIteration:
            self.num_frames = self._next
            return
        self._recent[self._next] = self._checked(raw, self._next)
        self._next += 1
        while len(self._recent) > self.window:
            self._recent.popitem(last=False)

    def read(self, index: int) -> np.ndarray:
        try:
            self.check_index(index)
        except ImageError:
            if self.num_frames is not None and index >= self.num_frames:
                raise _EndOfFrames(f"frame {index} is past the end of the video ({self.num_frames} frames)") from None
            raise
        if index not in self._recent:
            raise ImageError(f"frame {index} was already consumed: a frame iterator is read once, forward, "
                             f"keeping the last {self.window} frames; open a file, a folder or a list to seek")
        return self._recent[index]

    def frames(self, start: int = 0, reverse: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        if reverse:
            raise ImageError("reverse propagation needs a seekable source (a video file, a folder of frames or "
                             "a list of arrays), not a one-pass frame iterator")
        yield from super().frames(start, reverse)


def open_frames(source: Any, window: int = DEFAULT_WINDOW) -> FrameSource:
    """A :class:`FrameSource` for a video file, a folder of frames, a sequence of arrays or an iterable.

    Raises:
        ImageError: missing or unreadable file, an empty video, frames that are not images or differ in size.
    """
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return FolderSource(path, window)
        if not path.exists():
            raise ImageError(f"{path}: no such video file or folder")
        return VideoFileSource(path, window)
    if isinstance(source, np.ndarray):
        if source.ndim != 4:
            raise ImageError(f"an array of frames must have shape (T, H, W, 3), got {source.shape}")
        return SequenceSource(source, window)
    if isinstance(source, (list, tuple)):
        return SequenceSource(source, window)
    if isinstance(source, Iterable):
        return IteratorSource(source, window)
    raise ImageError(f"cannot read frames from a {type(source).__name__}: give a video file, a folder of frames, "
                     "a list of arrays or an iterator of arrays")


def open_video_writer(path: str | os.PathLike, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An OpenCV writer for ``size = (H, W)`` RGB frames (write with :func:`write_rgb`).

    ``.mp4`` uses MPEG-4 Part 2 (``mp4v``), ``.avi`` Motion-JPEG. Raises OutputError for other suffixes or
    when OpenCV cannot open the file.
    """
    suffix = Path(path).suffix.lower()
    codecs = {".mp4": "mp4v", ".avi": "MJPG"}
    if suffix not in codecs:
        raise OutputError(f"cannot write a video as {suffix or 'a file without suffix'!r}: use .mp4 or .avi")
    height, width = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codecs[suffix]), float(fps or 25.0), (width, height))
    if not writer.isOpened():
        raise OutputError(f"cannot write video {path} (codec {codecs[suffix]} unavailable or path not writable)")
    return writer


def write_rgb(writer: cv2.VideoWriter, frame: np.ndarray) -> None:
    """Append one ``(H, W, 3) uint8`` RGB frame to a writer from :func:`open_video_writer`."""
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


__all__ = ["FrameSource", "VideoFileSource", "FolderSource", "SequenceSource", "IteratorSource", "open_frames",
           "open_video_writer", "write_rgb", "VIDEO_SUFFIXES"]
