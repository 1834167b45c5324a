"""Systems under the click protocol of :mod:`anymask.evaluation` (benchmark and test code only).

* :class:`ReferenceAdapter`: the official ``SamPredictor`` (MobileSAM's original code) run the way SAM's
  paper evaluates interactive segmentation: three candidates for the first click, the highest predicted
  IoU kept; afterwards one mask per click with the previous low-resolution logits fed back as
  ``mask_input``; a box prompt alone gives one mask.
* :class:`EmbeddingCache`: encoder outputs on disk, so strategy studies re-use one encoder run per image
  (or crop). Each system caches its *own* encoder's output.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from anymask.evaluation import Click
from anymask.fileio import atomic_write_bytes


class ReferenceAdapter:
    """The official ``SamPredictor`` under SAM's interactive protocol (see the module docstring)."""

    def __init__(self, ref, cache: "EmbeddingCache | None" = None, share: bool = False) -> None:
        """``share``: take the image embedding from anymask's encoder (via ``cache``) instead of running the
        reference encoder (the two agree to ~1e-4 on the same weights; the decoder and protocol stay the
        official ones)."""
        self.ref, self.cache, self.share = ref, cache, share
        self.points: list[tuple[float, float]] = []
        self.labels: list[int] = []
        self.logits: np.ndarray | None = None

    def set_image(self, image: np.ndarray, key: str) -> None:
        if self.share and self.cache is not None:
            embedding = self.cache.embed(image, key)
            self.ref.reset_image()
            self.ref.features = torch.from_numpy(np.asarray(embedding.features, dtype=np.float32))
            self.ref.original_size, self.ref.input_size = embedding.original_size, embedding.input_size
            self.ref.is_image_set = True
            return
        path = None if self.cache is None else self.cache.path("reference", key)
        if path is not None and path.exists():
            with np.load(path) as data:
                self.ref.reset_image()
                self.ref.features = torch.from_numpy(data["features"])
                self.ref.original_size = tuple(int(v) for v in data["original_size"])
                self.ref.input_size = tuple(int(v) for v in data["input_size"])
                self.ref.is_image_set = True
            return
        self.ref.set_image(image)
        if path is not None:
            buffer = io.BytesIO()
            np.savez(buffer, features=self.ref.features.numpy(), original_size=np.array(self.ref.original_size),
                     input_size=np.array(self.ref.input_size))
            atomic_write_bytes(path, buffer.getvalue())

    def new_object(self) -> None:
        self.points, self.labels, self.logits = [], [], None

    def add_click(self, click: Click) -> np.ndarray:
        self.points.append((click.x, click.y))
        self.labels.append(int(click.positive))
        first = len(self.points) == 1
        masks, scores, logits = self.ref.predict(
            point_coords=np.array(self.points, dtype=np.float64),
            point_labels=np.array(self.labels),
            mask_input=None if first else self.logits[None],
            multimask_output=first,
        )
        best = int(np.argmax(scores))
        self.logits = logits[best]
        return masks[best]

    def box_mask(self, box: np.ndarray) -> np.ndarray:
        masks, _, _ = self.ref.predict(box=np.asarray(box, dtype=np.float64), multimask_output=False)
        return masks[0]


class EmbeddingCache:
    """Image and crop embeddings of anymask's encoder (``.npz``) under ``folder/<system>/``."""

    def __init__(self, folder: Path, predictor) -> None:
        self.folder, self.predictor = Path(folder), predictor
        self.encoder_runs = 0
        self._crop_predictor = None

    def path(self, system: str, key: str) -> Path:
        (self.folder / system).mkdir(parents=True, exist_ok=True)
        return self.folder / system / f"{key}.npz"

    def embed(self, image: np.ndarray, key: str):
        """The embedding of a whole image (anymask's encoder), from disk when it is there."""
        from anymask.predictor import ImageEmbedding

        path = self.path("anymask", key)
        if path.exists():
            return ImageEmbedding.load(path)
        self.encoder_runs += 1
        embedding = self.predictor.set_image(image)
        embedding.save(path)
        return embedding

    def encode_crop(self, crop: np.ndarray):
        """The embedding of a crop (keyed by its pixels), from disk when it is there."""
        from anymask import Predictor

        key = f"crop-{crop.shape[1]}x{crop.shape[0]}-{hashlib.sha1(crop.tobytes()).hexdigest()[:20]}"
        path = self.path("anymask", key)
        if path.exists():
            from anymask.predictor import ImageEmbedding

            return ImageEmbedding.load(path)
        if self._crop_predictor is None:
            self._crop_predictor = Predictor(self.predictor.model, self.predictor.spec)
        self.encoder_runs += 1
        embedding = self._crop_predictor.set_image(crop)
        embedding.save(path)
        return embedding
