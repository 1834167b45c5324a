"""A predictor that runs exported graphs in onnxruntime and never imports torch.

:class:`OnnxPredictor` is for deployments that want the smallest footprint: it needs numpy, OpenCV, Pillow and
onnxruntime, and a folder written once by ``anymask export MODEL -o DIR`` (which does need torch, to export):

    >>> from anymask.onnx_predictor import OnnxPredictor
    >>> predictor = OnnxPredictor("onnx/")            # encoder, decoders and model.json from `anymask export`
    >>> embedding = predictor.set_image("photo.jpg")   # an ImageEmbedding: save() it, set_embedding() it later
    >>> masks, scores, logits = predictor.predict(points=[(320, 240)], labels=[1])

It runs the same graphs as ``Predictor(load_model(...), backend="onnx")`` (the image side of the decoder prepared
once per image, prompts decoded two at a time) and returns the same arrays, with the same conventions: points
``(x, y)`` pixels of the original image, boxes XYXY, masks ``(C, H, W)`` bool (``(B, C, H, W)`` for a batch),
scores ``(C,)``, low-resolution logits ``(C, 256, 256)``. The difference is memory: ``import torch`` alone is
about 200 MB resident (the CPU build; 500 MB the CUDA build), and the torch model holds a second copy of the
weights. Measured peaks are in ``docs/speed.md``.

Limits: images are padded to the square input (SAM's default); a ``mask_input`` needs points or a box with it
(the decoder graph's contract, see ``docs/onnx.md``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .embedding import ImageEmbedding
from .errors import ModelError, PromptError
from .images import load_image, resize_to_input, resized_shape
from .masks import upscale_logits
from .prompts import Prompts, check_prompts
from .runtime import DECODE_CHUNK, PREDICTOR_GRAPHS, OnnxRunner, onnx_prompt_arrays

__all__ = ["OnnxPredictor"]


class OnnxPredictor:
    """Promptable segmentation on exported ONNX graphs, without torch.

    Args:
        folder: a folder written by ``anymask export`` (``model.json``, ``encoder.onnx`` and the decoder
            graphs it lists under ``runtime_graphs``).
        threads: onnxruntime intra-op threads (default: the CPUs this process may use, at most 8).

    Raises:
        ModelError: the folder is missing, incomplete, or from another anymask graph revision.
    """

    def __init__(self, folder: str | os.PathLike, threads: int | None = None) -> None:
        folder = Path(folder)
        meta_path = folder / "model.json"
        if not meta_path.is_file():
            raise ModelError(f"{folder} holds no model.json: write the folder with `anymask export MODEL -o {folder}`")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{meta_path} is not readable JSON: {exc}") from None
        graphs = meta.get("runtime_graphs")
        if not isinstance(graphs, dict) or sorted(graphs) != sorted(PREDICTOR_GRAPHS):
            raise ModelError(f"{folder} was exported without the predictor's decoder graphs (or by another anymask "
                             "version): export it again with `anymask export`")
        missing = [name for name in ["encoder.onnx", *graphs.values()] if not (folder / name).is_file()]
        if missing:
            raise ModelError(f"{folder} lacks {', '.join(missing)}: export it again with `anymask export`")
        self.model_name: str = meta["model"]
        self.image_size: int = int(meta["image_size"])
        self.resize_method: str = meta["resize"]
        self.mask_threshold: float = float(meta["mask_threshold"])
        self.low_res_size: tuple[int, int] = tuple(meta["low_res_size"])  # type: ignore[assignment]
        if threads is None:
            threads = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
        self._runner = OnnxRunner.from_folder(folder, threads, graphs)
        self._embedding: ImageEmbedding | None = None
        self._prepared: dict[str, np.ndarray] | None = None

    @classmethod
    def from_pretrained(cls, name: str = "mobile_sam", quantize: str | None = None, threads: int | None = None,
                        *, download: bool = True, progress: bool = True) -> "OnnxPredictor":
        """The predictor of a catalogued model, on the runtime graphs anymask caches for it.

        Once the graphs of ``load_model(name)`` are in the cache (``<anymask home>/onnx``, written by the first
        use of this method, of ``Predictor(load_model(name))`` with the onnx backend, or of ``anymask segment``),
        this imports no torch and reads no checkpoint: it opens the cached graphs. Otherwise it loads the model
        (fetching and verifying its weights like :func:`anymask.load_model`; this needs torch) and exports the
        graphs once. The results are those of ``Predictor(load_model(name), backend="onnx")``.

        Args:
            name: a model name or alias (``mobile_sam``, ``vit_b``, ...).
            quantize: ``None`` (float32) or ``"int8"`` (the encoder's weight MatMuls; backend ``"onnx-int8"``).
            threads: onnxruntime intra-op threads (default as in the constructor).
            download, progress: as :func:`anymask.load_model`, if the weights are needed.

        Raises:
            ModelError: unknown model or ``quantize``; WeightsError: the weights cannot be obtained.
        """
        from .runtime import build_graphs, find_named_graphs

        if quantize not in (None, "int8"):
            raise ModelError(f"quantize must be None or 'int8', not {quantize!r}")
        folder = find_named_graphs(name, quantize)
        if folder is None:
            from .models import load_model

            folder = build_graphs(load_model(name, download=download, progress=progress), quantize)
        return cls(folder, threads)

    @classmethod
    def cached(cls, name: str, backend: str = "auto", device: str = "cpu", threads: int | None = None
               ) -> "OnnxPredictor | None":
        """An OnnxPredictor on the cached graphs of ``load_model(name)`` when ``Predictor(load_model(name,
        device=device), backend=backend)`` would run those graphs (an onnx backend on the CPU; ``"auto"`` as
        :func:`anymask.runtime.resolve_backend` decides it) and an earlier run cached them; else None. Imports no
        torch. For programs that run a catalogued model as it is (no ``checkpoint=``): ``anymask segment`` and
        ``anymask batch embed|boxes`` use it to start without torch.
        """
        import importlib.util

        from .runtime import BACKEND_ENV, find_named_graphs

        if str(device) != "cpu":
            return None
        if backend == "auto":
            backend = os.environ.get(BACKEND_ENV, "").strip() or "auto"
        if backend == "auto" and all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
            backend = "onnx"
        if backend not in ("onnx", "onnx-int8"):
            return None
        folder = find_named_graphs(name, "int8" if backend == "onnx-int8" else None)
        return None if folder is None else cls(folder, threads)

    # ---------------------------------------------------------------------------------------------------
    # Image
    # ---------------------------------------------------------------------------------------------------

    def set_image(self, image: Any) -> ImageEmbedding:
        """Encode ``image`` (a path, a ``PIL.Image`` or an ``(H, W, 3)`` uint8 RGB array) for :meth:`predict`.

        Returns:
            The :class:`~anymask.embedding.ImageEmbedding` (a copy), which can be saved and given back with
            :meth:`set_embedding`, here or to :class:`anymask.Predictor`.
        """
        rgb = load_image(image)
        resized = resize_to_input(rgb, self.image_size, self.resize_method)
        self._prepared = None  # before the encoder runs: see anymask.Predictor.set_image
        features = self._runner.encode(resized)
        self._embedding = ImageEmbedding(features=features, original_size=(int(rgb.shape[0]), int(rgb.shape[1])),
                                         input_size=(int(resized.shape[0]), int(resized.shape[1])),
                                         model=self.model_name)
        self._prepared = None
        return self.embedding

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Use an embedding made earlier (by ``set_image`` here or in :class:`anymask.Predictor`, or
        :meth:`ImageEmbedding.load`) without running the encoder.

        Raises:
            ModelError: the embedding is malformed, was made by another model, or is not of a square-padded
                image (the grid of this folder's decoders).
        """
        problem = embedding.problem()
        if problem is None and embedding.model != self.model_name:
            problem = f"made by {embedding.model!r}, this predictor runs {self.model_name!r}"
        grid = tuple(4 * side for side in np.asarray(embedding.features).shape[-2:])
        if problem is None and grid != self.low_res_size:
            problem = f"features grid {tuple(np.asarray(embedding.features).shape[-2:])} is not the square input's"
        expected = resized_shape(*embedding.original_size, self.image_size)
        if problem is None and tuple(embedding.input_size) != expected:
            problem = f"input_size {embedding.input_size}, expected {expected} for {embedding.original_size}"
        if problem:
            raise ModelError(f"embedding does not fit this predictor: {problem}")
        self._embedding = ImageEmbedding(features=np.array(embedding.features, dtype=np.float32),
                                         original_size=tuple(embedding.original_size),  # type: ignore[arg-type]
                                         input_size=tuple(embedding.input_size),  # type: ignore[arg-type]
                                         model=embedding.model)
        self._prepared = None

    @property
    def embedding(self) -> ImageEmbedding:
        """A copy of the current image's embedding. Raises :class:`PromptError` if no image is set."""
        self._need_image()
        e = self._embedding
        return ImageEmbedding(features=e.features.copy(), original_size=e.original_size,  # type: ignore[union-attr]
                              input_size=e.input_size, model=e.model)  # type: ignore[union-attr]

    def reset_image(self) -> None:
        """Forget the current image."""
        self._embedding = self._prepared = None

    # ---------------------------------------------------------------------------------------------------
    # Prompts
    # ---------------------------------------------------------------------------------------------------

    def predict(self, points: Any = None, labels: Any = None, box: Any = None, mask_input: Any = None,
                multimask: bool = True, return_logits: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for prompts on the current image: as :meth:`anymask.Predictor.predict`.

        Returns:
            ``(masks, scores, low_res_logits)``: ``(C, H, W)`` bool (float32 logits with ``return_logits``),
            ``(C,)``, ``(C, 256, 256)``; with a batch of B prompts ``(B, C, H, W)``, ``(B, C)``,
            ``(B, C, 256, 256)``. C is 3 with ``multimask`` else 1.
        """
        prompts = self._check(points, labels, box, mask_input)
        low, scores = self._decode(prompts, multimask)
        height, width = self._embedding.original_size  # type: ignore[union-attr]
        masks = np.empty((*low.shape[:2], height, width), dtype=np.float32 if return_logits else bool)
        for i in range(low.shape[0]):
            for j in range(low.shape[1]):
                logits = self._upsample(low[i, j])
                masks[i, j] = logits if return_logits else logits > self.mask_threshold
        if not prompts.batched:
            return masks[0], scores[0], low[0]
        return masks, scores, low

    def predict_low_res(self, points: Any = None, labels: Any = None, box: Any = None, mask_input: Any = None,
                        multimask: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Low-resolution logits ``(B, C, 256, 256)`` and scores ``(B, C)`` only (always batch-first)."""
        return self._decode(self._check(points, labels, box, mask_input), multimask)

    def masks_from_low_res(self, low_res_logits: Any, return_logits: bool = False) -> np.ndarray:
        """Upsample ``(..., 256, 256)`` logits to the current image ``(..., H, W)``: bool, or float32 logits."""
        self._need_image()
        size = self._embedding.original_size  # type: ignore[union-attr]
        low = np.asarray(low_res_logits, dtype=np.float32)
        maps = low.reshape(-1, *low.shape[-2:])
        out = np.empty((len(maps), *size), dtype=np.float32 if return_logits else bool)
        for i, logits in enumerate(maps):
            full = self._upsample(logits)
            out[i] = full if return_logits else full > self.mask_threshold
        return out.reshape(*low.shape[:-2], *size)

    # ---------------------------------------------------------------------------------------------------

    def _need_image(self) -> None:
        if self._embedding is None:
            raise PromptError("no image is set: call set_image() first")

    def _check(self, points: Any, labels: Any, box: Any, mask_input: Any) -> Prompts:
        self._need_image()
        prompts = check_prompts(points, labels, box, mask_input,
                                image_size=self._embedding.original_size,  # type: ignore[union-attr]
                                low_res_size=self.low_res_size)
        if prompts.points is None and prompts.boxes is None:
            raise PromptError("OnnxPredictor needs points or a box (a mask_input alone is not a prompt of the "
                              "decoder graph); use anymask.Predictor for mask-only prompts")
        return prompts

    def _decode(self, prompts: Prompts, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        coords, labels = onnx_prompt_arrays(prompts)
        embedding = self._embedding
        prepared = None
        if prompts.mask_input is None:
            if self._prepared is None:
                self._prepared = self._runner.prepare(embedding.features)  # type: ignore[union-attr]
            prepared = self._prepared
        selected = slice(1, None) if multimask else slice(0, 1)
        out_low = out_iou = None  # filled chunk by chunk: only the selected masks are kept, in one array
        for start in range(0, len(coords), DECODE_CHUNK):
            part = slice(start, start + DECODE_CHUNK)
            masks = None if prompts.mask_input is None else prompts.mask_input[part]
            low, iou = self._runner.decode(embedding.features, coords[part], labels[part], masks,  # type: ignore
                                           embedding.original_size, prepared=prepared)  # type: ignore[union-attr]
            low, iou = low[:, selected], iou[:, selected]
            if out_low is None:
                out_low = np.empty((len(coords), *low.shape[1:]), dtype=np.float32)
                out_iou = np.empty((len(coords), iou.shape[1]), dtype=np.float32)
            out_low[part], out_iou[part] = low, iou
        return out_low, out_iou  # type: ignore[return-value]

    def _upsample(self, logits: np.ndarray) -> np.ndarray:
        """One ``(256, 256)`` map -> ``(H, W)`` logits (as :meth:`anymask.Predictor.upscale`)."""
        embedding = self._embedding
        return upscale_logits(logits, self.image_size // logits.shape[-1], embedding.input_size,  # type: ignore
                              embedding.original_size)  # type: ignore[union-attr]
