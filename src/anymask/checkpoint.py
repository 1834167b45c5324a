"""Safe checkpoint loading: tensors only, never code.

``.safetensors`` files are read with the optional ``safetensors`` package; anything else with
``torch.load(path, map_location="cpu", weights_only=True)``, which refuses pickles that would build
arbitrary objects (and so run code) while loading.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["load_state_dict"]


def _unwrap(obj: Any) -> Any:
    """Remove up to two levels of ``{"model": ...}`` / ``{"state_dict": ...}`` wrapping."""
    import torch

    for _ in range(2):
        if not isinstance(obj, dict) or all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        key = next((k for k in ("model", "state_dict") if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        obj = obj[key]
    return obj


def _unpickling_detail(message: str) -> str:
    """The specific reason inside torch's long "Weights only load failed" message."""
    keep = []
    for paragraph in re.split(r"\n\s*\n", message):
        text = " ".join(paragraph.split())
        if not text or text.startswith(("Weights only load failed", "Check the documentation")):
            continue
        text = re.sub(r"^.*WeightsUnpickler error:\s*", "", text)
        if text:
            keep.append(text)
    return "; ".join(keep) or "unsupported content"


def _torch_load(file: Path) -> Any:
    """``torch.load`` with ``weights_only=True``, memory-mapped when the file's format allows it.

    Mapped, the tensors are pages of the file, read from the page cache when first touched, never copied into the
    process heap: :func:`anymask.load_model` makes them the network's own parameters (no second copy; see
    :func:`mapped_unwritten` for how anymask knows they are still the file's bytes).
    """
    import torch

    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
    return torch.load(file, map_location="cpu", weights_only=True)  # legacy (non-zip) format: no mmap


def load_state_dict(path: str | os.PathLike) -> dict[str, "torch.Tensor"]:
    """Load a checkpoint's state dict without running any code from the file.

    ``.safetensors`` files are read with the optional ``safetensors`` package; anything else with
    ``torch.load(path, map_location="cpu", weights_only=True)``. A top-level ``{"model": sd}`` or
    ``{"state_dict": sd}`` wrapper is removed.

    Raises:
        WeightsError: the file is missing, truncated or corrupt; it holds objects other than tensors
            (such a pickle is refused, never run); it holds values that are not tensors; or it is a
            ``.safetensors`` file and ``safetensors`` is not installed.
    """
    import torch

    file = Path(path)
    if not file.is_file():
        raise WeightsError(f"checkpoint {file} does not exist or is not a file")
    if file.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(
                f"{file} is a .safetensors file and the 'safetensors' package is not installed "
                "(pip install safetensors)"
            ) from None
        try:
            obj: Any = load_file(str(file), device="cpu")
        except Exception as exc:
            raise WeightsError(f"{file} is not a readable safetensors file (truncated or corrupt?): {exc}") from None
    else:
        if file.stat().st_size == 0:
            raise WeightsError(f"{file} is empty, not a checkpoint")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                obj = _torch_load(file)
        except pickle.UnpicklingError as exc:
            message = str(exc)
            if "weights only" in message.lower() or "weights_only" in message.lower():
                raise WeightsError(
                    f"{file} is not a plain tensor checkpoint: it asks for objects that safe loading does "
                    f"not allow, so it was refused and nothing in it was run ({_unpickling_detail(message)})"
                ) from None
            raise WeightsError(f"{file} is not a readable checkpoint (truncated or corrupt?): {exc}") from None
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
                AttributeError, zipfile.BadZipFile, UnicodeDecodeError, AssertionError) as exc:
            raise WeightsError(
                f"{file} is not a readable checkpoint (truncated or corrupt?): {exc or type(exc).__name__}"
            ) from None
    obj = _unwrap(obj)
    if not isinstance(obj, dict):
        raise WeightsError(f"{file} does not hold a state dict (found {type(obj).__name__})")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise WeightsError(f"{file}: state dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{file}: state dict entry {key!r} is a {type(value).__name__}, not a tensor")
    return obj


_SMAPS_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ [0-9a-f]+ ([0-9a-f]+):([0-9a-f]+) (\d+)\s*(.*)$")


def mapped_unwritten(path: str | os.PathLike, tensors: Any) -> bool:
    """Whether every one of ``tensors`` lies in this process's mappings of the file ``path`` (a memory-mapped
    :func:`load_state_dict`) and no page of those mappings has been written to since.

    A write to a privately mapped page gives the process its own copy of the page, which ``/proc/self/smaps``
    counts as ``Anonymous``: with none, the tensors hold exactly the file's bytes. Linux only: False elsewhere,
    or when anything cannot be read.
    """
    try:
        info = os.stat(path)
        real = os.path.realpath(path)
        with open("/proc/self/smaps") as smaps:
            text = smaps.read()
    except OSError:
        return False
    mappings: list[list[int]] = []  # [start, end, anonymous kB] of the file's mappings
    current: list[int] | None = None
    for line in text.splitlines():
        header = _SMAPS_HEADER.match(line)
        if header:
            start, end, major, minor, inode, name = header.groups()
            # the device and inode, or the path where they differ from stat()'s (overlay file systems)
            same_file = name == real or int(inode) == info.st_ino and (int(major, 16), int(minor, 16)) == (
                os.major(info.st_dev), os.minor(info.st_dev))
            current = [int(start, 16), int(end, 16), 0] if same_file else None
            if current is not None:
                mappings.append(current)
        elif current is not None and line.startswith("Anonymous:"):
            current[2] = int(line.split()[1])
    used = set()
    for tensor in tensors:
        storage = tensor.untyped_storage()
        begin, size = storage.data_ptr(), storage.nbytes()
        if size == 0:
            continue
        holder = next((i for i, (start, end, _) in enumerate(mappings) if start <= begin and begin + size <= end), None)
        if holder is None:
            return False
        used.add(holder)
    return all(mappings[i][2] == 0 for i in used)
