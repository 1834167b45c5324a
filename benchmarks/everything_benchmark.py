"""Segment-everything benchmark: anymask's AutomaticMaskGenerator beside the official one, same weights.

The reference is ``segment_anything.SamAutomaticMaskGenerator`` driving MobileSAM's original network (built by
:func:`benchmarks.reference.reference_predictor` with the same checkpoint). Each system runs in its own
subprocess, so that its peak RSS is its own. Measured, at SAM's default settings (32 x 32 points, batch 64):

* time per image on ``--images`` real photos resized to 1024 px on the long side (GrabCut, DAVIS, COCO128);
* peak RSS of each worker process (model load included);
* agreement: share of reference masks matched by an anymask mask with IoU >= 0.9, and the converse;
* recall of COCO128 ground-truth instances (best IoU >= 0.5, crowd regions left out) on ``--coco-images``
  images for anymask and the first ``--reference-coco-images`` of them for the reference.

anymask runs exact (``anymask``: no result-changing option), with ``skip_covered_points`` (``anymask_skip``) and
with the decoder's mask upscaling in int8 (``anymask_int8``); ``anymask_plain`` is the exact run with the plain mask
decoder (``fold=False``), to time the folded decoder (the default) against it.

    flock /tmp/anymask-bench.lock python benchmarks/everything_benchmark.py --images 3 --coco-images 8 \
        --reference-coco-images 2

Writes ``benchmarks/results/everything.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.datasets import SHARED_DATA  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
PHOTOS = ("grabcut/images/106024.jpg", "davis2016_val/images/blackswan/00000.jpg",
          "coco128_instances/images/000000000025.jpg", "grabcut/images/153077.jpg",
          "davis2016_val/images/camel/00000.jpg")
ARGS: argparse.Namespace | None = None
SYSTEMS = {"reference": {}, "anymask_plain": {}, "anymask": {}, "anymask_skip": {"skip_covered_points": True},
           "anymask_int8": {"precision": "int8"}, "anymask_product": {}}
#: run only with --product-python: anymask's defaults under another interpreter (the product's torch build)
PRODUCT_SYSTEM = "anymask_product"


def photo_1024(rel: str) -> np.ndarray:
    """A real photo resized (bicubic) so that its long side is 1024 px."""
    from PIL import Image

    image = Image.open(SHARED_DATA / rel).convert("RGB")
    scale = 1024 / max(image.size)
    size = (round(image.size[0] * scale), round(image.size[1] * scale))
    return np.asarray(image.resize(size, Image.Resampling.BICUBIC))


def coco_images(count: int) -> list[str]:
    """The first ``count`` COCO128 images that have non-crowd instances (index order)."""
    rows = json.loads((SHARED_DATA / "coco128_instances" / "index.json").read_text())
    names: list[str] = []
    for row in rows:
        if not row["iscrowd"] and row["image"] not in names:
            names.append(row["image"])
    return names[:count]


def gt_masks(image_name: str) -> list[np.ndarray]:
    from benchmarks.datasets import load_mask

    rows = json.loads((SHARED_DATA / "coco128_instances" / "index.json").read_text())
    return [load_mask(SHARED_DATA / "coco128_instances" / "masks" / r["mask"])
            for r in rows if r["image"] == image_name and not r["iscrowd"]]


# ----------------------------------------------------------------------------------------------- worker


def worker(system: str, photos: list[str], coco: list[str], out: Path, points_per_side: int, threads: int) -> None:
    """Run one system on the photos (timed) and the COCO images; write RLEs, times and peak RSS."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from anymask import load_model, weights
    from anymask.images import load_image

    checkpoint = weights.resolve("mobile_sam")
    if system == "reference":
        from segment_anything import SamAutomaticMaskGenerator

        from benchmarks.reference import reference_predictor

        generator = SamAutomaticMaskGenerator(reference_predictor("mobile_sam", checkpoint).model,
                                              points_per_side=points_per_side, output_mode="coco_rle")
        warm = SamAutomaticMaskGenerator(generator.predictor.model, points_per_side=2, output_mode="coco_rle")
    else:
        from anymask.automatic import AutomaticMaskGenerator

        model = load_model("mobile_sam", checkpoint=checkpoint)
        model.mask_decoder.transformer.fold = system != "anymask_plain"
        generator = AutomaticMaskGenerator(model, points_per_side=points_per_side, output_mode="coco_rle",
                                           **SYSTEMS[system])
        warm = AutomaticMaskGenerator(model, points_per_side=2, output_mode="coco_rle")
    warm.generate(photo_1024(photos[0])[:256, :256].copy())  # first-call initialisation, not timed
    result: dict = {"system": system, "threads": torch.get_num_threads(), "photos": [], "coco": [],
                    "torch": torch.__version__}
    for rel in photos:
        image = photo_1024(rel)
        start, cpu_start = time.perf_counter(), time.process_time()
        masks = generator.generate(image)
        seconds = time.perf_counter() - start
        entry = {"image": rel, "size": list(image.shape[:2]), "seconds": seconds,
                 "cpu_seconds": time.process_time() - cpu_start,
                 "rles": [m["segmentation"] for m in masks]}
        if system != "reference":
            entry["stats"] = generator.last_stats
        result["photos"].append(entry)
        _dump(result, out)  # after every image: an interrupted run keeps what it measured
        print(f"{system} {rel}: {len(masks)} masks, {seconds:.1f} s", file=sys.stderr, flush=True)
    for name in coco:
        start, cpu_start = time.perf_counter(), time.process_time()
        masks = generator.generate(load_image(SHARED_DATA / "coco128_instances" / "images" / name))
        result["coco"].append({"image": name, "seconds": time.perf_counter() - start,
                               "cpu_seconds": time.process_time() - cpu_start,
                               "rles": [m["segmentation"] for m in masks]})
        _dump(result, out)
    result["complete"] = True
    _dump(result, out)


