"""``anymask video``: segment objects on some frames of a video and follow them through all frames."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from .. import __version__
from ..errors import PromptError
from .common import add_model_arguments, check_output_dir, load_model_from_args, parse_numbers

logger = logging.getLogger("anymask")

SAVE_KINDS = ("masks", "json", "overlay")
DIRECTIONS = ("forward", "backward", "both")


class _PromptItem(argparse.Action):
    """Keeps ``--frame/--point/--box/--mask/--object`` in command-line order (they form groups)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102
        items = list(getattr(namespace, "prompt_items", None) or [])
        items.append((self.dest, values))
        namespace.prompt_items = items


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the command and its options."""
    cmd = commands.add_parser(
        "video",
        parents=[common],
        help="segment objects in a video and follow them through its frames",
        description="Prompt objects on some frames of a video and propagate their masks through the video. "
        "Prompts are read left to right: --frame N sets the frame of the prompts after it (default 0); "
        "--point, --box and --mask add to the current object; --object ID closes the current object's prompt "
        "with that id. Example: anymask video clip.mp4 --frame 0 --box 120,60,400,380 --object 1 "
        "--frame 0 --point 500,200 --object 2 -o out/. Coordinates are frame pixels, x = column, y = row. "
        "Writes masks/<frame>_obj<id>.png, <stem>.json (COCO RLE per frame and object) and "
        "<stem>_overlay.mp4.",
    )
    cmd.set_defaults(prompt_items=[])
    cmd.add_argument("video", help="video file (mp4, avi, mov, webm, mkv, ...) or a folder of frame images")
    cmd.add_argument("--frame", action=_PromptItem, type=int, metavar="N",
                     help="frame index (from 0) of the prompts that follow (default 0)")
    cmd.add_argument("--point", action=_PromptItem, metavar="X,Y[,LABEL]",
                     help="a click on the current object; LABEL 1 = foreground (default), 0 = background")
    cmd.add_argument("--box", action=_PromptItem, metavar="X0,Y0,X1,Y1", help="a box around the current object")
    cmd.add_argument("--mask", action=_PromptItem, metavar="PNG",
                     help="a mask image of the current object on the current frame (non-zero = object)")
    cmd.add_argument("--object", action=_PromptItem, type=int, metavar="ID",
                     help="close the current object's prompts and give it this integer id; prompts left "
                     "without --object at the end get the next free id")
    cmd.add_argument("--direction", choices=DIRECTIONS, default="both",
                     help="forward: from the first prompted frame to the end; backward: from the last prompted "
                     "frame to frame 0; both (default): forward, plus backward over the frames before the first "
                     "prompted one")
    cmd.add_argument("--strategy", choices=("mask", "box"), default="mask",
                     help="propagation: mask (default; previous mask's box moved by its motion, with its logits, best "
                     "predicted IoU, loss detection) or box (naive baseline: the box of the previous mask only)")
    cmd.add_argument("--padded", action="store_true",
                     help="encode frames padded to the model's square input, as SAM does, instead of only to a "
                     "multiple of 16 px (default): about half the frames/s on 16:9 video, about the same accuracy "
                     "(see docs/video.md)")
    add_model_arguments(cmd)
    cmd.add_argument("-o", "--output", default="out", metavar="DIR", help="output directory (default: ./out)")
    cmd.add_argument("--save", default=",".join(SAVE_KINDS), metavar="KINDS",
                     help="comma-separated outputs: masks (PNG 0/255 per frame and object), json (COCO-style "
                     "RLE per frame and object), overlay (video of the frames with the masks) (default: all)")
    cmd.add_argument("--overlay-format", choices=("mp4", "avi"), default="mp4",
                     help="overlay video container: mp4 (MPEG-4 Part 2, default) or avi (Motion-JPEG)")
    cmd.add_argument("--window", type=int, default=16, metavar="N",
                     help="decoded frames kept in memory (reverse reading goes in chunks of N; default 16)")
    cmd.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _prompt_groups(items: list[tuple[str, object]]) -> list[dict]:
    """``[(dest, value), ...]`` in command-line order -> one dict per object prompt."""
    groups, frame, current = [], 0, {"points": [], "box": None, "mask": None}
    used: set[int] = set()

    def close(obj_id: int | None) -> None:
        nonlocal current
        if not current["points"] and current["box"] is None and current["mask"] is None:
            raise PromptError(f"--object {obj_id} has no --point, --box or --mask before it")
        groups.append({"frame": frame, "object": obj_id, **current})
        current = {"points": [], "box": None, "mask": None}

    for dest, value in items:
        if dest == "frame":
            if value < 0:
                raise PromptError(f"--frame must be 0 or more, got {value}")
            frame = value
        elif dest == "point":
            p = parse_numbers(value, (2, 3), "--point")
            if len(p) == 3 and p[2] not in (0.0, 1.0):
                raise PromptError(f"point label must be 1 (foreground) or 0 (background), got {p[2]:g}")
            current["points"].append(p)
        elif dest == "box":
            if current["box"] is not None:
                raise PromptError("one --box per object: close the object with --object ID first")
            current["box"] = parse_numbers(value, (4,), "--box")
        elif dest == "mask":
            current["mask"] = value
        elif dest == "object":
            close(value)
    if current["points"] or current["box"] is not None or current["mask"] is not None:
        close(None)
    if not groups:
        raise PromptError("give at least one --point, --box or --mask (with --frame and --object)")
    for g in groups:
        used |= {g["object"]} - {None}
    for g in groups:
        if g["object"] is None:
            g["object"] = max(used, default=0) + 1
            used.add(g["object"])
    return groups


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..images import load_image
    from ..masks import encode_rle, mask_area, masks_to_boxes
    from ..outputs import make_overlay, save_mask_png, write_json
    from ..predictor import Predictor
    from ..prompts import check_prompts
    from ..video import VideoPredictor
    from ..video_io import open_frames, open_video_writer, write_rgb

    kinds = [k.strip() for k in args.save.split(",") if k.strip()]
    if set(kinds) - set(SAVE_KINDS) or not kinds:
        raise PromptError(f"--save takes a comma-separated subset of {','.join(SAVE_KINDS)}, got {args.save!r}")
    groups = _prompt_groups(args.prompt_items)
    out_dir = Path(args.output)
    check_output_dir(out_dir)

    # check the video and every prompt before the model is loaded
    source = open_frames(args.video, window=args.window)
    size = source.frame_size
    for g in groups:
        source.check_index(g["frame"])
        coords = np.array([p[:2] for p in g["points"]]) if g["points"] else None
        labels = np.array([int(p[2]) if len(p) == 3 else 1 for p in g["points"]]) if g["points"] else None
        g["coords"], g["labels"] = coords, labels
        if coords is not None or g["box"] is not None:
            check_prompts(coords, labels, g["box"], image_size=size)
        if g["mask"] is not None:
            g["mask_array"] = load_image(g["mask"])[..., 0] > 0
            if g["mask_array"].shape != size:
                raise PromptError(f"--mask {g['mask']} is {g['mask_array'].shape[::-1]}, the frames {size[::-1]}")

    model = load_model_from_args(args, device=args.device, progress=not args.quiet)
    video = VideoPredictor(Predictor(model), strategy=args.strategy, window=args.window,
                           pad_to_square=args.padded)
    video.open(source)
    for g in groups:
        video.add_prompt(g["frame"], g["object"], points=g["coords"], labels=g["labels"], box=g["box"],
                         mask=g.get("mask_array"))

    stem = Path(args.video).stem
    mask_dir = out_dir / "masks"
    annotations: list[dict] = []
    seen: set[int] = set()
    written: list[Path] = []
    first, last = min(g["frame"] for g in groups), max(g["frame"] for g in groups)
    passes = {"forward": [(first, False)], "backward": [(last, True)], "both": [(first, False), (first, True)]}
    for start, reverse in passes[args.direction]:
        total = start + 1 if reverse else (video.num_frames - start if video.num_frames else None)
        bar = tqdm(video.propagate(start, reverse), total=total, unit="frame", disable=args.quiet,
                   desc="backward" if reverse else "forward")
        for index, masks in bar:
            if index in seen:
                continue
            seen.add(index)
            for obj, mask in masks.items():
                if "masks" in kinds or "overlay" in kinds:
                    path = save_mask_png(mask_dir / f"{index:05d}_obj{obj}.png", mask)
                    if "masks" in kinds:
                        written.append(path)
                box = masks_to_boxes(mask[None])[0]
                annotations.append({
                    "id": len(annotations) + 1, "frame": index, "object_id": obj, "area": mask_area(mask),
                    "bbox": [int(box[0]), int(box[1]), int(box[2] - box[0] + 1), int(box[3] - box[1] + 1)]
                    if mask.any() else [0, 0, 0, 0],
                    "segmentation": encode_rle(mask),
                })
    if "json" in kinds:
        annotations.sort(key=lambda a: (a["frame"], a["object_id"]))
        record = {
            "video": str(args.video), "width": size[1], "height": size[0], "num_frames": video.num_frames,
            "model": model.spec.name, "strategy": args.strategy, "pad_to_square": args.padded,
            "anymask_version": __version__,
            "objects": video.objects,
            "prompts": [{"frame": g["frame"], "object_id": g["object"],
                         "points": [{"x": p[0], "y": p[1], "label": int(p[2]) if len(p) == 3 else 1}
                                    for p in g["points"]],
                         "box": g["box"], "mask": g["mask"]} for g in groups],
            "annotations": annotations,
        }
        written.append(write_json(out_dir / f"{stem}.json", record))
    if "overlay" in kinds:
        written.append(_write_overlay(source, mask_dir, video.objects, seen,
                                      out_dir / f"{stem}_overlay.{args.overlay_format}", args.quiet,
                                      open_video_writer, write_rgb, make_overlay, load_image, np))
        if "masks" not in kinds:
            for path in mask_dir.glob("*_obj*.png"):
                path.unlink()
    for path in written:
        print(path)
    return 0


def _write_overlay(source, mask_dir, objects, frames, path, quiet, open_video_writer, write_rgb, make_overlay,
                   load_image, np) -> Path:
    """Write the overlay video of ``frames`` (sorted) from the mask PNGs, to a temporary name then renamed."""
    from tqdm import tqdm

    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = open_video_writer(partial, getattr(source, "fps", 0.0) or 25.0, source.frame_size)
    try:
        for index in tqdm(sorted(frames), unit="frame", desc="overlay", disable=quiet):
            frame = source.read(index)
            stack = np.zeros((len(objects), *source.frame_size), dtype=bool)
            for k, obj in enumerate(objects):
                mask_path = mask_dir / f"{index:05d}_obj{obj}.png"
                if mask_path.exists():
                    stack[k] = load_image(mask_path)[..., 0] > 127
            write_rgb(writer, make_overlay(frame, stack))
    finally:
        writer.release()
    os.replace(partial, path)
    return path
