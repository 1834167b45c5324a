"""``anymask segment``: masks for point and box prompts on one image."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .. import __version__
from ..errors import PromptError
from .common import add_model_arguments, cached_onnx_predictor, check_output_dir, load_model_from_args, parse_numbers

logger = logging.getLogger("anymask")

SAVE_KINDS = ("mask", "cutout", "overlay", "json")


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the command and its options."""
    seg = commands.add_parser(
        "segment",
        parents=[common],
        help="segment an image from point and box prompts",
        description="Segment one image from clicks and/or boxes and write the mask, an RGBA cut-out, an overlay "
        "and a JSON record (score, bbox, area, COCO RLE, polygons). Coordinates are pixels of the image as it "
        "is displayed (EXIF orientation applied): x = column, y = row, origin top-left. With an onnx backend (the "
        "default on the CPU) and the catalogue's weights, the first run exports the model's graphs once; later runs "
        "open the cached graphs without loading torch (same masks, about 2 s sooner).",
    )
    seg.add_argument("image", help="image file (JPEG, PNG, BMP, TIFF, WebP, ...)")
    seg.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]",
                     help="a click; LABEL 1 = foreground (default), 0 = background. Repeat for several points.")
    seg.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                     help="a box in XYXY pixels. Repeat for several objects: one mask per box (points, if any, "
                     "apply to every box).")
    add_model_arguments(seg, backend=True)
    group = seg.add_mutually_exclusive_group()
    group.add_argument("--multimask", dest="multimask", action="store_true", default=None,
                       help="predict 3 candidate masks per object and keep the best-scored (JSON lists all). "
                       "Default: on for a single click without a box, off otherwise.")
    group.add_argument("--single-mask", dest="multimask", action="store_false",
                       help="predict one mask per object")
    seg.add_argument("-o", "--output", default="out", metavar="DIR", help="output directory (default: ./out)")
    seg.add_argument("--save", default=",".join(SAVE_KINDS), metavar="KINDS",
                     help="comma-separated outputs to write: mask (PNG 0/255), cutout (RGBA PNG cropped to the "
                     "object), overlay (PNG of the image with masks, points and boxes), json (default: all)")
    seg.add_argument("--device", default="cpu", help="torch device (default: cpu)")



def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..images import load_image
    from ..outputs import mask_record, save_cutout, save_mask_png, save_overlay, write_json
    from ..prompts import check_prompts

    kinds = [k.strip() for k in args.save.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(SAVE_KINDS))
    if unknown or not kinds:
        raise PromptError(f"--save takes a comma-separated subset of {','.join(SAVE_KINDS)}, got {args.save!r}")
    points = [parse_numbers(p, (2, 3), "--point") for p in args.point]
    boxes = [parse_numbers(b, (4,), "--box") for b in args.box]
    if not points and not boxes:
        raise PromptError("give at least one --point or --box")
    for p in points:
        if len(p) == 3 and p[2] not in (0.0, 1.0):
            raise PromptError(f"point label must be 1 (foreground) or 0 (background), got {p[2]:g}")

    out_dir = Path(args.output)
    check_output_dir(out_dir)

    image = load_image(args.image)
    multimask = args.multimask if args.multimask is not None else (len(points) == 1 and not boxes)
    coords = np.array([p[:2] for p in points]) if points else None
    labels = np.array([int(p[2]) if len(p) == 3 else 1 for p in points]) if points else None
    box_arg = np.array(boxes) if boxes else None
    check_prompts(coords, labels, box_arg, image_size=image.shape[:2])  # before the model is loaded
    predictor = cached_onnx_predictor(args)  # the same graphs and results as the Predictor below, without torch
    if predictor is None:
        from ..predictor import Predictor

        model = load_model_from_args(args, device=args.device, progress=not args.quiet)
        predictor = Predictor(model, backend=args.backend)
        model_name = model.spec.name
    else:
        model_name = predictor.model_name
    predictor.set_image(image)

    masks, scores, _ = predictor.predict(points=coords, labels=labels, box=box_arg, multimask=multimask)
    if box_arg is None:  # points only: one unbatched prompt; boxes (always 2-D here) give (objects, C, ...)
        masks, scores = masks[None], scores[None]
    best = scores.argmax(axis=1)  # (objects,)
    chosen = masks[np.arange(len(masks)), best]  # (objects, H, W)

    stem = Path(args.image).stem
    suffix = (lambda i: "") if len(chosen) == 1 else (lambda i: f"_{i}")
    written: list[Path] = []
    if "mask" in kinds:
        for i, m in enumerate(chosen):
            written.append(save_mask_png(out_dir / f"{stem}_mask{suffix(i)}.png", m))
    if "cutout" in kinds:
        for i, m in enumerate(chosen):
            written.append(save_cutout(out_dir / f"{stem}_cutout{suffix(i)}.png", image, m))
    if "overlay" in kinds:
        written.append(save_overlay(out_dir / f"{stem}_overlay.png", image, chosen, points=coords, labels=labels,
                                    boxes=box_arg))
    if "json" in kinds:
        objects = []
        for i in range(len(masks)):
            candidates = [mask_record(masks[i, c], float(scores[i, c]), index=c) for c in range(masks.shape[1])]
            objects.append({
                "object": i,
                "box": boxes[i] if boxes else None,
                "selected": int(best[i]),
                "masks": candidates,
            })
        record = {
            "image": str(args.image),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "model": model_name,
            "anymask_version": __version__,
            "points": [{"x": p[0], "y": p[1], "label": int(p[2]) if len(p) == 3 else 1} for p in points],
            "boxes": boxes,
            "multimask": bool(multimask),
            "objects": objects,
        }
        written.append(write_json(out_dir / f"{stem}.json", record))
    for i in range(len(chosen)):
        logger.info("object %d: score %.3f, area %d px", i, scores[i, best[i]], int(chosen[i].sum()))
    for path in written:
        print(path)
    return 0
