"""``torchvision.transforms.functional`` stand-in: the two functions the reference's predictor calls."""

import numpy as np
from PIL import Image

from . import InterpolationMode  # noqa: F401 (timm imports it from here)


def to_pil_image(pic) -> Image.Image:
    """An ``(H, W, 3)`` uint8 array as a PIL image."""
    return Image.fromarray(np.asarray(pic))


def resize(img: Image.Image, size, interpolation=None, antialias=None) -> Image.Image:
    """``size = (h, w)``: PIL's bilinear resize, as torchvision does for a PIL image."""
    h, w = size
    return img.resize((w, h), Image.BILINEAR)


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise NotImplementedError(f"{name} is not in anymask's torchvision stand-in")

    return missing
