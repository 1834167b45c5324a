"""``anymask everything``: every mask in an image or a folder of images (automatic mask generation).

Output folder layout (``STEM`` = the image's file name without its suffix; the full name when two images
of the run share a stem):

* ``records/STEM.json``: the image's masks (SAM's record keys, COCO RLE) and the list of files written for
  it. Written **last**, atomically: its presence means the image is complete, and a rerun skips it.
* ``STEM_masks/NNN.png`` (``--format png|both``): one 0/255 PNG per mask, in score order.
* ``STEM_overlay.png`` (``--format png|both``): the image with every mask tinted.
* ``coco.json`` (``--format coco|both``): COCO results of the whole run (images, annotations with RLE
  segmentation, bbox, area, score), rebuilt from the per-image records at the end of every run.

Every file is written atomically (temporary file + rename): an interrupted run leaves no half-written file,
and the interrupted image is redone by the next run. Images that cannot be read are skipped with a warning,
listed at the end, and make the command exit with code 3 after every other image is done.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ImageError
from .common import add_model_arguments, check_output_dir, load_model_from_args

logger = logging.getLogger("anymask")

FORMATS = ("coco", "png", "both")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jpe", ".jfif")
COCO_NAME = "coco.json"
RECORD_VERSION = 1


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the command and its options."""
    p = commands.add_parser(
        "everything",
        parents=[common],
        help="find every mask in an image or a folder of images (automatic mask generation)",
        description="Segment everything: decode a grid of click prompts over each image, keep the confident and "
        "stable masks, remove duplicates. Writes a COCO JSON for the run and/or PNG masks and an overlay per "
        "image. A rerun into the same folder skips images whose outputs are complete. Images that cannot be "
        "read are skipped with a warning and listed at the end (exit code 3 after the others are done).",
    )
    p.add_argument("input", metavar="IMAGE_OR_DIR",
                   help="an image file, or a folder whose image files (jpg, png, bmp, tif, webp; not sub-folders) "
                   "are processed in name order")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created if missing)")
    p.add_argument("--format", choices=FORMATS, default="both",
                   help="coco: one COCO JSON for the run; png: mask PNGs and an overlay per image; both (default)")
    add_model_arguments(p)
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_generator_arguments(p)


def add_generator_arguments(parser: argparse.ArgumentParser, points_per_side: int = 32) -> None:
    """The generator options (SAM's automatic mask generator parameters); shared with ``anymask batch``."""
    g = parser.add_argument_group("generator (SAM's automatic mask generator parameters, same defaults)")
    g.add_argument("--points-per-side", type=int, default=points_per_side, metavar="N",
                   help=f"grid of N x N click prompts per image (default {points_per_side})")
    g.add_argument("--points-per-batch", type=int, default=64, metavar="N",
                   help="prompts processed together, decoded in chunks of 4 (SAM's batch; default 64)")
    g.add_argument("--pred-iou-thresh", type=float, default=0.88, metavar="T",
                   help="keep masks whose predicted IoU is above T, in [0, 1] (default 0.88)")
    g.add_argument("--stability-score-thresh", type=float, default=0.95, metavar="T",
                   help="keep masks whose stability score is at least T, in [0, 1] (default 0.95)")
    g.add_argument("--stability-score-offset", type=float, default=1.0, metavar="D",
                   help="logit offset of the stability score, >= 0 (default 1.0)")
    g.add_argument("--box-nms-thresh", type=float, default=0.7, metavar="T",
                   help="box IoU above which duplicate masks are removed, in (0, 1] (default 0.7)")
    g.add_argument("--crop-n-layers", type=int, default=0, metavar="N",
                   help="extra layers of image crops, layer i has (2**i)**2 crops (default 0: whole image only)")
    g.add_argument("--crop-nms-thresh", type=float, default=0.7, metavar="T",
                   help="box IoU for duplicates between crops, in (0, 1] (default 0.7)")
    g.add_argument("--crop-overlap-ratio", type=float, default=512 / 1500, metavar="R",
                   help="overlap of neighbouring crops as a share of the short side, in [0, 1) (default 0.341)")
    g.add_argument("--crop-n-points-downscale-factor", type=int, default=1, metavar="F",
                   help="crop layer i uses points-per-side / F**i points a side (default 1)")
    g.add_argument("--min-mask-region-area", type=int, default=0, metavar="PX",
                   help="fill holes and erase islands smaller than PX pixels *inside* each mask (it does not drop "
                   "small masks); 0 = off (default)")
    g.add_argument("--skip-covered-points", action="store_true",
                   help="faster: decode the grid coarse-to-fine and skip points inside masks already found with "
                   "high confidence (changes results slightly; off by default)")
    g.add_argument("--skip-iou-thresh", type=float, default=0.95, metavar="T",
                   help="predicted IoU a mask needs to make --skip-covered-points skip the points it covers "
                   "(default 0.95)")
    g.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="fp32 (default, exact) or int8: the mask decoder's upscaling in int8 (onnx backend; faster, "
                   "changes results slightly, see docs/everything.md)")


