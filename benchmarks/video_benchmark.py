"""Video object segmentation benchmark on DAVIS 2016 val (``../shared/data/davis2016_val``).

For every sequence the object is prompted on frame 0 (the tight box of its ground-truth mask, or the mask
itself) and propagated to the last frame with :class:`anymask.video.VideoPredictor`:

- ``mask``: anymask's default propagation (:class:`anymask.tracking.MaskPropagation`);
- ``box`` (naive baseline): each frame prompted with the box of the previous mask only.

Measures (DAVIS conventions, frame 0 excluded since it is the prompted frame): J-mean = mean over sequences of
the mean region IoU over frames; F-mean = the same for the boundary F-measure (``video_metrics.py``);
sequence means first, then the mean over sequences.

Each frame is encoded once per run: the first pass (``mask`` method, box prompt) reads the JPEG frames from
disk, encodes and propagates, timed end to end (frames/s and a breakdown: frame reading, encoder, propagation);
the other passes reuse its embeddings (held in memory for one sequence at a time). With ``--embedding-cache
DIR`` embeddings are read from / written to DIR (float16 ``.npy``, outside the repo) so that reruns skip the
encoder; frames/s then come from a separate end-to-end pass over ``--fps-frames`` frames of ``--fps-sequence``
that encodes every frame.

    flock /tmp/anymask-bench.lock python benchmarks/video_benchmark.py [--sequences a,b] [--stride 2]

Writes benchmarks/results/video.json and video.md and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "src"))

from benchmarks.datasets import SHARED_DATA, box_of, load_mask, read_index  # noqa: E402
from benchmarks.video_metrics import boundary_f, region_j  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"


def _timed_predictor_class():
    from anymask.predictor import ImageEmbedding
    from anymask.video import VideoPredictor

    class TimedVideoPredictor(VideoPredictor):
        """Records encoder time and embeddings; reuses ``known`` embeddings or an on-disk cache."""

        def __init__(self, *args, known=None, cache_dir=None, stride=1, **kwargs):
            super().__init__(*args, **kwargs)
            self.stride = stride
            self.known = known if known is not None else {}
            self.cache_dir = cache_dir
            self.encode_s, self.encoded = 0.0, 0

        def encode(self, index, frame):
            embedding = self.known.get(index)
            path = self.cache_dir / f"{index * self.stride:05d}.npy" if self.cache_dir else None  # by frame number
            if embedding is None and path is not None and path.exists():
                h, w = frame.shape[:2]
                features = np.load(path).astype(np.float32)
                from anymask.predictor import resized_shape

                embedding = ImageEmbedding(features, (h, w), resized_shape(h, w, self.predictor.spec.image_size),
                                           self.predictor.spec.name)
            if embedding is not None:
                self.predictor.set_embedding(embedding)
            else:
                start = time.perf_counter()
                embedding = self.predictor.set_image(frame)
                self.encode_s += time.perf_counter() - start
                self.encoded += 1
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, embedding.features.astype(np.float16))
            self.known[index] = embedding
            return embedding

    return TimedVideoPredictor


def run_pass(predictor, rows, strategy, prompt, known, cache_dir=None, stride=1):
    """Propagate one sequence; returns per-frame masks (frames 1..), timing, and the embeddings used."""
    cls = _timed_predictor_class()
    video = cls(predictor, strategy=strategy, known=known, cache_dir=cache_dir, stride=stride)
    start = time.perf_counter()
    video.open([r["image"] for r in rows])  # a list of JPEG paths: read lazily, one frame at a time
    if prompt == "box":
        video.add_prompt(0, 1, box=box_of(rows[0]))
    else:
        video.add_prompt(0, 1, mask=load_mask(rows[0]["mask"]))
    masks = {}
    step_s = 0.0
    iterator = video.propagate()
    while True:
        t0 = time.perf_counter()
        try:
            index, out = next(iterator)
        except StopIteration:
            break
        step_s += time.perf_counter() - t0
        if index > 0:
            masks[index] = out[1]
    total = time.perf_counter() - start
    return masks, {"total_s": total, "encode_s": video.encode_s, "encoded": video.encoded,
                   "frames": len(rows)}, video.known


def score(rows, masks):
    j = [region_j(masks[i], load_mask(rows[i]["mask"])) for i in sorted(masks)]
    f = [boundary_f(masks[i], load_mask(rows[i]["mask"])) for i in sorted(masks)]
    return float(np.mean(j)), float(np.mean(f))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", default="", help="comma-separated sequence names (default: all)")
    parser.add_argument("--stride", type=int, default=1, help="use every N-th frame (default 1: all)")
    parser.add_argument("--model", default="mobile_sam")
    parser.add_argument("--embedding-cache", type=Path, help="read/write frame embeddings here (not the repo)")
    parser.add_argument("--fps-sequence", default="blackswan", help="sequence of the end-to-end fps pass")
    parser.add_argument("--fps-frames", type=int, default=20, help="frames of the fps pass (with a cache)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the accuracy passes (default: torch's choice); the end-to-end fps "
                        "pass always runs with torch's default")
    parser.add_argument("--fps-only", action="store_true",
                        help="only the end-to-end fps pass (prints; writes video_fps.json under --out)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    from anymask import Predictor, __version__, load_model

    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = SHARED_DATA / "davis2016_val"
    by_seq: dict[str, list[dict]] = {}
    for row in read_index(data):
        by_seq.setdefault(row["image"].parent.name, []).append(row)
    names = args.sequences.split(",") if args.sequences else sorted(by_seq)
    predictor = Predictor(load_model(args.model))
    load_start = os.getloadavg()
    if args.fps_only:
        rows = by_seq[args.fps_sequence][:args.fps_frames]
        _, t, _ = run_pass(predictor, rows, "mask", "box", {}, None)
        t.update(fps=t["frames"] / t["total_s"], encoder_s_per_frame=t["encode_s"] / t["frames"],
                 rest_s_per_frame=(t["total_s"] - t["encode_s"]) / t["frames"], load_average_start=load_start,
                 load_average_end=os.getloadavg(), sequence=args.fps_sequence, torch_threads=torch.get_num_threads())
        print(json.dumps(t, indent=2))
        from anymask.fileio import atomic_write_text

        atomic_write_text(args.out / "video_fps.json", json.dumps(t, indent=2) + "\n")
        return 0
    passes = [("mask", "box"), ("box", "box"), ("mask", "mask")]
    per_seq: dict[str, dict] = {}
    timing = {"frames": 0, "total_s": 0.0, "encode_s": 0.0, "encoded": 0, "propagate_s": {}}
    for name in names:
        rows = by_seq[name][::args.stride]
        cache_dir = args.embedding_cache / args.model / name if args.embedding_cache else None
        known: dict = {}
        per_seq[name] = {"frames": len(rows)}
        for strategy, prompt in passes:
            masks, t, known = run_pass(predictor, rows, strategy, prompt, known, cache_dir, args.stride)
            j, f = score(rows, masks)
            per_seq[name][f"{strategy}/{prompt}"] = {"J": j, "F": f}
            prop = t["total_s"] - t["encode_s"]
            timing["propagate_s"].setdefault(f"{strategy}/{prompt}", 0.0)
            timing["propagate_s"][f"{strategy}/{prompt}"] += prop
            if (strategy, prompt) == passes[0]:
                for key in ("frames", "total_s", "encode_s", "encoded"):
                    timing[key] += t[key]
            print(f"{name:20s} {strategy}/{prompt:4s} J={j:.3f} F={f:.3f} frames={len(rows)} "
                  f"encoded={t['encoded']} s={t['total_s']:.1f}", flush=True)
        del known

    # end-to-end fps: reading JPEGs + encoder + propagation, every frame encoded in this run
    fps_rows = by_seq[args.fps_sequence][:args.fps_frames]
    accuracy_threads = torch.get_num_threads()
    torch.set_num_threads(default_threads)
    if timing["encoded"] == timing["frames"]:
        fps_source = f"the accuracy pass of the mask method: all {timing['frames']} frames encoded in this run"
        e2e = {"frames": timing["frames"], "total_s": timing["total_s"], "encode_s": timing["encode_s"],
               "propagate_s": timing["propagate_s"]["mask/box"] - 0.0}
    else:
        _, t, known = run_pass(predictor, fps_rows, "mask", "box", {}, None)
        start = time.perf_counter()
        run_pass(predictor, fps_rows, "box", "box", known, None)
        box_prop = time.perf_counter() - start
        fps_source = f"a separate pass over the first {len(fps_rows)} frames of {args.fps_sequence}"
        e2e = {"frames": t["frames"], "total_s": t["total_s"], "encode_s": t["encode_s"],
               "propagate_s": t["total_s"] - t["encode_s"], "box_propagate_s": box_prop}
    e2e["fps"] = e2e["frames"] / e2e["total_s"]
    e2e["encoder_s_per_frame"] = e2e["encode_s"] / e2e["frames"]
    e2e["rest_s_per_frame"] = (e2e["total_s"] - e2e["encode_s"]) / e2e["frames"]

    summary = {}
    for strategy, prompt in passes:
        key = f"{strategy}/{prompt}"
        summary[key] = {
            "J_mean": float(np.mean([per_seq[n][key]["J"] for n in names])),
            "F_mean": float(np.mean([per_seq[n][key]["F"] for n in names])),
            "propagate_s_per_frame": timing["propagate_s"][key] / max(1, sum(per_seq[n]["frames"] for n in names)),
        }
    result = {
        "benchmark": "video (DAVIS 2016 val, first-frame prompt, propagation to the last frame)",
        "anymask_version": __version__, "model": args.model, "torch_threads_accuracy": accuracy_threads,
        "torch_threads_fps": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_average_start": load_start,
        "load_average_end": os.getloadavg(), "sequences": names, "stride": args.stride,
        "frames": sum(per_seq[n]["frames"] for n in names), "summary": summary, "per_sequence": per_seq,
        "end_to_end": e2e, "fps_source": fps_source,
        "embeddings": "computed in this run" if not args.embedding_cache else
        f"cached float16 embeddings of this model (computed once, {timing['encoded']} frames encoded in this run)",
    }
    lines = [
        "| method | prompt (frame 0) | J-mean | F-mean | J&F | propagation s/frame |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    labels = {"mask": "anymask mask propagation (default)", "box": "naive: box of previous mask"}
    for strategy, prompt in passes:
        s = summary[f"{strategy}/{prompt}"]
        lines.append(f"| {labels[strategy]} | {prompt} | {s['J_mean']:.3f} | {s['F_mean']:.3f} | "
                     f"{(s['J_mean'] + s['F_mean']) / 2:.3f} | {s['propagate_s_per_frame']:.3f} |")
    lines += [
        "",
        f"End to end (read JPEG + encode + propagate, mask method): **{e2e['fps']:.2f} frames/s** = "
        f"{e2e['encoder_s_per_frame']:.3f} s encoder + {e2e['rest_s_per_frame']:.3f} s reading and propagation per "
        f"frame; measured on {fps_source}.",
        "",
        "| sequence | frames | " + " | ".join(f"J {s}/{p}" for s, p in passes) + " |",
        "| --- | --- | " + " | ".join("---" for _ in passes) + " |",
    ]
    for n in names:
        lines.append(f"| {n} | {per_seq[n]['frames']} | "
                     + " | ".join(f"{per_seq[n][f'{s}/{p}']['J']:.3f}" for s, p in passes) + " |")
    lines += ["", f"Model {args.model}, {result['machine']}, torch threads {accuracy_threads} (accuracy passes) / "
              f"{result['torch_threads_fps']} (fps pass), load average "
              f"{load_start[0]:.1f} at start, {result['load_average_end'][0]:.1f} at end (shared machine). "
              f"Embeddings: {result['embeddings']}. Stride {args.stride}."]
    table = "\n".join(lines)
    print(table)
    from anymask.fileio import atomic_write_text

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "video.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / "video.md", "# Video benchmark (DAVIS 2016 val)\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
