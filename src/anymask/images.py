"""Reading images and normalising them to ``(H, W, 3) uint8`` RGB.

:func:`load_image` accepts a file path, a :class:`PIL.Image.Image` or a numpy array and always returns a
new, C-contiguous ``(H, W, 3) uint8`` array in RGB order. Anything it cannot read or does not accept raises
:class:`anymask.errors.ImageError` with a short reason (and the path, for files).

Conversion rules
----------------

Files (``str`` or ``os.PathLike``)
    * Opened with Pillow and fully decoded, so truncated or corrupt files fail at once.
      A missing file, a directory, a file that is not an image, truncated or corrupt data: ``ImageError``.
    * Decompression bombs (more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``): ``ImageError``.
      Pillow's ``DecompressionBombWarning`` is turned into an error, not only its ``DecompressionBombError``.
      (Pillow checks this when a file is opened; a PIL image passed in is already in memory.)
    * The EXIF orientation tag is applied (``PIL.ImageOps.exif_transpose``): the array is the image as a
      viewer shows it, e.g. orientation 6 gives a ``(W, H, 3)`` array of the stored ``H x W`` pixels.
    * Multi-frame files (animated GIF/PNG/WebP, multi-page TIFF): the first frame.
    * Embedded ICC colour profiles are not applied; the stored values are used as they are.

PIL images
    * Treated like an opened file: fully loaded, EXIF orientation applied, then converted by mode. The caller's
      image is not modified.

Modes (files and PIL images)
    * ``RGB``: as is.
    * ``L`` (gray), ``1`` (bilevel: 0 / 255): the gray value replicated to the three channels.
    * ``LA``, ``RGBA``, ``RGBa``, ``RGBX``: alpha (or padding) is dropped; the colour is what
      ``Image.convert("RGB")`` gives. For ``LA``, ``RGBA`` and ``RGBX`` that is the stored colour, unchanged
      (not composited onto any background). For premultiplied ``RGBa`` it is the un-premultiplied colour.
    * ``P``, ``PA`` (palette): looked up in the palette; transparency is dropped.
    * ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` (16-bit gray, e.g. a 16-bit gray PNG): divided by 257 and
      rounded to the nearest integer (65535 -> 255), then replicated to three channels.
    * ``I`` (32-bit signed integer): treated as 16-bit data (divided by 257 and rounded); values below 0 or
      above 65535 are an ``ImageError``.
    * ``F`` (32-bit float): values must lie in ``[0, 1]``; multiplied by 255 and rounded. NaN, infinity or
      values outside ``[0, 1]``: ``ImageError``.
    * ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: converted to RGB by Pillow (``Image.convert("RGB")``).
    * Any other mode (e.g. ``La``): ``ImageError`` naming the mode.
    * 16-bit *colour* PNGs are opened by Pillow as 8-bit ``RGB``/``RGBA`` (Pillow keeps the high byte of each
      sample); the rules above then apply.

Numpy arrays (channels last)
    * Shapes: ``(H, W)`` gray, ``(H, W, 1)`` gray, ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA (alpha dropped,
      colour unchanged). Gray is replicated to three channels.
    * dtypes: ``uint8`` as is; ``uint16`` divided by 257 and rounded (65535 -> 255); ``bool``: True -> 255,
      False -> 0; ``float32``/``float64``: values must lie in ``[0, 1]``, multiplied by 255 and rounded
      (NaN, infinity or out of range: ``ImageError``).
    * Any other dtype (int32, float16, ...), any other shape (channel-first ``(3, H, W)`` arrays give
      "channels last expected"), or a zero-sized dimension: ``ImageError``.
    * The result never shares memory with the caller's array.

Rounding is to the nearest integer (``np.rint``; ties to even, which only occur for float input).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "load_image"]

#: Lower-case file name suffixes (with the dot) that :func:`load_image` reads; for scanning directories.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".png",
        ".apng",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
    }
)

#: What :func:`load_image` accepts.
ImageSource = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]

# Modes that Pillow converts to RGB itself (dropping alpha/padding, looking up palettes, colour conversions).
_PIL_CONVERT_MODES = frozenset(
    {"1", "L", "LA", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}
)
_PIL_16BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def load_image(source: ImageSource) -> np.ndarray:
    """Read ``source`` and return it as a new C-contiguous ``(H, W, 3) uint8`` RGB array.

    Args:
        source: a file path (``str`` or ``os.PathLike``), a ``PIL.Image.Image`` or a numpy array
            (channels last). See the module docstring for the conversion rules.

    Returns:
        ``(H, W, 3) uint8`` array, rows first (``array[y, x]``), RGB order; never a view of the input.

    Raises:
        ImageError: the file cannot be read or decoded, or the mode, dtype or shape is not accepted.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, what="array")
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source, what="PIL image")
    if isinstance(source, (str, os.PathLike)):
        return _load_file(Path(source))
    raise ImageError(
        f"unsupported image source of type {type(source).__name__}: "
        "expected a file path, a PIL image or a numpy array"
    )


# ----------------------------------------------------------------------------------------------- files


def _load_file(path: Path) -> np.ndarray:
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file")
    with warnings.catch_warnings():
        # A decompression bomb warning is an error here: such an image is far too large to segment anyway.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as opened:
                return _pil_to_rgb(opened, what=str(path))
        except ImageError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageError(f"{path}: image too large (possible decompression bomb): {exc}") from exc
        except Image.UnidentifiedImageError as exc:
            raise ImageError(f"{path}: not a recognised image file") from exc
        except PermissionError as exc:
            raise ImageError(f"{path}: permission denied") from exc
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file, not a bug of ours
            reason = str(exc) or type(exc).__name__
            raise ImageError(f"{path}: cannot decode image: {reason}") from exc


