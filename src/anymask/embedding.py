"""The image embedding: the encoder's output for one image, kept, saved and given back without the encoder.

:class:`ImageEmbedding` is what ``Predictor.set_image`` (and ``OnnxPredictor.set_image``) returns and what
``set_embedding`` takes; ``save`` / ``load`` write and read it as a ``.npz`` file (numpy only, no pickle), so
embeddings made on one machine can be decoded on another, with or without torch.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .errors import ModelError
from .fileio import atomic_write_bytes

__all__ = ["ImageEmbedding"]


@dataclass
class ImageEmbedding:
    """The encoder's output for one image, enough to decode prompts without the encoder.

    Attributes:
        features: ``(1, 256, 64, 64)`` float32 image embedding, or ``(1, 256, gh, gw)`` for an image encoded
            without padding to the square input (see the module docstring).
        original_size: ``(H, W)`` of the image given to :meth:`Predictor.set_image`.
        input_size: ``(h, w)`` of the image after resizing, before padding to the model's square input.
        model: registry name of the model that produced it.
    """

    features: np.ndarray
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    model: str

    def save(self, path: str | os.PathLike) -> Path:
        """Write the embedding to ``path`` (a ``.npz`` file, written atomically) and return the path."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            features=np.asarray(self.features, dtype=np.float32),
            original_size=np.asarray(self.original_size, dtype=np.int64),
            input_size=np.asarray(self.input_size, dtype=np.int64),
            model=np.asarray(self.model),
            anymask_version=np.asarray(__version__),
        )
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ImageEmbedding":
        """Read an embedding written by :meth:`save`.

        Raises:
            ModelError: the file is missing, not an embedding file, or malformed.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                if not isinstance(data, np.lib.npyio.NpzFile):
                    raise ValueError("not an .npz archive")
                embedding = cls(
                    features=np.array(data["features"], dtype=np.float32),
                    original_size=tuple(int(v) for v in data["original_size"]),  # type: ignore[arg-type]
                    input_size=tuple(int(v) for v in data["input_size"]),  # type: ignore[arg-type]
                    model=str(data["model"]),
                )
        except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{path} is not an anymask embedding file: {exc}") from None
        problem = embedding.problem()
        if problem:
            raise ModelError(f"{path} holds a malformed embedding: {problem}")
        return embedding

    def problem(self) -> str | None:
        """What is inconsistent in this embedding, or None when its shapes and sizes make sense."""
        if self.features.ndim != 4 or self.features.shape[:2] != (1, 256):
            return f"features of shape {self.features.shape}, expected (1, 256, h, w)"
        for name, size in (("original_size", self.original_size), ("input_size", self.input_size)):
            if len(size) != 2 or min(size) < 1:
                return f"{name} {size} is not a (height, width) pair of positive integers"
        return None
