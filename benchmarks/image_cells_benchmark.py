"""The automatic mask generator on non-square photos, decoding the image's grid cells only or the whole grid.

The generator decodes with ``Predictor.predict_low_res(image_only=True)``: the mask upscaling skips the grid
cells of the square padding, whose logits the upsampling to the image never reads (see
:meth:`anymask.Predictor.image_cells`). This script times it against the whole grid (``image_only`` forced off)
in one process, the two alternating on every photo (this machine's speed drifts between runs minutes apart), and
checks that both give the very same records. Photos: COCO128 images (4:3 and similar) and DAVIS frames (16:9)
from ``../shared/data``, else the repository's astronaut cropped to 4:3 and 16:9.

    flock /tmp/anymask-bench.lock python benchmarks/image_cells_benchmark.py --threads 1
    # writes benchmarks/results/image_cells.{json,md}
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def photos(coco: int, davis: int) -> list[tuple[str, np.ndarray]]:
    """``(name, RGB)`` of the first ``coco`` COCO128 images and the first frame of ``davis`` DAVIS sequences."""
    from PIL import Image

    from benchmarks.datasets import SHARED_DATA, read_index

    if not SHARED_DATA.is_dir():
        astronaut = np.asarray(Image.open(ROOT / "examples" / "astronaut.png").convert("RGB"))
        return [("astronaut 4:3", astronaut[64:448].copy()), ("astronaut 16:9", astronaut[112:400].copy())]
    out = []
    for path in sorted((SHARED_DATA / "coco128_instances" / "images").iterdir())[:coco]:
        out.append((f"coco {path.stem}", np.asarray(Image.open(path).convert("RGB"))))
    seen = set()
    for row in read_index(SHARED_DATA / "davis2016_val"):
        sequence = Path(row["image"]).parent.name
        if sequence not in seen and len(seen) < davis:
            seen.add(sequence)
            out.append((f"davis {sequence}", np.asarray(Image.open(row["image"]).convert("RGB"))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads (default 1)")
    parser.add_argument("--coco", type=int, default=3, help="COCO128 images (default 3)")
    parser.add_argument("--davis", type=int, default=2, help="DAVIS sequences, first frame each (default 2)")
    parser.add_argument("--points-per-side", type=int, default=32, help="the generator's grid (default 32, SAM's)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode per photo, alternating (default 2)")
    parser.add_argument("--out", default=str(RESULTS / "image_cells"), help="results path without suffix")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from anymask import Predictor, load_model
    from anymask.automatic import AutomaticMaskGenerator

    generator = AutomaticMaskGenerator(load_model("mobile_sam", progress=False),
                                       points_per_side=args.points_per_side, output_mode="coco_rle")
    original = Predictor.predict_low_res

    def whole_grid(self, *args, image_only=False, **kwargs):  # the generator's call, image_only forced off
        return original(self, *args, **kwargs)
    rows = []
    for name, image in photos(args.coco, args.davis):
        generator.generate(image)  # warm-up: the image's embedding path, the graphs' sessions
        seconds = {"image_only": [], "whole": []}
        decoder = {"image_only": [], "whole": []}
        records = {}
        for _ in range(args.rounds):
            for mode in ("whole", "image_only"):
                Predictor.predict_low_res = whole_grid if mode == "whole" else original
                start = time.perf_counter()
                found = generator.generate(image)
                seconds[mode].append(time.perf_counter() - start)
                decoder[mode].append(generator.last_stats["timings"]["decoder"])
                key = [(r["segmentation"]["counts"], r["predicted_iou"], r["stability_score"], r["bbox"]) for r in found]
                if records.setdefault(mode, key) != key:
                    raise RuntimeError(f"{name}: the {mode} run is not deterministic")
        Predictor.predict_low_res = original
        predictor = generator.predictor
        predictor.set_image(image)  # the generator lets go of its image when done
        cells = predictor.image_cells()
        grid = tuple(int(n) for n in predictor.embedding.features.shape[-2:])
        predictor.reset_image()
        row = {
            "photo": name, "size": list(image.shape[:2]), "cells": list(cells), "grid": list(grid),
            "masks": len(records["image_only"]), "same_records": records["image_only"] == records["whole"],
            "whole_s": statistics.median(seconds["whole"]), "image_only_s": statistics.median(seconds["image_only"]),
            "whole_decoder_s": statistics.median(decoder["whole"]),
            "image_only_decoder_s": statistics.median(decoder["image_only"]),
        }
        row["speedup"] = row["whole_s"] / row["image_only_s"]
        row["decoder_speedup"] = row["whole_decoder_s"] / row["image_only_decoder_s"]
        print(row, flush=True)
        rows.append(row)

    total_whole = sum(r["whole_s"] for r in rows)
    total_fast = sum(r["image_only_s"] for r in rows)
    result = {"threads": args.threads, "points_per_side": args.points_per_side, "rounds": args.rounds,
              "machine": platform.processor() or platform.machine(), "rows": rows,
              "total_whole_s": total_whole, "total_image_only_s": total_fast, "speedup": total_whole / total_fast}
    lines = [
        "# Segment everything on non-square photos: the image's grid cells only vs the whole grid",
        "",
        f"`AutomaticMaskGenerator(points_per_side={args.points_per_side})`, default backend, {args.threads} thread(s); "
        f"each mode run {args.rounds} times per photo, alternating; medians.",
        "",
        "| photo | size (H x W) | cells decoded / grid | masks | same records | whole grid s (decoder) | image cells s (decoder) | speed-up (decoder) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['photo']} | {r['size'][0]} x {r['size'][1]} | {r['cells'][0]} x {r['cells'][1]} / "
                     f"{r['grid'][0]} x {r['grid'][1]} | {r['masks']} | {'yes' if r['same_records'] else '**no**'} | "
                     f"{r['whole_s']:.1f} ({r['whole_decoder_s']:.1f}) | {r['image_only_s']:.1f} "
                     f"({r['image_only_decoder_s']:.1f}) | {r['speedup']:.2f}x ({r['decoder_speedup']:.2f}x) |")
    lines += ["", f"All photos: {total_whole:.1f} s -> {total_fast:.1f} s ({total_whole / total_fast:.2f}x)."]
    write_results(args.out, result, "\n".join(lines))


if __name__ == "__main__":
    main()
