"""The mask decoder, plain vs folded formulation, torch and ONNX: interleaved timings and operator profiles.

One process holds four predictors on the same real photo: torch and onnx, each with the plain decoder
(``fold=False``: every cross-attention projects all image tokens) and the folded one (``fold=True``, the
default). Each operation is run by the four in turn, ``--repeats`` rounds, so that a busy machine slows all four
alike; the table gives medians and the plain / folded ratio. Operations: one click (1 point, 3 masks at full
resolution, ``predict``), one box (1 mask at full resolution), 16 boxes (full resolution), 64 single points at
low resolution (``predict_low_res``, one batch of the automatic mask generator), low-res decoding of 1 and 8
prompts (the decoder alone) and, for the click, the upsampling of its 3 masks alone. Then the decoder is
profiled per operator (``torch.profiler`` self CPU time; onnxruntime's profiler, time per node type) and its
FLOPs counted (``torch.utils.flop_counter``).

    flock /tmp/anymask-bench.lock python benchmarks/decoder_benchmark.py   # writes benchmarks/results/decoder.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SYSTEMS = ("torch-plain", "torch", "onnx-plain", "onnx")
TOP = 8


def _photo() -> tuple[np.ndarray, str]:
    from PIL import Image

    from benchmarks.datasets import SHARED_DATA, read_index

    if SHARED_DATA.is_dir():
        row = read_index(SHARED_DATA / "davis2016_val")[0]
        return np.asarray(Image.open(row["image"]).convert("RGB")), str(Path(row["image"]).relative_to(SHARED_DATA))
    return np.asarray(Image.open(ROOT / "examples" / "astronaut.png").convert("RGB")), "examples/astronaut.png"


def operations(predictor, image: np.ndarray) -> dict:
    """The timed operations on ``predictor`` (its image already set), as callables."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(0, w * 0.6, 16), rng.uniform(0, h * 0.6, 16)
    boxes = np.stack([x0, y0, x0 + rng.uniform(40, w * 0.4, 16), y0 + rng.uniform(40, h * 0.4, 16)], 1)
    gy, gx = np.meshgrid((np.arange(8) + 0.5) * h / 8, (np.arange(8) + 0.5) * w / 8, indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel()], 1)[:, None, :]
    click = np.array([[w * 0.5, h * 0.55]])
    low_res = predictor.predict_low_res(points=click, labels=[1])[0][0]
    return {
        "click (3 full-res masks)": lambda: predictor.predict(points=click, labels=[1]),
        "box (1 full-res mask)": lambda: predictor.predict(box=boxes[0], multimask=False),
        "16 boxes (full res)": lambda: predictor.predict(box=boxes, multimask=False),
        "64 points, low res": lambda: predictor.predict_low_res(points=grid, labels=np.ones((64, 1))),
        "decoder, 1 prompt, low res": lambda: predictor.predict_low_res(points=click, labels=[1]),
        "decoder, 8 prompts, low res": lambda: predictor.predict_low_res(points=grid[:8], labels=np.ones((8, 1))),
        "upsampling 3 masks to full res": lambda: predictor.masks_from_low_res(low_res),
    }


def interleaved_ms(ops: dict[str, dict], repeats: int) -> dict[str, dict[str, float]]:
    """Median ms of every (operation, system), the systems taking turns within each round."""
    times: dict = defaultdict(lambda: defaultdict(list))
    for op in next(iter(ops.values())):
        for system in ops:  # warm-up
            ops[system][op]()
        for _ in range(repeats):
            for system in ops:
                start = time.perf_counter()
                ops[system][op]()
                times[op][system].append((time.perf_counter() - start) * 1000)
    return {op: {system: statistics.median(t) for system, t in by_system.items()} for op, by_system in times.items()}


def _torch_profile(run) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            run()
    ops = {e.key: e.self_cpu_time_total / 3 / 1000 for e in prof.key_averages()}
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        run()
    return {"gflop": counter.get_total_flops() / 1e9, "ops_ms": ops}


def _onnx_profile(predictor, run, folder: str) -> dict:
    import onnxruntime as ort

    from anymask.runtime import DECODER_NO_MASK_FILE

    runner = predictor._runner
    options = ort.SessionOptions()
    options.intra_op_num_threads = runner.decoder_no_mask.get_session_options().intra_op_num_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(folder, "ort")
    session = ort.InferenceSession(str(runner.folder / DECODER_NO_MASK_FILE), options,
                                   providers=["CPUExecutionProvider"])
    original, runner.decoder_no_mask = runner.decoder_no_mask, session
    try:
        for _ in range(4):  # the first run is a warm-up, left out below
            run()
    finally:
        runner.decoder_no_mask = original
    with open(session.end_profiling()) as file:
        trace = json.load(file)
    runs = sorted(e["ts"] for e in trace if e.get("name") == "model_run")
    ops: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= runs[-3]:
            ops[event["args"]["op_name"]] += event["dur"] / 3 / 1000
    return {"ops_ms": dict(ops)}


