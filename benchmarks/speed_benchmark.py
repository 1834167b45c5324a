"""Speed benchmark: the official MobileSAM reference and anymask's backends, same images, same run.

Each system runs in its own fresh process (so that peak RSS is its own) and is timed on:

* encoder (``set_image``) on a 1024x1024 photo and on a non-square photo (854x480);
* one click: 1 point, multimask, 3 masks upsampled to full resolution;
* the same click 0.3 s after the last one, as a person clicks in an interactive tool (``click_after_pause``: the
  threads have gone to sleep and the caches have cooled; back-to-back clicks do not show that cost);
* one box (1 mask at full resolution);
* 16 boxes in one call (16 masks at full resolution);
* 64 single-point prompts in one call at low resolution (one batch of the automatic mask generator);

for the reference, anymask's backends, and anymask's torch / onnx backends with the plain decoder
(``torch-plain``, ``onnx-plain``: ``fold=False``, the cross-attentions projecting every image token) so that the
folded decoder (the default) is timed against the plain one in the same run;

medians over ``--repeats`` runs, ratios to the reference, peak RSS, and the compute bound (FLOPs counted by
``torch.utils.flop_counter`` / the sgemm throughput measured in the same run). With ``--rounds N`` every system's
process is run N times, the order of the systems reversed every other round, and each figure is the median of
the rounds' medians (peak RSS: the largest): on this shared machine one system's figures moved by up to 1.7x
between single runs minutes apart (the onnx click 17.8 to 31.2 ms), so one round can favour either side. Mask
IoU against anymask's exact float32 torch path is reported for every system on the same prompts.

``onnx-lite`` is :class:`anymask.onnx_predictor.OnnxPredictor` on a folder written by ``anymask export`` (the
same graphs, torch never imported: its first RSS row is after importing the predictor instead).

The reference needs torchvision, so every system runs in this interpreter's torch (on our machines the CUDA
build, whose ``import torch`` alone takes ~500 MB). ``--product-python`` also runs anymask's default backend
(system ``onnx-product``) under another interpreter, e.g. a venv made by ``pip install .`` with the CPU build of
torch that the product pins, with this checkout's ``src`` first on its path: its peak RSS is a user's.

    flock /tmp/anymask-bench.lock python benchmarks/speed_benchmark.py   # writes benchmarks/results/speed.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import median_ms, write_results  # noqa: E402
RESULTS = ROOT / "benchmarks" / "results"
SYSTEMS = ("reference", "torch-plain", "torch", "onnx-plain", "onnx", "onnx-int8", "onnx-lite")
#: folder of `anymask export` graphs for the onnx-lite system (set by the parent for its child)
LITE_DIR_ENV = "ANYMASK_BENCH_LITE_DIR"
#: the pairs (folded, plain) whose ratio the table shows
FOLD_PAIRS = (("torch", "torch-plain"), ("onnx", "onnx-plain"))
OPS = ("encoder_1024x1024", "encoder_854x480", "click", "click_after_pause", "box", "boxes_16",
       "points_64_low_res")
#: the pause before each timed call of ``click_after_pause`` (seconds)
CLICK_PAUSE_S = 0.3


def scenes() -> list[dict]:
    """The two photos with a click (deepest pixel of the object) and a box; real data when available."""
    from PIL import Image

    from benchmarks.datasets import SHARED_DATA, load_mask, read_index

    if SHARED_DATA.is_dir():
        row = read_index(SHARED_DATA / "grabcut")[0]
        square = np.asarray(Image.open(row["image"]).convert("RGB").resize((1024, 1024), Image.BILINEAR))
        square_mask = np.asarray(Image.fromarray(load_mask(row["mask"])).resize((1024, 1024), Image.NEAREST))
        davis = read_index(SHARED_DATA / "davis2016_val")[0]
        wide = np.asarray(Image.open(davis["image"]).convert("RGB"))
        wide_mask = load_mask(davis["mask"])
        pairs = [(square, square_mask), (wide, wide_mask)]
    else:  # a user's checkout: the astronaut, stretched and cropped
        astronaut = Image.open(ROOT / "examples" / "astronaut.png").convert("RGB")
        square, wide = np.asarray(astronaut.resize((1024, 1024))), np.asarray(astronaut.resize((854, 480)))
        pairs = [(square, None), (wide, None)]
    out = []
    for image, mask in pairs:
        h, w = image.shape[:2]
        if mask is None:
            mask = np.zeros((h, w), bool)
            mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
        import cv2

        dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
        y, x = np.unravel_index(np.argmax(dist), dist.shape)
        ys, xs = np.nonzero(mask)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
        out.append({"image": image, "point": np.array([[x, y]], np.float64), "box": box})
    rng = np.random.default_rng(0)
    h, w = out[1]["image"].shape[:2]
    x0, y0 = rng.uniform(0, w * 0.6, 16), rng.uniform(0, h * 0.6, 16)
    out[1]["boxes"] = np.stack([x0, y0, x0 + rng.uniform(40, w * 0.4, 16), y0 + rng.uniform(40, h * 0.4, 16)], 1)
    gy, gx = np.meshgrid((np.arange(8) + 0.5) * h / 8, (np.arange(8) + 0.5) * w / 8, indexing="ij")
    out[1]["points_64"] = np.stack([gx.ravel(), gy.ravel()], 1)[:, None, :]
    return out




class _Reference:
    """The official predictor behind the same small interface as anymask's."""

    def __init__(self) -> None:
        import torch

        from anymask import weights
        from benchmarks.reference import reference_predictor

        self.p = reference_predictor("mobile_sam", weights.resolve("mobile_sam"))
        self.torch = torch

    def set_image(self, image):
        self.p.set_image(image)

    def click(self, point):
        return self.p.predict(point_coords=point, point_labels=np.ones(1), multimask_output=True)[0]

    def box(self, box):
        return self.p.predict(box=box, multimask_output=False)[0]

    def boxes(self, boxes):
        t = self.p.transform.apply_boxes_torch(self.torch.as_tensor(boxes, dtype=self.torch.float32),
                                               self.p.original_size)
        with self.torch.inference_mode():
            return self.p.predict_torch(None, None, boxes=t, multimask_output=False)[0].numpy()

    def points_low_res(self, points):
        coords = self.torch.as_tensor(self.p.transform.apply_coords(points, self.p.original_size), dtype=self.torch.float32)
        labels = self.torch.ones(coords.shape[:2], dtype=self.torch.int64)
        model = self.p.model
        with self.torch.inference_mode():
            sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            low, _ = model.mask_decoder(image_embeddings=self.p.features, image_pe=model.prompt_encoder.get_dense_pe(),
                                        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                        multimask_output=True)
        return low.numpy() > 0


