"""``anymask batch embed|everything|boxes INPUT -o OUT``: a whole image collection, locally or on Ray.

INPUT is a folder (searched recursively), a glob pattern, or a CSV / JSONL manifest (``image`` column; ``boxes``
or ``boxes_file`` for ``boxes``). OUT gets one result per image (``embeddings/<id>.npz`` or ``masks/<id>.json``),
``manifest.jsonl`` (status per image) and ``run.json`` (settings). A rerun skips finished images; failed images
are recorded with the reason and the run goes on; the command then exits with code 3. See docs/batch.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import ImageError
from .common import add_model_arguments, check_output_dir
from .everything import add_generator_arguments, generator_options

logger = logging.getLogger("anymask")

TASK_HELP = {
    "embed": "image embeddings (.npz, ImageEmbedding.save) for instant prompts later",
    "everything": "segment everything (automatic mask generation): every mask per image as COCO JSON with RLE",
    "boxes": "one mask per box prompt (e.g. a detector's boxes, from a manifest) as COCO JSON with RLE",
}


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``batch`` and its three tasks."""
    batch = commands.add_parser(
        "batch", parents=[common],
        help="embeddings or masks for a whole image collection (local worker processes or a Ray cluster)",
        description="Process a whole image collection with the same per-image function on one machine (worker "
        "processes) or on a Ray cluster (Ray Data). Resumable: a rerun into the same folder skips finished "
        "images; failures are recorded per image in OUT/manifest.jsonl and the run goes on (exit code 3 "
        "when some images failed).",
    )
    tasks = batch.add_subparsers(dest="task", metavar="TASK", required=True)
    for task, help_text in TASK_HELP.items():
        p = tasks.add_parser(task, parents=[common], help=help_text, description=help_text + ".")
        p.add_argument("input", metavar="INPUT",
                       help="a folder (image files in it and its sub-folders), a quoted glob pattern "
                       "('data/**/*.jpg'), or a manifest .csv/.jsonl with an 'image' column"
                       + (" and 'boxes' (JSON list of [x0,y0,x1,y1]) or 'boxes_file' (a detector's JSON per image)"
                          if task == "boxes" else "") + "; an optional 'id' column names the result")
        p.add_argument("-o", "--output", required=True, metavar="OUT",
                       help="output folder: results, manifest.jsonl and run.json (created if missing)")
        p.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local (default): worker processes on this machine; ray: Ray Data on the cluster at "
                       "--ray-address, or on a Ray started on this machine for the run (needs anymask[ray])")
        p.add_argument("--ray-address", metavar="ADDR",
                       help="Ray cluster to connect to (host:port, ray://host:port or 'auto'); default: start a "
                       "local Ray. Images and OUT must be at the same paths on every node")
        p.add_argument("--workers", type=int, default=1, metavar="N",
                       help="worker processes (local) or Ray actors (ray), each with its own model (default 1); "
                       "local 0: in this process, no worker processes")
        p.add_argument("--batch-size", type=int, default=4, metavar="B",
                       help="images handed to a worker at a time; a killed worker loses at most its batches in "
                       "flight, which are redone (default 4)")
        p.add_argument("--threads", type=int, metavar="T",
                       help="compute threads (and Ray CPUs) per worker (default: this machine's cores / workers)")
        add_model_arguments(p, backend=True)
        if task == "everything":
            add_generator_arguments(p)
        if task == "boxes":
            p.add_argument("--multimask", action="store_true",
                           help="predict 3 masks per box and keep the best-scored (default: one mask per box)")
        if task in ("everything", "boxes"):
            p.add_argument("--coco", action="store_true",
                           help="also write OUT/coco.json: every finished image's masks in one COCO document")


def run(args: argparse.Namespace) -> int:
    from ..batch import TaskSpec, default_threads, read_inputs, run_batch
    from ..batch.merge import merge_coco
    from ..fileio import atomic_write_text

    generator = {}
    if args.task == "everything":
        from ..automatic import AutomaticMaskGenerator

        generator = {k: v for k, v in generator_options(args).items() if k != "output_mode"}
        AutomaticMaskGenerator.check_options(**generator)
    items = read_inputs(args.input, args.task)
    out_dir = Path(args.output)
    check_output_dir(out_dir)
    threads = args.threads if args.threads is not None else default_threads(args.workers)
    spec = TaskSpec(task=args.task, model=args.model, checkpoint=args.checkpoint, verify=not args.no_verify,
                    backend=args.backend, generator=generator, multimask=getattr(args, "multimask", False),
                    threads=max(1, threads))
    summary = run_batch(items, spec, out_dir, engine=args.engine, workers=args.workers, batch_size=args.batch_size,
                        ray_address=args.ray_address, progress=not args.quiet)
    if getattr(args, "coco", False):
        coco = merge_coco(out_dir, items, args.task)
        print(atomic_write_text(out_dir / "coco.json", json.dumps(coco) + "\n"))
    print(summary.line())
    if summary.failures:
        print(f"anymask: {summary.failed} image(s) failed (see {out_dir / 'manifest.jsonl'}):", file=sys.stderr)
        for item_id, reason in summary.failures[:20]:
            print(f"  {item_id}: {reason}", file=sys.stderr)
        if summary.failed > 20:
            print(f"  ... and {summary.failed - 20} more", file=sys.stderr)
        return ImageError.exit_code
    return 0