def generator_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`AutomaticMaskGenerator` keyword arguments of parsed :func:`add_generator_arguments` options."""
    return dict(
        points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh,
        stability_score_offset=args.stability_score_offset, box_nms_thresh=args.box_nms_thresh,
        crop_n_layers=args.crop_n_layers, crop_nms_thresh=args.crop_nms_thresh,
        crop_overlap_ratio=args.crop_overlap_ratio,
        crop_n_points_downscale_factor=args.crop_n_points_downscale_factor,
        min_mask_region_area=args.min_mask_region_area, output_mode="coco_rle",
        skip_covered_points=args.skip_covered_points, skip_iou_thresh=args.skip_iou_thresh,
    ) | precision_option(args)


def precision_option(args: argparse.Namespace) -> dict[str, Any]:
    """``{"precision": ...}`` when not the default ``fp32``: records written before the option existed, with
    default settings, stay complete for resumption."""
    precision = getattr(args, "precision", "fp32")
    return {} if precision == "fp32" else {"precision": precision}


def list_images(source: Path) -> list[Path]:
    """The image files to process: ``source`` itself, or the image files directly inside the folder."""
    if source.is_dir():
        images = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ImageError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {source}")
        return images
    if not source.exists():
        raise ImageError(f"{source} does not exist")
    return [source]


def output_names(images: list[Path]) -> list[str]:
    """A unique output name per image: its stem, or its full file name where stems collide."""
    stems = [p.stem for p in images]
    return [p.stem if stems.count(p.stem) == 1 else p.name for p in images]


def _wanted_files(name: str, fmt: str, n_masks: int) -> list[str]:
    if fmt == "coco":
        return []
    return [f"{name}_overlay.png"] + [f"{name}_masks/{i:03d}.png" for i in range(n_masks)]


def is_complete(out_dir: Path, name: str, fmt: str, options: dict[str, Any]) -> bool:
    """Whether the image ``name`` has a record from the same settings and every file ``fmt`` needs."""
    import json

    path = out_dir / "records" / f"{name}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if record.get("record_version") != RECORD_VERSION or record.get("options") != options:
        return False
    return all((out_dir / f).is_file() for f in _wanted_files(name, fmt, len(record.get("masks", []))))


def run(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from ..automatic import AutomaticMaskGenerator
    from ..images import load_image
    from ..outputs import save_mask_png, save_overlay, write_json

    options = generator_options(args)
    AutomaticMaskGenerator.check_options(**options)  # before the model is loaded
    images = list_images(Path(args.input))
    out_dir = Path(args.output)
    check_output_dir(out_dir)
    names = output_names(images)
    record_options = {k: v for k, v in options.items() if k != "output_mode"} | {"model": args.model}
    todo = [i for i, name in enumerate(names) if not is_complete(out_dir, name, args.format, record_options)]
    if len(todo) < len(images):
        logger.warning("skipping %d of %d images whose outputs are complete", len(images) - len(todo), len(images))
    unreadable: list[tuple[Path, str]] = []
    if todo:
        model = load_model_from_args(args, device=args.device, progress=not args.quiet)
        generator = AutomaticMaskGenerator(model, **options)
        for i in tqdm(todo, desc="everything", unit="image", disable=args.quiet or None):
            path, name = images[i], names[i]
            try:
                image = load_image(path)
            except ImageError as exc:
                logger.warning("skipping unreadable image %s: %s", path, exc)
                unreadable.append((path, str(exc)))
                continue
            masks = generator.generate(image)
            files = _write_image_outputs(out_dir, name, image, masks, args.format, save_mask_png, save_overlay)
            record = {
                "record_version": RECORD_VERSION,
                "anymask_version": __version__,
                "image": os.fspath(path.resolve()),
                "file_name": path.name,
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "options": record_options,
                "files": files,
                "masks": masks,
            }
            write_json(out_dir / "records" / f"{name}.json", record)  # last: marks the image complete
            logger.info("%s: %d masks in %.1f s", path.name, len(masks), generator.last_stats["total"])
    if args.format in ("coco", "both"):
        coco = build_coco(out_dir, images, names, json)
        print(write_json(out_dir / COCO_NAME, coco))
    print(f"{len(images) - len(unreadable)} of {len(images)} images done in {out_dir}")
    if unreadable:
        print(f"anymask: {len(unreadable)} unreadable image(s) skipped:", file=sys.stderr)
        for path, reason in unreadable:
            print(f"  {path}: {reason}", file=sys.stderr)
        return ImageError.exit_code
    return 0


def _write_image_outputs(out_dir: Path, name: str, image, masks: list[dict], fmt: str, save_mask_png,
                         save_overlay) -> list[str]:
    """Mask PNGs and the overlay for one image (``--format png|both``); returns their paths relative to OUT."""
    import numpy as np

    from ..masks import decode_rle

    files = _wanted_files(name, fmt, len(masks))
    if not files:
        return []
    mask_dir = out_dir / f"{name}_masks"
    if mask_dir.is_dir():  # files left by an interrupted run with more masks
        for stale in mask_dir.glob("*.png"):
            if f"{name}_masks/{stale.name}" not in files:
                stale.unlink()
    binary = [decode_rle(m["segmentation"]) for m in masks]
    for rel, mask in zip(files[1:], binary):
        save_mask_png(out_dir / rel, mask)
    stack = np.stack(binary) if binary else np.zeros((0, *image.shape[:2]), dtype=bool)
    save_overlay(out_dir / files[0], image, stack[::-1])  # largest-score masks drawn last, on top
    return files


def build_coco(out_dir: Path, images: list[Path], names: list[str], json) -> dict[str, Any]:
    """COCO results for the run's images from their per-image records (images without one are left out)."""
    from ..coco import coco_document, everything_annotation, image_entry

    entries: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (path, name) in enumerate(zip(images, names), start=1):
        try:
            record = json.loads((out_dir / "records" / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        entries.append(image_entry(image_id, record["file_name"], record["width"], record["height"]))
        for m in record["masks"]:
            annotations.append(everything_annotation(m, image_id, len(annotations) + 1))
    return coco_document("anymask everything", entries, annotations)