def _dump(result: dict, out: Path) -> None:
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out)


# ------------------------------------------------------------------------------------------------ parent


def _iou_matrix(a: list[dict], b: list[dict]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if not a or not b:
        return np.zeros((len(a), len(b)))
    enc = lambda rles: [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles]  # noqa: E731
    return np.asarray(mask_utils.iou(enc(a), enc(b), [0] * len(b))).reshape(len(a), len(b))


def agreement(ours: list[dict], ref: list[dict], thresh: float = 0.9) -> tuple[float, float]:
    """(share of reference masks matched by ours, share of ours matched by the reference) at IoU >= thresh."""
    if not ours or not ref:
        return (0.0 if ref else 1.0), (0.0 if ours else 1.0)
    iou = _iou_matrix(ours, ref)
    ref_matched = float((iou.max(axis=0) >= thresh).mean())
    ours_matched = float((iou.max(axis=1) >= thresh).mean())
    return ref_matched, ours_matched


def coco_recall(entries: list[dict]) -> tuple[float, int]:
    """Share of non-crowd ground-truth instances with a predicted mask of IoU >= 0.5, and their count."""
    from anymask.masks import encode_rle

    hits = total = 0
    for entry in entries:
        gts = [encode_rle(m) for m in gt_masks(entry["image"])]
        iou = _iou_matrix(entry["rles"], gts)
        total += len(gts)
        hits += int((iou.max(axis=0) >= 0.5).sum()) if len(entry["rles"]) else 0
    return (hits / total if total else float("nan")), total


def start_worker(system: str, photos: list[str], coco: list[str], tmp: Path) -> tuple[subprocess.Popen, Path]:
    out = tmp / f"everything_{system}.json"
    out.unlink(missing_ok=True)
    python = ARGS.product_python if system == PRODUCT_SYSTEM else sys.executable
    cmd = [python, __file__, "--worker", system, "--photos", *photos, "--coco", *coco, "--out", str(out),
           "--points-per-side", str(ARGS.points_per_side), "--threads", str(ARGS.threads)]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(cmd, env=env), out


def finish_worker(proc: subprocess.Popen, out: Path) -> dict:
    if proc.wait() != 0:
        raise SystemExit(f"worker {out.name} failed with exit code {proc.returncode}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3, help="timed 1024 px photos (max %d)" % len(PHOTOS))
    parser.add_argument("--coco-images", type=int, default=8, help="COCO128 images for anymask's recall")
    parser.add_argument("--reference-coco-images", type=int, default=2, help="of those, how many for the reference")
    parser.add_argument("--systems", default=",".join(s for s in SYSTEMS if s != PRODUCT_SYSTEM),
                        help="comma-separated subset of " + ",".join(s for s in SYSTEMS if s != PRODUCT_SYSTEM))
    parser.add_argument("--product-python", help=f"also run {PRODUCT_SYSTEM}: anymask's defaults under this interpreter "
                        "(e.g. a venv with the CPU build of torch that the product installs; this checkout's src first "
                        "on its path): a user's peak memory, where the reference needs torchvision and so the CUDA build")
    parser.add_argument("--parallel", action="store_true",
                        help="run the baseline's worker (the reference) at the same time as the other systems' "
                        "workers, which run one after another: two workers at a time, one per core with --threads 1")
    parser.add_argument("--reuse", default="", help="comma-separated systems whose worker output in --tmp from an "
                        "earlier run is reused instead of running them again")
    parser.add_argument("--points-per-side", type=int, default=32,
                        help="grid of every system (default 32, SAM's default; smaller when time is short)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per worker (0 = torch's default); 1 makes CPU seconds comparable on a "
                        "loaded machine")
    parser.add_argument("--baseline", default="reference", help="the system that ratios and mask agreement (the "
                        "'ref' columns) compare against, e.g. anymask_plain when the reference does not run")
    parser.add_argument("--name", default="everything", help="results file name: benchmarks/results/<name>.{json,md}")
    parser.add_argument("--note", default="", help="a sentence added to the results (e.g. how the machine was loaded)")
    parser.add_argument("--tmp", default="/tmp/anymask-everything-bench", help="folder for the workers' outputs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--photos", nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--coco", nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global ARGS
    ARGS = args
    if args.worker:
        worker(args.worker, args.photos, args.coco, Path(args.out), args.points_per_side, args.threads)
        return

    photos = list(PHOTOS[: args.images])
    coco = coco_images(args.coco_images)
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    results = {}
    systems = args.systems.split(",") + ([PRODUCT_SYSTEM] if args.product_python else [])
    reused = [s for s in args.reuse.split(",") if s]
    for s in reused:  # a system whose worker output from an earlier run (same photos) is kept
        results[s] = json.loads((tmp / f"everything_{s}.json").read_text())
    systems = [s for s in systems if s not in reused]
    subsets = {s: coco[: args.reference_coco_images] if s == "reference" else coco for s in systems}
    if args.parallel:  # two lanes: the baseline's worker beside the others, which run one after another
        lane = [s for s in systems if s == args.baseline][:1]
        running = {s: start_worker(s, photos, subsets[s], tmp) for s in lane}
        for s in systems:
            if s not in lane:
                results[s] = finish_worker(*start_worker(s, photos, subsets[s], tmp))
        results.update({s: finish_worker(*running[s]) for s in lane})
    else:
        for s in systems:
            results[s] = finish_worker(*start_worker(s, photos, subsets[s], tmp))
    order = [s for s in SYSTEMS if s in results]
    report = summarise({s: results[s] for s in order}, photos, coco[: args.reference_coco_images], args.baseline)
    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                         "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    report["command"] = "python benchmarks/everything_benchmark.py " + " ".join(sys.argv[1:])
    report["parallel"] = bool(args.parallel)
    report["reused"] = args.reuse
    report["note"] = args.note
    report["points_per_side"] = args.points_per_side
    report["threads"] = args.threads
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = to_markdown(report)
    (RESULTS / f"{args.name}.md").write_text(markdown)
    print(markdown)


def summarise(results: dict, photos: list[str], ref_coco: list[str], baseline: str = "reference") -> dict:
    ref = results.get(baseline)
    rows = []
    for system, res in results.items():
        row: dict = {"system": system, "peak_rss_mb": res["peak_rss_mb"], "threads": res["threads"],
                     "complete": bool(res.get("complete", True)),
                     "seconds": [p["seconds"] for p in res["photos"]],
                     "masks": [len(p["rles"]) for p in res["photos"]], "torch": res.get("torch", "?")}
        row["mean_seconds"] = float(np.mean(row["seconds"]))
        row["cpu_seconds"] = [p.get("cpu_seconds", float("nan")) for p in res["photos"]]
        row["mean_cpu_seconds"] = float(np.mean(row["cpu_seconds"]))
        if ref and system != baseline:
            row["speedup"] = [r["seconds"] / p["seconds"] for p, r in zip(res["photos"], ref["photos"])]
            row["cpu_speedup"] = [r.get("cpu_seconds", np.nan) / p.get("cpu_seconds", np.nan)
                                  for p, r in zip(res["photos"], ref["photos"])]
            n = min(len(res["photos"]), len(ref["photos"]))  # photos both measured (a worker may have been cut short)
            row["mean_speedup"] = float(np.mean([r["seconds"] for r in ref["photos"][:n]])
                                        / np.mean([p["seconds"] for p in res["photos"][:n]]))
            row["mean_cpu_speedup"] = float(np.mean([r.get("cpu_seconds", np.nan) for r in ref["photos"][:n]])
                                            / np.mean([p.get("cpu_seconds", np.nan) for p in res["photos"][:n]]))
            pairs = [agreement(p["rles"], r["rles"]) for p, r in zip(res["photos"], ref["photos"])]
            row["ref_matched"] = [a for a, _ in pairs]
            row["ours_matched"] = [b for _, b in pairs]
            row["memory_ratio"] = res["peak_rss_mb"] / ref["peak_rss_mb"]
        if "stats" in res["photos"][0]:
            keys = res["photos"][0]["stats"]["timings"]
            row["breakdown_s"] = {k: float(np.mean([p["stats"]["timings"][k] for p in res["photos"]])) for k in keys}
            row["prompts"] = [p["stats"]["prompts"] for p in res["photos"]]
        row["coco_recall"], row["coco_instances"] = coco_recall(res["coco"])
        row["coco_images"] = len(res["coco"])
        common = [c for c in res["coco"] if c["image"] in ref_coco]
        row["coco_recall_common"], _ = coco_recall(common)
        row["coco_seconds_mean"] = float(np.mean([c["seconds"] for c in res["coco"]])) if res["coco"] else None
        rows.append(row)
    return {"photos": photos, "reference_coco_images": ref_coco, "rows": rows, "baseline": baseline}


def to_markdown(report: dict) -> str:
    m = report.get("machine", {})
    lines = [
        "# Segment everything: anymask vs the official SamAutomaticMaskGenerator (MobileSAM weights)",
        "",
        f"Command: `{report.get('command', '')}` (under `flock /tmp/anymask-bench.lock`). Machine: {m.get('cpus')} "
        f"CPUs, load average before/after {tuple(round(v, 1) for v in m.get('loadavg_before', ()))} / "
        f"{tuple(round(v, 1) for v in m.get('loadavg_after', ()))} (a shared machine: absolute times are noisy, "
        "ratios come from the same run)."
        + (" With `--parallel` the baseline's worker ran beside the other systems' workers, which ran one after"
           " another (two workers at a time); the baseline, the longest, ran alone at its end, which favours it."
           if report.get("parallel") else "")
        + (f" Worker results of `{report['reused']}` were reused from an earlier run of the same command (their"
           " own times and load)." if report.get("reused") else "")
        + (f" {report['note']}" if report.get("note") else ""),
        f"Photos (resized to 1024 px on the long side): {', '.join(report['photos'])}. Settings: "
        f"{report.get('points_per_side', 32)} x {report.get('points_per_side', 32)} points, SAM's other defaults "
        "(batch 64, pred_iou 0.88, stability 0.95, box NMS 0.7); torch threads per worker: "
        f"{report.get('threads') or 'default'}. CPU s = the worker process's CPU time for the image."
        + (f" 'ref' columns compare against `{report['baseline']}`." if report.get("baseline", "reference") !=
           "reference" else ""),
        "",
        "| system | s / image (each) | speed-up vs ref | CPU s / image (each) | CPU speed-up | peak RSS MB | RSS vs ref | masks | ref masks matched "
        "(IoU>=0.9) | own masks matched | COCO recall@0.5 (images) | COCO recall, ref's images |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        fmt = lambda xs: " / ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        lines.append(
            f"| {r['system']} (torch {r.get('torch', '?')}){'' if r.get('complete', True) else ' (cut short)'} | {r['mean_seconds']:.1f} ({' / '.join(f'{s:.1f}' for s in r['seconds'])}) | "
            f"{r.get('mean_speedup', 1.0):.2f}x | {r['mean_cpu_seconds']:.1f} "
            f"({' / '.join(f'{s:.1f}' for s in r['cpu_seconds'])}) | {r.get('mean_cpu_speedup', 1.0):.2f}x | "
            f"{r['peak_rss_mb']:.0f} | {r.get('memory_ratio', 1.0):.2f} | "
            f"{'/'.join(map(str, r['masks']))} | {fmt(r['ref_matched']) if 'ref_matched' in r else '-'} | "
            f"{fmt(r['ours_matched']) if 'ours_matched' in r else '-'} | {r['coco_recall']:.3f} "
            f"({r['coco_images']} img, {r['coco_instances']} inst) | {r['coco_recall_common']:.3f} |")
    lines += ["", "Time breakdown of anymask (seconds per photo, mean):", "",
              "| system | prompts decoded | " + " | ".join(k for k in _breakdown_keys(report)) + " |",
              "|---|---|" + "---|" * len(_breakdown_keys(report))]
    for r in report["rows"]:
        if "breakdown_s" in r:
            lines.append(f"| {r['system']} | {'/'.join(map(str, r['prompts']))} | "
                         + " | ".join(f"{r['breakdown_s'][k]:.2f}" for k in _breakdown_keys(report)) + " |")
    return "\n".join(lines) + "\n"


def _breakdown_keys(report: dict) -> list[str]:
    for r in report["rows"]:
        if "breakdown_s" in r:
            return list(r["breakdown_s"])
    return []


if __name__ == "__main__":
    main()