class _Anymask:
    def __init__(self, system: str) -> None:
        from anymask import Predictor, load_model

        model = load_model("mobile_sam", progress=False)
        backend = system.removesuffix("-product").removesuffix("-plain")
        model.mask_decoder.transformer.fold = not system.endswith("-plain")  # "<backend>-plain": the plain decoder
        self.p = Predictor(model, backend=backend)

    def set_image(self, image):
        self.p.set_image(image)

    def click(self, point):
        return self.p.predict(points=point, labels=[1], multimask=True)[0]

    def box(self, box):
        return self.p.predict(box=box, multimask=False)[0]

    def boxes(self, boxes):
        return self.p.predict(box=boxes, multimask=False)[0]

    def points_low_res(self, points):
        return self.p.predict_low_res(points=points, labels=np.ones(points.shape[:2]), multimask=True)[0] > 0


def child(system: str, repeats: int, masks_path: str) -> dict:
    """Runs in a fresh process: build one system, time every operation, keep its masks, report peak RSS."""
    threads = int(os.environ.get("BENCH_THREADS", "2"))
    if system == "onnx-lite":  # never imports torch
        from anymask.onnx_predictor import OnnxPredictor

        version = "not imported"
    else:
        import torch

        torch.set_num_threads(threads)
        version = torch.__version__
    import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if system == "onnx-lite":
        runner = _Anymask.__new__(_Anymask)
        runner.p = OnnxPredictor(os.environ[LITE_DIR_ENV], threads=threads)
    else:
        runner = _Reference() if system == "reference" else _Anymask(system)
    setup_s = time.perf_counter() - start
    square, wide = scenes()
    timings, masks = {}, {}
    timings["encoder_1024x1024"] = median_ms(lambda: runner.set_image(square["image"]), repeats, warmup=1)
    runner.set_image(square["image"])
    masks["square_click"], masks["square_box"] = runner.click(square["point"]), runner.box(square["box"])
    timings["encoder_854x480"] = median_ms(lambda: runner.set_image(wide["image"]), repeats, warmup=1)
    runner.set_image(wide["image"])
    timings["click"] = median_ms(lambda: runner.click(wide["point"]), repeats, warmup=1)
    timings["click_after_pause"] = median_ms(lambda: runner.click(wide["point"]), repeats, pause_s=CLICK_PAUSE_S)
    timings["box"] = median_ms(lambda: runner.box(wide["box"]), repeats, warmup=1)
    timings["boxes_16"] = median_ms(lambda: runner.boxes(wide["boxes"]), repeats, warmup=1)
    masks["wide_click"], masks["wide_box"] = runner.click(wide["point"]), runner.box(wide["box"])
    masks["wide_boxes"] = runner.boxes(wide["boxes"])
    session_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timings["points_64_low_res"] = median_ms(lambda: runner.points_low_res(wide["points_64"]), max(3, repeats // 3),
                                            warmup=1)
    masks["wide_points_64"] = runner.points_low_res(wide["points_64"])
    np.savez_compressed(masks_path, **{k: np.asarray(v, bool) for k, v in masks.items()})
    return {"system": system, "setup_s": setup_s, "ms": timings, "import_rss_mb": import_rss,
            "session_rss_mb": session_rss, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch": version}


def child_bound() -> dict:
    """FLOPs of the encoder (1024x1024) and of one click's decoder, and the measured sgemm throughput."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from anymask import Predictor, load_model

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = load_model("mobile_sam", progress=False)
    predictor = Predictor(model, backend="torch")
    x = torch.zeros(1, 3, 1024, 1024)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.image_encoder(x)
    encoder_flops = counter.get_total_flops()
    predictor.set_image(np.zeros((480, 854, 3), np.uint8))
    decoder_flops = {}
    # the folded decoder prepares the first block's image side on the first prompt of an image (counted apart),
    # then reuses it: a click is the second prompt
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        predictor.predict_low_res(points=[[200.0, 100.0]], labels=[1])
    first_prompt_flops = counter.get_total_flops()
    for fold in (True, False):
        model.mask_decoder.transformer.fold = fold
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            predictor.predict_low_res(points=[[100.0, 100.0]], labels=[1])
        decoder_flops[fold] = counter.get_total_flops()
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    seconds = median_ms(lambda: a @ b, 10, warmup=1) / 1000
    return {"encoder_gflop": encoder_flops / 1e9, "click_decoder_gflop": decoder_flops[True] / 1e9,
            "prepare_gflop": (first_prompt_flops - decoder_flops[True]) / 1e9,
            "click_decoder_plain_gflop": decoder_flops[False] / 1e9,
            "sgemm_gflops": 2 * 2048 ** 3 / seconds / 1e9}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def accuracy(mask_files: dict[str, str], base: str = "torch") -> dict:
    """Min mask IoU of each system against ``base`` over every mask of every prompt."""
    ref = dict(np.load(mask_files[base]))
    out = {}
    for system, path in mask_files.items():
        ours = dict(np.load(path))
        ious = [_iou(x, y) for key in ref for x, y in zip(ref[key].reshape(-1, *ref[key].shape[-2:]),
                                                          ours[key].reshape(-1, *ours[key].shape[-2:]))]
        out[system] = {"min_iou": min(ious), "mean_iou": float(np.mean(ious)), "masks": len(ious)}
    return out


def _run_child(args: list[str], python: str | None = None) -> dict:
    env = dict(os.environ, ANYMASK_BACKEND="")
    if python:  # another interpreter: this checkout's package first on its path
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    done = subprocess.run([python or sys.executable, __file__, *args], capture_output=True, text=True, check=True,
                          env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _warm_graphs(system: str, python: str | None = None) -> None:
    """Export / cache the ONNX graphs of ``system`` outside the timed processes."""
    env = dict(os.environ)
    if python:
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    backend = system.removesuffix("-product").removesuffix("-plain")
    subprocess.run([python or sys.executable, "-c", "from anymask import Predictor, load_model; "
                    "m = load_model('mobile_sam', progress=False); "
                    f"m.mask_decoder.transformer.fold = {not system.endswith('-plain')}; "
                    f"Predictor(m, backend='{backend}')"], check=True, env=env)


def combine_rounds(runs: list[dict]) -> dict:
    """One system's result from its processes' results: per operation the median of their medians, peak RSS the
    largest, every round's medians kept under ``round_ms``."""
    combined = dict(runs[0])
    combined["ms"] = {op: statistics.median(run["ms"][op] for run in runs) for op in runs[0]["ms"]}
    for key in ("import_rss_mb", "session_rss_mb", "peak_rss_mb"):
        combined[key] = max(run[key] for run in runs)
    combined["round_ms"] = [run["ms"] for run in runs]
    return combined


def markdown(result: dict) -> str:
    systems = [r["system"] for r in result["runs"]]
    ref = next((r for r in result["runs"] if r["system"] == "reference"), None)
    by_name = {r["system"]: r for r in result["runs"]}
    pairs = [(a, b) for a, b in FOLD_PAIRS if a in by_name and b in by_name]
    bound = result["bound"]
    lines = [
        "# Speed benchmark: reference MobileSAM vs anymask backends (CPU)", "",
        f"Machine: {result['machine']}; torch {result['torch']}, {result['threads']} threads; medians over "
        f"{result['repeats']} runs (64-point batch: {max(3, result['repeats'] // 3)}); each system in its own process"
        + (f", {result['rounds']} rounds in alternating order (each figure: the median of the rounds' medians)"
           if result.get("rounds", 1) > 1 else "") + f". Load during the run: {result['load']}.", "",
        "| operation | " + " | ".join(f"{s} (ms)" for s in systems) + " | " +
        " | ".join(f"{s} vs reference" for s in systems if s != "reference") +
        "".join(f" | {a} vs {b}" for a, b in pairs) + " |",
        "|---" * (1 + len(systems) + len(systems) - (1 if ref else 0) + len(pairs)) + "|",
    ]
    for op in OPS:
        cells = [f"{r['ms'][op]:.1f}" for r in result["runs"]]
        ratios = [f"{ref['ms'][op] / r['ms'][op]:.2f}x" for r in result["runs"] if r["system"] != "reference"] if ref else []
        ratios += [f"{by_name[b]['ms'][op] / by_name[a]['ms'][op]:.2f}x" for a, b in pairs]
        lines.append(f"| {op} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    for key, label in (("import_rss_mb", "RSS after `import torch` (onnx-lite: its own import) (MB)"),
                       ("session_rss_mb", "peak RSS, predictor session: encoders, clicks, boxes (MB)"),
                       ("peak_rss_mb", "peak RSS incl. the 64-prompt batch (MB)")):
        lines.append(f"| {label} | " + " | ".join(f"{r[key]:.0f}" for r in result["runs"]) + " |" +
                     " |" * (len(systems) - 1 + len(pairs)))
    lines.append("| torch of the process | " + " | ".join(r.get("torch", "?") for r in result["runs"]) + " |" +
                 " |" * (len(systems) - 1 + len(pairs)))
    acc = result["accuracy"]
    base = result.get("accuracy_base", "torch")
    against = "anymask's exact float32 torch path" if base == "torch" else f"the {base}'s masks"
    base = "torch fp32" if base == "torch" else base
    lines.append(f"| min mask IoU vs {base} | " + " | ".join(f"{acc[s]['min_iou']:.4f}" for s in systems) + " |" +
                 " |" * (len(systems) - 1 + len(pairs)))
    lines.append(f"| mean mask IoU vs {base} | " + " | ".join(f"{acc[s]['mean_iou']:.4f}" for s in systems) + " |" +
                 " |" * (len(systems) - 1 + len(pairs)))
    if result.get("rounds", 1) > 1:
        lines += ["", "Each round's medians (ms), in the order the rounds ran:", ""]
        for op in ("encoder_1024x1024", "click", "click_after_pause", "box"):
            lines.append(f"- {op}: " + "; ".join(
                f"{r['system']} " + " / ".join(f"{ms[op]:.1f}" for ms in r["round_ms"]) for r in result["runs"]))
    lines += ["", f"Compute bound: encoder {bound['encoder_gflop']:.1f} GFLOP, one click's decoder "
              f"{bound['click_decoder_gflop']:.2f} GFLOP folded with the image side prepared (preparing it: "
              f"{bound.get('prepare_gflop', 0):.2f} GFLOP once per image; plain: {bound['click_decoder_plain_gflop']:.2f}); "
              f"sgemm 2048^3 measured at {bound['sgemm_gflops']:.0f} GFLOP/s "
              f"-> fp32 bound {1000 * bound['encoder_gflop'] / bound['sgemm_gflops']:.0f} ms (encoder), "
              f"{1000 * bound['click_decoder_gflop'] / bound['sgemm_gflops']:.1f} ms (click decoder, folded, before "
              f"upsampling; plain: {1000 * bound['click_decoder_plain_gflop'] / bound['sgemm_gflops']:.1f} ms).",
              "", "IoU: every mask of every prompt above (click: 3 masks on both photos, boxes, 16 boxes, 64 points x 3 "
              f"low-res masks), against {against}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per operation (median reported)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    parser.add_argument("--out", default=str(RESULTS / "speed"), help="results path without extension")
    parser.add_argument("--product-python", help="also run anymask's onnx backend (system onnx-product) under this "
                        "interpreter, e.g. a venv with the CPU build of torch that the product installs")
    parser.add_argument("--rounds", type=int, default=1, help="run every system's process this many times, the order "
                        "reversed every other round; report the median of the rounds' medians")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--masks", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "bound":
        print(json.dumps(child_bound()))
        return
    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.masks)))
        return
    systems = args.systems.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for system in systems:
            if system == "onnx-lite":  # its graphs: `anymask export`, in a process of its own
                os.environ[LITE_DIR_ENV] = os.path.join(tmp, "lite")
                subprocess.run([sys.executable, "-c", "from anymask import load_model; "
                                "from anymask.export import export_model; "
                                f"export_model(load_model('mobile_sam', progress=False), {os.environ[LITE_DIR_ENV]!r})"],
                               check=True)
            elif system.startswith("onnx"):
                _warm_graphs(system)
        if args.product_python:
            _warm_graphs("onnx-product", args.product_python)
        load_before = os.getloadavg()
        everyone = systems + (["onnx-product"] if args.product_python else [])
        files = {system: os.path.join(tmp, f"{system}.npz") for system in everyone}
        rounds: dict[str, list[dict]] = {system: [] for system in everyone}
        for index in range(max(1, args.rounds)):
            for system in everyone if index % 2 == 0 else everyone[::-1]:
                python = args.product_python if system == "onnx-product" else None
                masks = files[system] if index == 0 else os.path.join(tmp, f"{system}-{index}.npz")
                rounds[system].append(_run_child(["--child", system, "--repeats", str(args.repeats), "--masks", masks],
                                                 python))
                print(f"round {index + 1}, {system}: {json.dumps(rounds[system][-1]['ms'])}", flush=True)
        runs = [combine_rounds(rounds[system]) for system in everyone]
        bound = _run_child(["--child", "bound"])
        base = "torch" if "torch" in files else systems[0]
        acc = accuracy(files, base=base)
    import torch

    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
              "torch": torch.__version__, "threads": int(os.environ.get("BENCH_THREADS", "2")), "repeats": args.repeats,
              "load": f"1-min load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after",
              "runs": runs, "rounds": max(1, args.rounds), "bound": bound, "accuracy": acc, "accuracy_base": base}
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