def build(system: str, image: np.ndarray):
    from anymask import Predictor, load_model

    model = load_model("mobile_sam", progress=False)
    backend = system.removesuffix("-plain")
    model.mask_decoder.transformer.fold = system == backend
    predictor = Predictor(model, backend=backend)
    if predictor._runner is not None:
        from anymask.runtime import build_graphs

        predictor._runner.folder = build_graphs(model)
    predictor.set_image(image)
    return predictor


def run(repeats: int) -> dict:
    import torch

    threads = int(os.environ.get("BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    image, photo = _photo()
    predictors = {system: build(system, image) for system in SYSTEMS}
    for predictor in predictors.values():  # the same embedding everywhere: only the decoder differs
        predictor.set_embedding(predictors["torch"].embedding)
    load_before = os.getloadavg()
    ms = interleaved_ms({s: operations(p, image) for s, p in predictors.items()}, repeats)
    load_after = os.getloadavg()
    profiles: dict = {}
    h, w = image.shape[:2]
    with tempfile.TemporaryDirectory() as folder:
        for system, predictor in predictors.items():
            for batch in (1, 8):
                points = np.stack([np.linspace(w * 0.1, w * 0.9, batch), np.full(batch, h * 0.5)], 1)[:, None, :]

                def decode(predictor=predictor, points=points):
                    return predictor.predict_low_res(points=points, labels=np.ones((len(points), 1)))

                decode()
                profile = (_torch_profile(decode) if predictor._runner is None
                           else _onnx_profile(predictor, decode, folder))
                profiles.setdefault(system, {})[str(batch)] = profile
    return {"photo": photo, "size": [h, w], "threads": threads, "repeats": repeats, "torch": torch.__version__,
            "load": f"1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after the timings",
            "ms": ms, "profiles": profiles}


def markdown(result: dict) -> str:
    lines = ["# Mask decoder: plain vs folded formulation (CPU)", "",
             f"Photo: `{result['photo']}` ({result['size'][1]}x{result['size'][0]}), MobileSAM, "
             f"{result['threads']} threads, torch {result['torch']}. The four predictors take turns in every round "
             f"(medians of {result['repeats']} rounds), so load slows them alike; {result['load']}. `plain`: the "
             "cross-attentions project all image tokens (`fold=False`); `folded`: the default.", "",
             "| operation | torch plain (ms) | torch folded (ms) | torch speed-up | onnx plain (ms) | "
             "onnx folded (ms) | onnx speed-up |", "|---|---|---|---|---|---|---|"]
    for op, by in result["ms"].items():
        lines.append(f"| {op} | {by['torch-plain']:.1f} | {by['torch']:.1f} | {by['torch-plain'] / by['torch']:.2f}x"
                     f" | {by['onnx-plain']:.1f} | {by['onnx']:.1f} | {by['onnx-plain'] / by['onnx']:.2f}x |")
    prof = result["profiles"]
    lines += ["", "FLOPs of the low-res decoder (all 4 mask tokens, `torch.utils.flop_counter`): "
              + "; ".join(f"{b} prompt(s): {prof['torch-plain'][b]['gflop']:.2f} GFLOP plain, "
                          f"{prof['torch'][b]['gflop']:.2f} folded" for b in ("1", "8")) + "."]
    for backend in ("torch", "onnx"):
        for batch in ("1", "8"):
            lines += ["", f"## Profile: {backend}, {batch} prompt(s), low-res decoding: top operators (ms per call)", "",
                      "| plain: operator | ms | folded: operator | ms |", "|---|---|---|---|"]
            tops = [sorted(prof[s][batch]["ops_ms"].items(), key=lambda kv: -kv[1])[:TOP]
                    for s in (f"{backend}-plain", backend)]
            totals = [sum(prof[s][batch]["ops_ms"].values()) for s in (f"{backend}-plain", backend)]
            for row in range(TOP):
                cells = [f"{tops[i][row][0]} | {tops[i][row][1]:.1f}" if row < len(tops[i]) else " | "
                         for i in range(2)]
                lines.append(f"| {cells[0]} | {cells[1]} |")
            lines.append(f"| total (all operators) | {totals[0]:.1f} | total | {totals[1]:.1f} |")
    lines += ["", "Profiled times include the profilers' overhead: compare within a table, not with the timings above.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="rounds per operation (medians reported)")
    parser.add_argument("--out", default=str(RESULTS / "decoder"), help="results path without extension")
    args = parser.parse_args()
    result = run(args.repeats)
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
