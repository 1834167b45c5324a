"""anymask: promptable image segmentation in the Segment Anything family.

    >>> from anymask import load_model, Predictor
    >>> predictor = Predictor(load_model("mobile_sam"))
    >>> predictor.set_image("photo.jpg")
    >>> masks, scores, logits = predictor.predict(points=[(320, 240)], labels=[1])

Public names are imported lazily (PEP 562), so ``import anymask`` and ``anymask --help`` stay fast and do
not load torch until a model is used.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from .errors import AnymaskError, ImageError, ModelError, OutputError, PromptError, WeightsError

__version__ = "0.1.0"

_LAZY = {
    "load_image": "images",
    "ModelSpec": "models",
    "get_model_spec": "models",
    "list_models": "models",
    "load_model": "models",
    "register_model": "models",
    "ImageEmbedding": "embedding",
    "Predictor": "predictor",
}

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'anymask' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "__version__",
    "AnymaskError",
    "ImageError",
    "ModelError",
    "OutputError",
    "PromptError",
    "WeightsError",
    *_LAZY,
]
