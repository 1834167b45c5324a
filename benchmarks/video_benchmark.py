"""Video object segmentation benchmark on DAVIS 2016 val (``../shared/data/davis2016_val``).

For every sequence the object is prompted on frame 0 (the tight box of its ground-truth mask, or the mask
itself) and propagated to the last frame with :class:`anymask.video.VideoPredictor`:

- ``mask``: anymask's default propagation (:class:`anymask.tracking.MaskPropagation`);
- ``box`` (naive baseline): each frame prompted with the box of the previous mask only.

Measures (DAVIS conventions, frame 0 excluded since it is the prompted frame): J-mean = mean over sequences of
the mean region IoU over frames; F-mean = the same for the boundary F-measure (``video_metrics.py``);
sequence means first, then the mean over sequences.

Frames are encoded as the video predictor does by default (``VideoPredictor(pad_to_square=False)``: padded
only to a multiple of the encoder's stride, 1024 x 576 for DAVIS's 854 x 480, a 64 x 36 embedding), or padded to
the square 1024 x 1024 input as SAM does with ``--pad-to-square`` (``anymask video --padded``). Each frame is encoded
once per run: the first pass (``mask`` method, box prompt) reads the JPEG frames from disk, encodes and
propagates, timed end to end with a breakdown by stage (frame reading, encoder with its resize, decoder calls,
upsampling to frame masks, the rest); the other passes
reuse its embeddings (held in memory for one sequence at a time). With ``--embedding-cache DIR`` embeddings are
read from / written to DIR (float16 ``.npy``, outside the repo) so that reruns skip the encoder (experiments);
the end-to-end line is then left out.

Speed under load: the machine is shared, so after each sequence the first ``--baseline-frames`` frames are also
timed end to end in this mode and in the padded mode, back to back; their ratio is the speed-up measured
under the same load. Load averages are recorded after each sequence.

    flock /tmp/anymask-bench.lock python benchmarks/video_benchmark.py [--sequences a,b] [--stride 2]

Writes benchmarks/results/video.json and video.md and prints the table.
"""

from __future__ import annotations

import argparse
import ast
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


STAGES = ("read", "encode", "decode", "upsample")


class StageTimer:
    """Wall time spent in a few methods of a predictor and a frame source (wrapped on the instances only)."""

    def __init__(self) -> None:
        self.seconds = {stage: 0.0 for stage in STAGES}
        self.calls = {stage: 0 for stage in STAGES}

    def wrap(self, obj, method: str, stage: str) -> None:
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start
                self.calls[stage] += 1

        setattr(obj, method, timed)

    def unwrap(self, obj, *methods: str) -> None:
        for method in methods:
            obj.__dict__.pop(method, None)


def _timed_predictor_class():
    from anymask.predictor import ImageEmbedding, resized_shape
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

                embedding = ImageEmbedding(features, (h, w), resized_shape(h, w, self.predictor.spec.image_size),
                                           self.predictor.spec.name)
            if embedding is not None:
                self.predictor.set_embedding(embedding)
            else:
                start = time.perf_counter()
                embedding = self.predictor.set_image(frame, pad_to_square=self.pad_to_square)
                self.encode_s += time.perf_counter() - start
                self.encoded += 1
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, embedding.features.astype(np.float16))
            self.known[index] = embedding
            return embedding

    return TimedVideoPredictor


def run_pass(predictor, rows, strategy, prompt, known, cache_dir=None, stride=1, pad_to_square=False,
             overrides=None):
    """Propagate one sequence; returns per-frame masks (frames 1..), timing, and the embeddings used.

    Timing: ``total_s`` end to end; ``encode_s`` the encoder (resize included); ``stages``: seconds in frame
    reading (JPEG decode), the encoder, decoder calls and upsampling to frame masks (the rest is propagation
    logic: boxes, overlaps, loss detection).
    """
    cls = _timed_predictor_class()
    video = cls(predictor, strategy=strategy, known=known, cache_dir=cache_dir, stride=stride,
                pad_to_square=pad_to_square)
    for key, value in (overrides or {}).items():
        setattr(video.propagation, key, value)
    timer = StageTimer()
    timer.wrap(predictor, "set_image", "encode")
    timer.wrap(predictor, "predict_low_res", "decode")
    timer.wrap(predictor, "masks_from_low_res", "upsample")
    start = time.perf_counter()
    video.open([r["image"] for r in rows])  # a list of JPEG paths: read lazily, one frame at a time
    timer.wrap(video.source, "read", "read")
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
    timer.unwrap(predictor, "set_image", "predict_low_res", "masks_from_low_res")
    return masks, {"total_s": total, "encode_s": video.encode_s, "encoded": video.encoded,
                   "frames": len(rows), "stages": timer.seconds, "calls": timer.calls}, video.known


def score(rows, masks):
    j = [region_j(masks[i], load_mask(rows[i]["mask"])) for i in sorted(masks)]
    f = [boundary_f(masks[i], load_mask(rows[i]["mask"])) for i in sorted(masks)]
    return float(np.mean(j)), float(np.mean(f))


