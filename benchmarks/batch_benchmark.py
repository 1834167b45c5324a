"""Throughput of ``anymask batch``: images/s for ``embed`` and ``everything`` with 1 and 2 workers, under the
local engine (worker processes) and under Ray Data on this machine.

    flock /tmp/anymask-bench.lock python benchmarks/batch_benchmark.py [--images 8] [--points-per-side 8]

Images: the first N COCO128 photos (``../shared/data/coco128_instances``, mostly 640 x 480). Model: MobileSAM,
default backend (onnxruntime on the CPU). ``everything`` runs on a small grid (``--points-per-side``, default 8
= 64 prompts per image, not SAM's 32 x 32) to keep the benchmark short. Each worker gets cores / workers compute
threads (Ray: as many CPUs). Every configuration writes into a fresh output folder.

Reported per run: wall seconds from the start of the run (worker start-up and model loading included) to the
last result, images/s over that wall time, start-up (seconds to the first result), the worker-side rate
(workers / mean seconds per image inside a worker: the rate once the workers are up), and the mean seconds per
image inside a worker: decoding the image (load), the model (compute) and writing the result (write).
Writes ``benchmarks/results/batch.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.datasets import SHARED_DATA  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
CONFIGS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))


def _run(task: str, engine: str, workers: int, src: Path, out: Path, generator: dict) -> dict:
    from anymask.batch import TaskSpec, read_inputs, run_batch

    threads = max(1, (os.cpu_count() or 1) // workers)
    spec = TaskSpec(task, generator=generator if task == "everything" else {}, threads=threads)
    items = read_inputs(src, task)
    load_before = os.getloadavg()[0]
    summary = run_batch(items, spec, out, engine=engine, workers=workers, batch_size=1, progress=False)
    assert summary.done == len(items) and summary.failed == 0, summary.failures
    mean = {k: summary.worker_seconds[k] / summary.done for k in ("load", "compute", "write")}
    # what the workers could sustain once started: workers / mean seconds per image inside a worker
    worker_rate = workers * summary.done / summary.worker_seconds["total"]
    return {
        "task": task, "engine": engine, "workers": workers, "threads_per_worker": threads, "images": len(items),
        "wall_s": round(summary.seconds, 2), "images_per_s": round(summary.images_per_s, 3),
        "startup_s": round(summary.first_result_s, 1), "worker_images_per_s": round(worker_rate, 3),
        "per_image_s": {k: round(v, 3) for k, v in mean.items()},
        "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="COCO128 photos to process (default 8)")
    parser.add_argument("--points-per-side", type=int, default=8, help="everything's grid (default 8)")
    parser.add_argument("--tasks", default="embed,everything", help="comma-separated tasks (default both)")
    args = parser.parse_args()

    import numpy as np
    import ray

    from anymask import ImageEmbedding

    photos = sorted((SHARED_DATA / "coco128_instances" / "images").glob("*.jpg"))[: args.images]
    work = Path(tempfile.mkdtemp(prefix="anymask-batch-bench-"))
    src = work / "in"
    src.mkdir()
    for p in photos:
        (src / p.name).symlink_to(p)
    os.environ["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ.pop("ANYMASK_BACKEND", None)
    generator = {"points_per_side": args.points_per_side}
    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=300 * 2**20, log_to_driver=False,
             logging_level="warning")
    ray_init_s = time.perf_counter() - t
    rows = []
    try:
        for task in args.tasks.split(","):
            for engine, workers in CONFIGS:
                out = work / f"{task}-{engine}-{workers}"
                row = _run(task, engine, workers, src, out, generator)
                rows.append(row)
                print(json.dumps(row), flush=True)
        # the same embeddings from both engines
        a = ImageEmbedding.load(work / "embed-local-1" / "embeddings" / f"{photos[0].stem}.npz").features
        b = ImageEmbedding.load(work / "embed-ray-2" / "embeddings" / f"{photos[0].stem}.npz").features
        engines_max_abs_diff = float(np.abs(a - b).max()) if "embed" in args.tasks else None
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    import onnxruntime
    import torch

    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "ray": ray.__version__,
        "images": [p.name for p in photos], "everything_points_per_side": args.points_per_side,
        "backend": "onnx (default)", "batch_size": 1, "ray_init_s": round(ray_init_s, 1),
        "embed_local_vs_ray_max_abs_diff": engines_max_abs_diff,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=2) + "\n")
    lines = [
        "# Batch benchmark: images/s of `anymask batch` (local worker processes vs Ray Data, this machine)",
        "",
        f"Machine: {meta['machine']}; torch {meta['torch']}, onnxruntime {meta['onnxruntime']}, Ray "
        f"{meta['ray']}. MobileSAM, default backend (onnx). {len(photos)} COCO128 photos (mostly 640x480). "
        f"`everything` on a {args.points_per_side}x{args.points_per_side} grid (not SAM's 32x32). Threads per "
        f"worker = CPUs / workers. Ray started once before the runs ({meta['ray_init_s']} s, not counted); "
        "actor start-up is counted.",
        "",
        "| task | engine | workers | threads/worker | wall (s) | images/s | start-up (s) | worker-side images/s | "
        "decode (s/img) | model (s/img) | write (s/img) | load avg before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["per_image_s"]
        lines.append(f"| {r['task']} | {r['engine']} | {r['workers']} | {r['threads_per_worker']} | {r['wall_s']} | "
                     f"{r['images_per_s']} | {r['startup_s']} | {r['worker_images_per_s']} | {s['load']} | {s['compute']} | {s['write']} | "
                     f"{r['load_avg_before']} / {r['load_avg_after']} |")
    lines += ["", "wall = run start to last result (worker start-up and model loading included); start-up = run "
              "start to the first result; worker-side = workers / mean seconds per image inside a worker (the rate once workers are up); decode / model / write = mean seconds per image inside "
              "a worker.", ""]
    if engines_max_abs_diff is not None:
        lines.append(f"Embeddings of local (1 worker) and Ray (2 workers) runs: max abs difference "
                     f"{engines_max_abs_diff:.2e}.")
    (RESULTS / "batch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
