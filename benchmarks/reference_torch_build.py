"""The reference's speed on two builds of torch: the one our benchmarks run it on, and the issue's baseline.

The speed issue's baseline is the official MobileSAM predictor on torch 2.13 (the CPU build, the one anymask
installs). PyPI's torchvision does not load beside that build, and the reference imports torchvision, so the
other benchmarks run the reference on the CUDA build of torch 2.14.1 (which runs on the CPU) with torchvision
0.29.1. This script times the reference's ``set_image`` and one click under both interpreters, alternately,
the second one with ``benchmarks/torchvision_standin`` first on its path (the two torchvision functions the
predictor calls, see that package), and checks that both give the same masks.

    python -m venv /tmp/ref213 && /tmp/ref213/bin/pip install torch==2.13.0 numpy==2.4.6 pillow==13.0.0 \\
        opencv-python-headless==5.0.0.93 onnxruntime==1.31.1 onnx==1.23.2 tqdm pycocotools==2.0.11 \\
        && /tmp/ref213/bin/pip install --no-deps timm==1.0.31 mobilesam-mirror==1.0.0 pyyaml safetensors huggingface_hub
    flock /tmp/anymask-bench.lock python benchmarks/reference_torch_build.py --other-python /tmp/ref213/bin/python
    # writes benchmarks/results/reference_torch_build.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import median_ms, write_results  # noqa: E402

STANDIN = ROOT / "benchmarks" / "torchvision_standin"


def child(masks_path: str, repeats: int) -> dict:
    """In a fresh process: the reference's encoder (1024 x 1024 and 854 x 480) and one click, medians in ms."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    import torchvision

    from benchmarks.speed_benchmark import _Reference, scenes

    square, wide = scenes()
    reference = _Reference()
    out = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    out["encoder_1024x1024"] = median_ms(lambda: reference.set_image(square["image"]), repeats, warmup=1)
    out["encoder_854x480"] = median_ms(lambda: reference.set_image(wide["image"]), repeats, warmup=1)
    reference.set_image(wide["image"])
    out["click"] = median_ms(lambda: reference.click(wide["point"]), 3 * repeats, warmup=1)
    np.save(masks_path, reference.click(wide["point"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other-python",
                        help="interpreter with torch 2.13.0 (CPU build), mobilesam-mirror and timm, no torchvision")
    parser.add_argument("--rounds", type=int, default=3, help="processes per build, alternating (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="timed encoder runs per process (clicks: 3x)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reference_torch_build"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return
    if not args.other_python:
        parser.error("--other-python is required")

    builds = {"benchmarks' (torchvision 0.29.1)": (sys.executable, ""),
              "issue's (torchvision stand-in)": (args.other_python, str(STANDIN))}
    runs: dict[str, list[dict]] = {name: [] for name in builds}
    masks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            order = list(builds) if index % 2 == 0 else list(builds)[::-1]
            for name in order:
                python, extra = builds[name]
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (extra, str(ROOT / "src"), str(ROOT)) if p)}
                path = str(Path(tmp) / f"{len(masks)}.npy")
                done = subprocess.run([python, __file__, "--child", path, "--repeats", str(args.repeats)], env=env,
                                      capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
                runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                masks[name] = np.load(path)
                print(name, runs[name][-1], flush=True)
    names = list(builds)
    same = bool(np.array_equal(masks[names[0]], masks[names[1]]))
    ops = ("encoder_1024x1024", "encoder_854x480", "click")
    summary = {name: {op: statistics.median(r[op] for r in runs[name]) for op in ops} for name in names}
    result = {"runs": runs, "median": summary, "same_masks": same, "threads": int(os.environ.get("BENCH_THREADS", "2"))}
    lines = ["# The reference on two builds of torch", "",
             f"Official MobileSAM predictor, {result['threads']} threads; {args.rounds} processes per build, "
             "alternating; medians of the processes' medians (ms). Same click masks on both: "
             f"{'yes' if same else '**no**'}.", "",
             "| operation | " + " | ".join(f"{n}: torch {runs[n][0]['torch']}" for n in names) + " | time ratio (first / second) |",
             "|---|---|---|---|"]
    for op in ops:
        a, b = summary[names[0]][op], summary[names[1]][op]
        lines.append(f"| {op} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
    lines += ["", "Per process: " + "; ".join(
        f"{n}: " + ", ".join(f"{r['encoder_1024x1024']:.0f}/{r['click']:.1f}" for r in runs[n]) for n in names)
        + " (encoder 1024x1024 / click, ms)."]
    write_results(args.out, result, "\n".join(lines))


if __name__ == "__main__":
    main()