def per_frame(t: dict) -> dict:
    """Seconds per frame: total, each stage, and the rest (propagation logic), from a run_pass timing."""
    frames = max(1, t["frames"])
    out = {"total": t["total_s"] / frames}
    out.update({stage: t["stages"][stage] / frames for stage in STAGES})
    out["rest"] = out["total"] - sum(out[stage] for stage in STAGES)
    return out


def add_timing(into: dict, t: dict) -> None:
    for key in ("frames", "total_s", "encode_s", "encoded"):
        into[key] = into.get(key, 0) + t[key]
    stages = into.setdefault("stages", {stage: 0.0 for stage in STAGES})
    calls = into.setdefault("calls", {stage: 0 for stage in STAGES})
    for stage in STAGES:
        stages[stage] += t["stages"][stage]
        calls[stage] += t["calls"][stage]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", default="", help="comma-separated sequence names (default: all)")
    parser.add_argument("--stride", type=int, default=1, help="use every N-th frame (default 1: all)")
    parser.add_argument("--model", default="mobile_sam")
    parser.add_argument("--pad-to-square", action="store_true",
                        help="encode frames padded to the square model input as SAM does (anymask video --padded) "
                        "instead of the video predictor's default (padded only to a multiple of the encoder stride)")
    parser.add_argument("--embedding-cache", type=Path, help="read/write frame embeddings here (not the repo)")
    parser.add_argument("--baseline-frames", type=int, default=10,
                        help="per sequence, time the first N frames end to end in this mode and in the padded "
                        "mode, back to back, so that the speed ratio is measured under the same load (0: skip)")
    parser.add_argument("--propagation", default="",
                        help="KEY=VALUE,... attributes of the mask propagation to change (experiments)")
    parser.add_argument("--timing-only", action="store_true",
                        help="only the --baseline-frames timing of both modes (no accuracy passes); writes "
                        "video_timing.json / .md (a quick speed check, e.g. when the machine is idle)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true", help="print only (experiments)")
    parser.add_argument("--name", help="results file stem (default: video, or video_timing with --timing-only)")
    args = parser.parse_args()

    import torch

    from anymask import Predictor, __version__, load_model
    from anymask.fileio import atomic_write_text

    data = SHARED_DATA / "davis2016_val"
    by_seq: dict[str, list[dict]] = {}
    for row in read_index(data):
        by_seq.setdefault(row["image"].parent.name, []).append(row)
    names = args.sequences.split(",") if args.sequences else sorted(by_seq)
    predictor = Predictor(load_model(args.model))
    mode = "padded" if args.pad_to_square else "unpadded"
    overrides = {}
    for item in filter(None, args.propagation.split(",")):
        key, value = item.split("=")
        overrides[key] = ast.literal_eval(value)
    # warm-up outside the timings: graph export for this frame shape (once per machine) and session creation
    from anymask.images import load_image

    warm = load_image(by_seq[names[0]][0]["image"])
    for pad in {args.pad_to_square, True}:
        predictor.set_image(warm, pad_to_square=pad)
    load_start = os.getloadavg()

    passes = [] if args.timing_only else [("mask", "box"), ("box", "box"), ("mask", "mask")]
    per_seq: dict[str, dict] = {}
    first: dict = {}
    propagate_s: dict[str, float] = {}
    baseline = {"unpadded (default)" if not args.pad_to_square else "padded": {}, "padded (--padded, SAM's)": {}}
    loads = []
    for name in names:
        rows = by_seq[name][::args.stride]
        cache_dir = args.embedding_cache / args.model / mode / name if args.embedding_cache else None
        known: dict = {}
        per_seq[name] = {"frames": len(rows)}
        for strategy, prompt in passes:
            masks, t, known = run_pass(predictor, rows, strategy, prompt, known, cache_dir, args.stride,
                                       args.pad_to_square, overrides if strategy == "mask" else None)
            j, f = score(rows, masks)
            per_seq[name][f"{strategy}/{prompt}"] = {"J": j, "F": f}
            key = f"{strategy}/{prompt}"
            propagate_s[key] = propagate_s.get(key, 0.0) + t["total_s"] - t["encode_s"]
            if (strategy, prompt) == passes[0]:
                add_timing(first, t)
            print(f"{name:20s} {strategy}/{prompt:4s} J={j:.3f} F={f:.3f} frames={len(rows)} "
                  f"encoded={t['encoded']} s={t['total_s']:.1f}", flush=True)
        del known
        if args.baseline_frames:
            head = rows[: args.baseline_frames + 1]
            for label, pad in zip(baseline, (args.pad_to_square, True)):
                _, t, _ = run_pass(predictor, head, "mask", "box", {}, None, args.stride, pad)
                add_timing(baseline[label], t)
            print(f"{name:20s} baseline timing: " + ", ".join(
                f"{label} {baseline[label]['total_s'] / baseline[label]['frames']:.3f} s/frame" for label in baseline),
                flush=True)
        loads.append(os.getloadavg()[0])

    summary = {}
    total_frames = sum(per_seq[n]["frames"] for n in names)
    for strategy, prompt in passes:
        key = f"{strategy}/{prompt}"
        summary[key] = {
            "J_mean": float(np.mean([per_seq[n][key]["J"] for n in names])),
            "F_mean": float(np.mean([per_seq[n][key]["F"] for n in names])),
            "propagate_s_per_frame": propagate_s[key] / max(1, total_frames),
        }
    e2e = None
    if first and first["encoded"] == first["frames"]:
        e2e = {**first, "per_frame_s": per_frame(first)}
        e2e["fps"] = 1.0 / e2e["per_frame_s"]["total"]
    base = {label: {**t, "per_frame_s": per_frame(t), "fps": t["frames"] / t["total_s"]}
            for label, t in baseline.items() if t}
    labels_b = list(base)
    ratio = (base[labels_b[1]]["per_frame_s"]["total"] / base[labels_b[0]]["per_frame_s"]["total"]
             if len(base) == 2 else None)
    result = {
        "benchmark": "video (DAVIS 2016 val, first-frame prompt, propagation to the last frame)",
        "anymask_version": __version__, "model": args.model, "backend": predictor.backend,
        "encoder_mode": mode, "propagation_overrides": overrides, "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_average_start": load_start,
        "load_average_after_each_sequence": loads, "load_average_end": os.getloadavg(), "sequences": names,
        "stride": args.stride, "frames": total_frames, "summary": summary, "per_sequence": per_seq,
        "end_to_end": e2e, "baseline_timing": base, "speedup_vs_padded": ratio,
        "embeddings": "computed in this run" if not args.embedding_cache else
        f"cached float16 embeddings of this model (computed once, {first.get('encoded', 0)} frames encoded in this run)",
    }
    table_lines = [
        "| method | prompt (frame 0) | J-mean | F-mean | J&F | propagation s/frame |",
        "| --- | --- | --- | --- | --- | --- |",
    ] if passes else []
    lines = [
        f"Encoder mode: **{mode}** ({'resized frame padded to 1024 x 1024' if args.pad_to_square else 'resized frame padded only to a multiple of 16 px: 1024 x 576, a 64 x 36 embedding'}); backend {predictor.backend}.",
        "",
        *table_lines,
    ]
    labels = {"mask": "anymask mask propagation (default)", "box": "naive: box of previous mask"}
    for strategy, prompt in passes:
        s = summary[f"{strategy}/{prompt}"]
        lines.append(f"| {labels[strategy]} | {prompt} | {s['J_mean']:.3f} | {s['F_mean']:.3f} | "
                     f"{(s['J_mean'] + s['F_mean']) / 2:.3f} | {s['propagate_s_per_frame']:.3f} |")
    stage_head = "| run | frames | frames/s | s/frame | read | encoder (resize incl.) | decoder | upsample | rest |"
    stage_rule = "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"

    def stage_row(label: str, t: dict) -> str:
        pf = t["per_frame_s"]
        return (f"| {label} | {t['frames']} | {1 / pf['total']:.2f} | {pf['total']:.3f} | {pf['read']:.3f} | "
                f"{pf['encode']:.3f} | {pf['decode']:.3f} ({t['calls']['decode'] / t['frames']:.1f} calls) | "
                f"{pf['upsample']:.3f} | {pf['rest']:.3f} |")

    lines += ["", "End to end (read JPEG + encode + propagate, mask method, box prompt), seconds per frame by stage:", "",
              stage_head, stage_rule]
    if e2e:
        lines.append(stage_row(f"accuracy pass, {mode}, all frames", e2e))
    for label, t in base.items():
        lines.append(stage_row(f"first {args.baseline_frames + 1} frames of each sequence, {label}", t))
    if ratio:
        lines += ["", f"Same frames, same run: the {labels_b[0]} mode is **{ratio:.2f}x** as fast as the padded "
                  "mode (the ratio holds under load; absolute frames/s depend on the load below)."]
    lines += [
        "",
        "| sequence | frames | " + " | ".join(f"J {s}/{p}" for s, p in passes) + " |",
        "| --- | --- | " + " | ".join("---" for _ in passes) + " |",
    ] if passes else []
    for n in names if passes else []:
        lines.append(f"| {n} | {per_seq[n]['frames']} | "
                     + " | ".join(f"{per_seq[n][f'{s}/{p}']['J']:.3f}" for s, p in passes) + " |")
    lines += ["", f"Model {args.model}, {result['machine']}, torch threads {result['torch_threads']}, load average "
              f"{load_start[0]:.1f} at start, {', '.join(f'{v:.1f}' for v in loads)} after each sequence, "
              f"{result['load_average_end'][0]:.1f} at end (shared machine: other jobs ran). "
              f"Embeddings: {result['embeddings']}. Stride {args.stride}."
              + (f" Propagation overrides: {overrides}." if overrides else "")]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.name or ("video_timing" if args.timing_only else "video")
        atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=2) + "\n")
        atomic_write_text(args.out / f"{stem}.md", "# Video benchmark (DAVIS 2016 val)"
                          + (": speed only" if args.timing_only else "") + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
