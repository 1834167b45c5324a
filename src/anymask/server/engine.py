"""What the HTTP API does, without HTTP: decode uploads safely, encode once, decode prompts, segment everything.

:class:`SegmentEngine` owns the model and three :class:`~anymask.Predictor` objects, each behind its own lock
(a predictor holds the current image): one encodes uploads, one decodes prompts, one runs the automatic mask
generator. So a slow upload or a "segment everything" never delays the clicks of other users. Embeddings live
in an :class:`~anymask.server.cache.EmbeddingCache` bounded by bytes.

The HTTP layer runs each kind of work on its own single-thread executor (:attr:`SegmentEngine.pools`), not on
a shared pool of dozens of threads: the work is serialised by the locks anyway, and every thread that
allocates large arrays gets its own malloc arena, so 40 threads each decoding once grow the resident memory
by over a gigabyte that is never returned (measured: 1.0 -> 2.4 GB under 50 clients).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import io
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError, PromptError
from ..images import load_image
from ..modeling import Sam
from ..outputs import mask_record
from ..predictor import Predictor
from ..prompts import LOW_RES
from .cache import CachedImage, EmbeddingCache


class ImageTooLarge(ImageError):
    """An upload has more pixels than the server accepts (HTTP 413)."""


class UnknownImage(PromptError):
    """No image with this id is in the cache (never uploaded, or evicted) (HTTP 404)."""


def open_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an uploaded image file to ``(H, W, 3)`` uint8 RGB, refusing more than ``max_pixels`` pixels.

    The pixel count is read from the header before any pixel is decoded (decompression bombs never expand).

    Raises:
        ImageTooLarge: ``width * height > max_pixels`` (or above Pillow's own bomb limit).
        ImageError: not an image Pillow can read, or truncated / corrupt.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image too large: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageError("the upload is not an image file that can be read (PNG, JPEG, WebP, BMP, TIFF, GIF)") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image has {width}x{height} = {width * height} pixels; this server accepts at most "
                            f"{max_pixels}")
    return load_image(image)


def _decode_logits(text: str) -> np.ndarray:
    """base64 of ``256 * 256`` float32 little-endian values -> ``(1, 256, 256)`` float32."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PromptError("mask_input is not valid base64") from None
    expected = LOW_RES * LOW_RES * 4
    if len(raw) != expected:
        raise PromptError(f"mask_input must hold {LOW_RES}x{LOW_RES} float32 values ({expected} bytes), "
                          f"got {len(raw)} bytes")
    logits = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(1, LOW_RES, LOW_RES)
    if not np.isfinite(logits).all():
        raise PromptError("mask_input holds NaN or infinite values")
    return logits


def _encode_logits(logits: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(logits, dtype="<f4").tobytes()).decode("ascii")


