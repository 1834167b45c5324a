"""Helpers shared by the command modules: the model options, parsing numbers, checking output directories."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..errors import OutputError, PromptError


def parse_numbers(text: str, counts: tuple[int, ...], what: str) -> list[float]:
    """``"1,2.5,3"`` -> ``[1.0, 2.5, 3.0]``; a :class:`PromptError` unless there are ``counts`` numbers."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise PromptError(f"bad {what} {text!r}: expected {' or '.join(map(str, counts))} comma-separated numbers")
    return values


def check_output_dir(out_dir: Path) -> None:
    """Fail before any work if ``out_dir`` could not be created or written; create nothing yet."""
    existing = out_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot create output directory {out_dir}: {existing} is not a writable directory")


#: ``--backend`` choices (:data:`anymask.runtime.BACKENDS`, kept here so that building the parser imports no torch)
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def add_model_arguments(parser: argparse.ArgumentParser, model: bool = True, backend: bool = False) -> None:
    """The options of every command that runs a model: ``--model`` (unless the command takes the name as an
    argument), ``--checkpoint``, ``--no-verify`` and, with ``backend``, ``--backend``."""
    if model:
        parser.add_argument("--model", default="mobile_sam",
                            help="model name: mobile_sam (default; alias vit_t), vit_b, vit_l, vit_h, lite_medsam")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="use this local checkpoint file instead of the catalogue's sources")
    parser.add_argument("--no-verify", action="store_true",
                        help="accept a --checkpoint whose sha256 differs from the catalogue (fine-tuned weights); "
                        "keys and shapes are still checked")
    if backend:
        parser.add_argument("--backend", default="auto", choices=BACKENDS,
                            help="how the networks run: auto (default: onnx on the CPU when onnxruntime is "
                            "installed, else torch; or $ANYMASK_BACKEND), torch (exact float32 PyTorch), onnx "
                            "(float32 onnxruntime graphs, exported and cached on first use), onnx-int8 (int8 "
                            "encoder)")


def load_model_from_args(args: argparse.Namespace, **kwargs: Any) -> Any:
    """:func:`anymask.load_model` with the options of :func:`add_model_arguments` (and ``kwargs``, e.g. device)."""
    from ..models import load_model

    return load_model(args.model, checkpoint=args.checkpoint, verify=not args.no_verify, **kwargs)


def cached_onnx_predictor(args: argparse.Namespace) -> Any:
    """:meth:`OnnxPredictor.cached <anymask.onnx_predictor.OnnxPredictor.cached>` for the command's options: an
    OnnxPredictor on the cached graphs of ``--model`` when the options ask for what ``Predictor(load_model(
    args.model), backend=args.backend)`` would run (the catalogue's weights, no ``--checkpoint``) and an earlier
    run cached them; else None. Imports no torch: a command that gets one starts ~2 s sooner and ~200 MB smaller
    (``import torch`` and the torch model)."""
    if args.checkpoint is not None:
        return None
    from ..onnx_predictor import OnnxPredictor

    return OnnxPredictor.cached(args.model, args.backend, getattr(args, "device", "cpu"))