# ------------------------------------------------------------------------------------------ PIL images


def _pil_to_rgb(image: Image.Image, *, what: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Pillow warns when a palette image with byte transparency is converted to RGB; we drop it on purpose.
        warnings.filterwarnings("ignore", message="Palette images with Transparency", category=UserWarning)
        try:
            image.load()  # full decode: truncated/corrupt data fails here
            image = ImageOps.exif_transpose(image)  # a new image; the caller's one is left alone
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageError(f"{what}: image too large (possible decompression bomb): {exc}") from exc
        except Exception as exc:  # noqa: BLE001
            reason = str(exc) or type(exc).__name__
            raise ImageError(f"{what}: cannot decode image: {reason}") from exc
        mode = image.mode
        if image.width == 0 or image.height == 0:
            raise ImageError(f"{what}: empty image ({image.width}x{image.height})")
        if mode == "RGB":
            return np.array(image, dtype=np.uint8, order="C", copy=True)
        if mode in _PIL_CONVERT_MODES:
            return np.array(image.convert("RGB"), dtype=np.uint8, order="C", copy=True)
        if mode in _PIL_16BIT_MODES:
            return _gray_to_rgb(_from_uint16(np.asarray(image).astype(np.uint32)))
        if mode == "I":
            values = np.asarray(image)
            low, high = int(values.min()), int(values.max())
            if low < 0 or high > 65535:
                raise ImageError(
                    f"{what}: 32-bit integer image with values in [{low}, {high}]; "
                    "only 0..65535 (16-bit data) is accepted"
                )
            return _gray_to_rgb(_from_uint16(values.astype(np.uint32)))
        if mode == "F":
            return _gray_to_rgb(_from_float(np.asarray(image), what=what))
    raise ImageError(f"{what}: unsupported image mode {mode!r}")


# -------------------------------------------------------------------------------------------- arrays


def _array_to_rgb(array: np.ndarray, *, what: str) -> np.ndarray:
    if array.ndim == 2:
        channels = None
    elif array.ndim == 3:
        channels = array.shape[2]
        if channels not in (1, 3, 4):
            hint = (
                "; channels last expected, got what looks like channels first"
                if array.shape[0] in (1, 3, 4)
                else "; channels last expected"
            )
            raise ImageError(
                f"{what}: unsupported shape {tuple(array.shape)}: expected (H, W), (H, W, 1), (H, W, 3) "
                f"or (H, W, 4){hint}"
            )
    else:
        raise ImageError(
            f"{what}: unsupported shape {tuple(array.shape)}: expected (H, W), (H, W, 1), (H, W, 3) "
            "or (H, W, 4) (channels last expected)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{what}: empty image of shape {tuple(array.shape)}")

    dtype = array.dtype
    if dtype == np.bool_:
        values = np.where(array, np.uint8(255), np.uint8(0))
    elif dtype.kind == "u" and dtype.itemsize == 1:
        values = array
    elif dtype.kind == "u" and dtype.itemsize == 2:  # either byte order
        values = _from_uint16(array.astype(np.uint32))
    elif dtype.kind == "f" and dtype.itemsize in (4, 8):
        values = _from_float(array, what=what)
    else:
        raise ImageError(
            f"{what}: unsupported dtype {dtype}: expected uint8, uint16, bool, float32 or float64"
        )

    if channels is None:
        return _gray_to_rgb(values)
    if channels == 1:
        return _gray_to_rgb(values[:, :, 0])
    return np.array(values[:, :, :3], dtype=np.uint8, order="C", copy=True)


# ---------------------------------------------------------------------------------------------- helpers


def _from_uint16(values: np.ndarray) -> np.ndarray:
    """16-bit values (held in a wider unsigned dtype) -> uint8, ``round(v / 257)``.

    ``257`` is odd, so ``v / 257`` never ends in exactly ``.5`` and ``(v + 128) // 257`` is the exact rounding.
    """
    return ((values + 128) // 257).astype(np.uint8)


def _from_float(values: np.ndarray, *, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ImageError(f"{what}: float image contains NaN or infinity")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise ImageError(f"{what}: float image values must lie in [0, 1], got [{low:g}, {high:g}]")
    return np.rint(values * 255.0).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    out = np.empty(gray.shape + (3,), dtype=np.uint8)
    out[...] = gray[:, :, None]
    return out


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Shape ``(h, w)`` of an image resized so that its longer side is ``long_side`` (aspect kept).

    Rounds as the original SAM does; a side that would round to 0 (aspect ratios beyond 2 * long_side : 1)
    is kept at 1 pixel.
    """
    scale = long_side / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_to_input(image: np.ndarray, long_side: int, method: str = "bilinear") -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB resized so that its longer side is ``long_side`` (aspect kept), uint8.

    ``method``: ``"bilinear"`` (PIL, as SAM and MobileSAM resize) or ``"area"`` (OpenCV ``INTER_AREA``, as
    LiteMedSAM). This is the input of the exported encoder graph.
    """
    h, w = resized_shape(image.shape[0], image.shape[1], long_side)
    if method == "area":
        import cv2

        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return np.array(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