class SegmentEngine:
    """The model, its predictors and the embedding cache behind the HTTP API.

    Args:
        model: a network from :func:`anymask.load_model`.
        backend: the predictors' backend (see :mod:`anymask.runtime`).
        cache_bytes: the embedding cache's limit in bytes.
        max_pixels: largest image accepted, in pixels.
    """

    def __init__(self, model: Sam, backend: str = "auto", cache_bytes: int = 512 << 20,
                 max_pixels: int = 40_000_000) -> None:
        self.model = model
        self.encoder = Predictor(model, backend=backend)
        self.backend = self.encoder.backend
        # shallow copies share the network and the onnxruntime sessions (whose run() is thread-safe) but each
        # holds its own current image: no second set of sessions to load
        self.decoder = copy.copy(self.encoder)
        self._everything = copy.copy(self.encoder)
        self.cache = EmbeddingCache(cache_bytes)
        self.max_pixels = int(max_pixels)
        self._encode_lock = threading.Lock()
        self._decode_lock = threading.Lock()
        self._decoder_image: str | None = None  # the id whose embedding the decoding predictor holds
        self._everything_lock = threading.Lock()
        #: one worker thread per kind of work: "encode", "decode", "everything"
        self.pools = {kind: ThreadPoolExecutor(1, thread_name_prefix=f"anymask-{kind}")
                      for kind in ("encode", "decode", "everything")}

    def close(self) -> None:
        """Stop the worker threads (waiting for running work)."""
        for pool in self.pools.values():
            pool.shutdown(wait=True)

    @property
    def name(self) -> str:
        return self.model.spec.name

    def image_id(self, data: bytes) -> str:
        """The id of an uploaded file: the first 24 hex digits of sha256(model name, file bytes)."""
        return hashlib.sha256(self.name.encode() + b"\0" + data).hexdigest()[:24]

    def add_image(self, data: bytes) -> tuple[CachedImage, bool]:
        """Decode and encode an uploaded file (once: the same file again is answered from the cache).

        Returns:
            The cache entry and whether it was already cached.

        Raises:
            ImageError / ImageTooLarge: the file cannot be read, or is too large.
        """
        image_id = self.image_id(data)
        entry = self.cache.get(image_id)
        if entry is not None:
            return entry, True
        with self._encode_lock:  # one image decoded and encoded at a time: bounded memory
            entry = self.cache.get(image_id)
            if entry is not None:
                return entry, True
            rgb = open_upload(data, self.max_pixels)
            start = time.perf_counter()
            embedding = self.encoder.set_image(rgb)
            self.encoder.reset_image()
            entry = CachedImage(image_id, embedding, bytes(data), (time.perf_counter() - start) * 1000)
        if not self.cache.put(entry):
            raise ImageTooLarge(f"the image needs {entry.nbytes} bytes of cache, more than the whole cache "
                                f"({self.cache.max_bytes} bytes)")
        return entry, False

    def get(self, image_id: str) -> CachedImage:
        """The cached image ``image_id``. Raises :class:`UnknownImage` when it is not cached."""
        entry = self.cache.get(image_id)
        if entry is None:
            raise UnknownImage(f"no image with id {image_id!r}: upload it first (POST /v1/images); images are "
                               "dropped from the cache when it is full")
        return entry

    def segment(self, image_id: str, points: Any = None, labels: Any = None, boxes: Any = None,
                mask_input: str | None = None, multimask: bool = True,
                return_logits: bool = False) -> tuple[CachedImage, list[dict[str, Any]], float]:
        """Decode prompts on a cached image.

        Args:
            points: ``(N, 2)`` (x, y) pixels; labels ``(N,)`` 1/0 (default all 1).
            boxes: None, one XYXY box ``(4,)``, or ``(B, 4)`` (one prompt each, sharing the points).
            mask_input: base64 float32 ``(256, 256)`` logits of an earlier answer.
            multimask: 3 candidates per prompt instead of 1.
            return_logits: add ``low_res_logits`` (base64) to each mask.

        Returns:
            The entry, one record per mask (``prompt``, ``index``, ``score``, ``area``, ``bbox`` XYWH,
            ``segmentation`` RLE, maybe ``low_res_logits``) and the decoding time in milliseconds.

        Raises:
            UnknownImage, PromptError: unknown id; malformed or out-of-range prompts.
        """
        entry = self.get(image_id)
        logits_in = _decode_logits(mask_input) if mask_input is not None else None
        box = None if boxes is None else np.asarray(boxes, dtype=np.float64)
        if box is not None and box.ndim == 2 and logits_in is not None:
            logits_in = np.broadcast_to(logits_in[None], (len(box), 1, LOW_RES, LOW_RES))
        start = time.perf_counter()
        with self._decode_lock:
            if self._decoder_image != image_id:  # set_embedding copies the 4 MiB features: once per image
                self.decoder.set_embedding(entry.embedding)
                self._decoder_image = image_id
            masks, scores, low_res = self.decoder.predict(points=points, labels=labels, box=box,
                                                          mask_input=logits_in, multimask=multimask)
        elapsed = (time.perf_counter() - start) * 1000
        if masks.ndim == 3:  # one prompt: make it a batch of one
            masks, scores, low_res = masks[None], scores[None], low_res[None]
        records = []
        for p in range(masks.shape[0]):
            for c in range(masks.shape[1]):
                record = mask_record(masks[p, c], float(scores[p, c]), index=c, include_polygons=False)
                record.pop("bbox_xyxy")
                record["prompt"] = p
                if return_logits:
                    record["low_res_logits"] = _encode_logits(low_res[p, c])
                records.append(record)
        return entry, records, elapsed

    def everything(self, image_id: str, **options: Any) -> tuple[CachedImage, list[dict[str, Any]], float]:
        """Every mask in a cached image (the automatic mask generator; ``options`` are its parameters).

        Returns:
            The entry, SAM's mask records with COCO RLE ``segmentation``, and the time in milliseconds.
        """
        from ..automatic import AutomaticMaskGenerator

        entry = self.get(image_id)
        AutomaticMaskGenerator.check_options(**options)
        with self._everything_lock:
            generator = AutomaticMaskGenerator(self._everything, output_mode="coco_rle", **options)
            start = time.perf_counter()
            records = generator.generate(open_upload(entry.data, self.max_pixels))
            elapsed = (time.perf_counter() - start) * 1000
        keys = ("segmentation", "area", "bbox", "predicted_iou", "stability_score", "point_coords")
        return entry, [{k: r[k] for k in keys} for r in records], elapsed

    def decoder_graph(self, mask_input: bool = True) -> Path:
        """A decoder ONNX graph for the browser (the runtime's cached graph of this model, float32).

        Inputs ``image_embeddings (1, 256, 64, 64)``, ``point_coords (1, N, 2)`` original pixels,
        ``point_labels (1, N)`` (1 / 0 points, 2 / 3 box corners, -1 padding), with ``mask_input`` also
        ``mask_input (1, 1, 256, 256)`` and ``has_mask_input (1,)``, and ``orig_im_size (2,)`` int64; outputs
        ``low_res_masks (1, 4, 256, 256)`` (all four mask tokens: token 0 the single mask, 1-3 the candidates)
        and ``iou_predictions (1, 4)``. The page runs the graph without mask input (it sends no mask prompt):
        the same arithmetic minus the mask-downscaling convolutions.
        """
        from ..runtime import DECODER_FILE, DECODER_NO_MASK_FILE, build_graphs

        return build_graphs(self.model) / (DECODER_FILE if mask_input else DECODER_NO_MASK_FILE)

    def prepared_decoder_graph(self, part: str) -> Path:
        """The two-part decoder the page runs (float32, the runtime's cached graphs; no mask input).

        ``part="prepare"``: ``image_embeddings`` -> ``keys``, ``key_pe`` ``(1, N, 256)``, ``block_values``
        ``(1, 8, N, 16)`` (N = grid cells; 8 heads of 16 channels), ``block_keys`` and ``block_queries``
        ``(1, 8, 16, N)``, ``upscale_base_0`` and ``upscale_base_1`` ``(1, N, 128)``, run once per image;
        ``part="decode"``: ``image_embeddings``, ``point_coords``, ``point_labels``, ``orig_im_size`` and those
        seven -> ``low_res_masks`` ``(B, 4, 256, 256)``, ``iou_predictions`` ``(B, 4)``, the same as
        :meth:`decoder_graph` without mask input with fewer multiply-adds per prompt.
        """
        from ..runtime import DECODER_PREPARE_FILE, DECODER_PREPARED_FILE, build_graphs

        if part not in ("prepare", "decode"):
            raise ValueError(f"unknown decoder part {part!r}")
        return build_graphs(self.model) / (DECODER_PREPARE_FILE if part == "prepare" else DECODER_PREPARED_FILE)


__all__ = ["ImageTooLarge", "SegmentEngine", "UnknownImage", "open_upload"]
