"""Interactive segmentation click benchmark: anymask's session vs SAM's reference protocol.

The standard protocol (:mod:`anymask.evaluation`: NoC@85/90 with at most 20 clicks, failures at 90 %,
mIoU after 1/3/5 clicks, box-prompt mIoU) on GrabCut and Berkeley from ``../shared/data``, for

* ``reference``: the official MobileSAM ``SamPredictor`` with SAM's protocol (first click multimask +
  highest predicted IoU, then one mask per click with the previous low-res logits fed back);
* ``anymask``: :class:`anymask.session.InteractiveSession` with its default strategy;
* optional strategy variants (``--variants``) used to choose that default.

Both systems use the same MobileSAM weights and the same click simulator, in the same run. Encoder
outputs are cached on disk (``--cache``), one per image (and per zoom crop) for each system's own encoder.

    python benchmarks/click_benchmark.py                      # full sets -> benchmarks/results/clicks.{json,md}
    python benchmarks/click_benchmark.py --every 4 --variants sam,default --out /tmp/study
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anymask.session import DEFAULT_STRATEGY, LARGER_FIRST_STRATEGY, SAM_STRATEGY, SessionStrategy  # noqa: E402

logger = logging.getLogger("click_benchmark")
RESULTS = ROOT / "benchmarks" / "results"

# Strategy variants studied (every 4th image of each set) before fixing the default.
VARIANTS: dict[str, SessionStrategy] = {
    "sam": SAM_STRATEGY,  # SAM's protocol in anymask's session: must match the reference row
    "nofeed": SessionStrategy(multimask="first", select="score", feed_logits=False, zoom_after=None),
    "multi": SessionStrategy(multimask="always", select="score", feed_logits=False, zoom_after=None),
    "multi_feed": SessionStrategy(multimask="always", select="score", feed_logits=True, zoom_after=None),
    "consistent": SessionStrategy(multimask="always", select="consistent", feed_logits=False, zoom_after=None),
    "both": SessionStrategy(multimask="both", select="consistent", feed_logits=False, zoom_after=None),
    "both_zoom3": SessionStrategy(multimask="both", select="consistent", feed_logits=False, zoom_after=3),
    "zoom3": SessionStrategy(multimask="always", select="consistent", feed_logits=False, zoom_after=3),
    "zoom2": SessionStrategy(multimask="always", select="consistent", feed_logits=False, zoom_after=2),
    "zoom3_clean": SessionStrategy(multimask="always", select="consistent", feed_logits=False, zoom_after=3,
                                   min_region=0.01),
    "sam_larger": SessionStrategy(multimask="first", select="score", prefer_larger=0.1, feed_logits=True,
                                  zoom_after=None),
    "multi_larger": SessionStrategy(multimask="always", select="consistent", prefer_larger=0.1, zoom_after=None),
    "both_feed_larger": SessionStrategy(multimask="both", select="consistent", prefer_larger=0.1, feed_logits=True,
                                       zoom_after=None),
    "both_feed": SessionStrategy(multimask="both", select="consistent", feed_logits=True, zoom_after=None),
    "both_feed_zoom2": SessionStrategy(multimask="both", select="consistent", feed_logits=True, zoom_after=2,
                                      zoom_max_area=0.8),
    "both_feed_zoom1": SessionStrategy(multimask="both", select="consistent", feed_logits=True, zoom_after=1,
                                      zoom_max_area=0.8),
    "both_feed_zoom1_keep": SessionStrategy(multimask="both", select="consistent", feed_logits=True, zoom_after=1,
                                           zoom_max_area=0.8, zoom_keep_object=True),
    "refine": SessionStrategy(multimask="both", select="refine", feed_logits=True, zoom_after=None),
    "sam_larger05": SessionStrategy(multimask="first", select="score", prefer_larger=0.05, feed_logits=True,
                                    zoom_after=None),
    "sam_larger02": SessionStrategy(multimask="first", select="score", prefer_larger=0.02, feed_logits=True,
                                    zoom_after=None),
    "larger05_zoom3": SessionStrategy(multimask="first", select="score", prefer_larger=0.05, feed_logits=True,
                                      zoom_after=3, zoom_max_area=0.9),
    "larger05_refine": SessionStrategy(multimask="both", select="refine", prefer_larger=0.05, feed_logits=True,
                                       zoom_after=None),
    # the fed-back logits clipped (LARGER_FIRST_STRATEGY's first click): both sides at +-c ("clampC"), only
    # from below at -c ("floorC"), only from above at +c ("ceilC")
    "larger_first": LARGER_FIRST_STRATEGY,
    **{f"clamp{c}": replace(LARGER_FIRST_STRATEGY, logit_floor=-c, logit_ceiling=c) for c in (3, 5, 7, 10, 15)},
    **{f"floor{c}": replace(LARGER_FIRST_STRATEGY, logit_floor=-c) for c in (2, 3, 5, 7, 10, 20)},
    "ceil5": replace(LARGER_FIRST_STRATEGY, logit_ceiling=5.0),
    "default": DEFAULT_STRATEGY,
}


def load_instances(datasets: list[str], every: int) -> list[dict]:
    """Instances of the named sets; ``name:k`` keeps every k-th row of that set (times ``every``).

    ``coco128_instances`` gives its non-crowd objects of at least 96x96 pixels (COCO's "large", as COCO-MVal
    selects); ``davis2016_val`` gives video frames (use e.g. ``davis2016_val:15`` for every 15th frame).
    """
    from benchmarks.datasets import SHARED_DATA, read_coco_instances, read_index

    rows = []
    for spec in datasets:
        name, _, step = spec.partition(":")
        folder = SHARED_DATA / name
        index = read_coco_instances(folder) if name == "coco128_instances" else read_index(folder)
        for row in index[::every * int(step or 1)]:
            ignore = folder / "ignore" / Path(row["mask"]).name
            # frames of different videos share file names: the video's folder joins the name
            stem = f"{row['image'].parent.name}-{row['image'].stem}" if name == "davis2016_val" else row["image"].stem
            rows.append({**row, "dataset": name, "key": f"{name}-{stem}",
                         "name": f"{name}/{stem if name == 'davis2016_val' else Path(row['mask']).stem}",
                         "ignore": ignore if ignore.exists() else None})
    return rows


def run(args) -> dict:
    import torch
    from tqdm import tqdm

    from anymask import Predictor, load_model, weights
    from anymask.evaluation import SessionAdapter, evaluate_instance, summarize
    from anymask.images import load_image
    from benchmarks.click_adapters import EmbeddingCache, ReferenceAdapter
    from benchmarks.datasets import load_mask
    from benchmarks.reference import reference_predictor

    torch.set_num_threads(args.threads)
    checkpoint = weights.resolve("mobile_sam")
    predictor = Predictor(load_model("mobile_sam", checkpoint=checkpoint))
    cache = EmbeddingCache(Path(args.cache), predictor)
    systems = {}
    if "reference" in args.systems:
        systems["reference"] = ReferenceAdapter(reference_predictor("mobile_sam", checkpoint), cache,
                                                share=args.share_embeddings)
    for name in args.variants:
        strategy = DEFAULT_STRATEGY if name == "anymask" else VARIANTS[name]
        systems[name] = SessionAdapter(predictor, strategy, embed=cache.embed, encode_crop=cache.encode_crop)

    instances = load_instances(args.datasets, args.every)
    names = [spec.partition(":")[0] for spec in args.datasets]
    per_system: dict[str, dict[str, list]] = {s: {d: [] for d in names} for s in systems}
    seconds = {s: 0.0 for s in systems}
    for row in tqdm(instances, desc="instances", disable=args.quiet):
        image = load_image(row["image"])
        gt = load_mask(row["mask"])
        ignore = load_mask(row["ignore"]) if row["ignore"] is not None else None
        key = row["key"]
        for name, adapter in systems.items():
            start = time.perf_counter()
            adapter.set_image(image, key)
            result = evaluate_instance(adapter, gt, ignore, name=row["name"])
            seconds[name] += time.perf_counter() - start
            per_system[name][row["dataset"]].append(result)
            logger.info("%s %s NoC@90 %d IoU@1 %.3f box %.3f", name, result.name, result.noc(0.90),
                        result.ious[0], result.box_iou)
    report = {"instances": {d: sum(1 for r in instances if r["dataset"] == d) for d in names},
              "datasets": args.datasets,
              "every": args.every, "model": "mobile_sam", "machine": platform.platform(),
              "threads": args.threads, "shared_embeddings": args.share_embeddings, "results": {},
              "seconds": {k: round(v, 1) for k, v in seconds.items()},
              "strategies": {n: (DEFAULT_STRATEGY if n == "anymask" else VARIANTS[n]).__dict__
                             for n in args.variants},
              "noc90_per_instance": {}}
    for name, by_set in per_system.items():
        report["results"][name] = {d: summarize(res).as_dict() for d, res in by_set.items()}
        report["noc90_per_instance"][name] = {r.name: r.noc(0.90) for res in by_set.values() for r in res}
    return report


def markdown(report: dict) -> str:
    columns = ["NoC@85", "NoC@90", ">=20@90", "mIoU@1", "mIoU@3", "mIoU@5", "box mIoU"]
    lines = []
    for dataset, count in report["instances"].items():
        subset = "" if report["every"] == 1 else f", every {report['every']}th"
        lines += [f"**{dataset}** ({count} instances{subset})", "", "| system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for name, by_set in report["results"].items():
            row = by_set[dataset]
            cells = [f"{row[c]:.2f}" if c.startswith("NoC") else f"{row[c]}" if c.startswith(">=")
                     else f"{100 * row[c]:.2f}" for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="grabcut,berkeley",
                        help="comma-separated sets under ../shared/data; NAME:K keeps every K-th row of that set "
                        "(coco128_instances: its objects of >= 96x96 pixels; davis2016_val: frames)")
    parser.add_argument("--every", type=int, default=1, help="use every N-th instance of each set (1 = all)")
    parser.add_argument("--systems", default="reference", help="'reference' to run the official predictor, "
                        "'' to skip it")
    parser.add_argument("--variants", default="anymask", help="comma-separated session strategies: 'anymask' "
                        f"(the default strategy) and/or studied variants: {', '.join(VARIANTS)}")
    parser.add_argument("--cache", default="/tmp/anymask-click-cache", help="folder for cached embeddings")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", default=str(RESULTS / "clicks"), help="output path without extension")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--log", action="store_true", help="log each instance's NoC@90 as it is measured")
    parser.add_argument("--share-embeddings", action="store_true",
                        help="give the reference anymask's image embeddings (same weights, equal to ~1e-4) "
                        "instead of running its own encoder: halves the encoder time")
    args = parser.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.systems = [s for s in args.systems.split(",") if s]
    args.variants = [v for v in args.variants.split(",") if v]
    logging.basicConfig(level=logging.INFO if args.log else logging.WARNING, format="%(message)s")
    report = run(args)
    table = markdown(report)
    print(table)
    from anymask.fileio import atomic_write_text

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
