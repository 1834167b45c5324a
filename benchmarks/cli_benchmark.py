"""The main job end to end: ``anymask segment IMAGE --point X,Y`` in a fresh process, as a user runs it.

Times the whole command (interpreter start, imports, model, encoder, one click, the four output files) and its
peak RSS, for three ways of running it, interleaved round by round on the same image and click:

* ``onnx, cached graphs``: the default (an onnx backend on the CPU, the catalogue's weights). Once an earlier run
  has exported the graphs, the command opens them without importing torch
  (:func:`anymask.runtime.find_named_graphs`);
* ``onnx, torch model``: the same graphs through ``Predictor(load_model(...))``, which imports torch and loads the
  checkpoint (forced by naming the catalogue's checkpoint file with ``--checkpoint``, which skips the lookup by
  name): what the default did before the lookup existed;
* ``torch``: the exact float32 PyTorch backend (``--backend torch``).

The first run of each is untimed (it exports the graphs if needed and warms the file cache). Medians over
``--rounds``; the masks written by the three are compared (the two onnx ones must be identical bytes).

    python benchmarks/cli_benchmark.py --python <venv>/bin/python   # writes benchmarks/results/cli.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: runs the command in this process and appends its peak RSS (MB) to the file named by $ANYMASK_BENCH_RSS
WRAPPER = (
    "import os, resource, runpy, sys\n"
    "sys.argv = ['anymask'] + sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_module('anymask', run_name='__main__')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code or 0\n"
    "else:\n"
    "    code = 0\n"
    "with open(os.environ['ANYMASK_BENCH_RSS'], 'w') as f:\n"
    "    f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))\n"
    "sys.exit(code)\n"
)


def run_once(python: str, args: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``anymask`` command in a fresh interpreter."""
    with tempfile.NamedTemporaryFile(suffix=".rss") as rss:
        start = time.perf_counter()
        done = subprocess.run([python, "-c", WRAPPER, *args], env={**env, "ANYMASK_BENCH_RSS": rss.name},
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"anymask {' '.join(args)} failed:\n{done.stderr}")
        return wall, float(Path(rss.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs anymask (e.g. a venv made by `pip install .`; default: this one)")
    parser.add_argument("--image", default=str(ROOT / "examples" / "astronaut.png"), help="image to segment")
    parser.add_argument("--point", default="256,200", help="the click, X,Y pixels (default: 256,200)")
    parser.add_argument("--rounds", type=int, default=7, help="timed runs of each mode, interleaved (default: 7)")
    parser.add_argument("--out", default=str(RESULTS / "cli"), help="results path without suffix")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                     os.environ.get("PYTHONPATH")]))}
    env.pop("ANYMASK_BACKEND", None)
    checkpoint = subprocess.run([args.python, "-c", "from anymask import weights; print(weights.resolve('mobile_sam'))"],
                                env=env, capture_output=True, text=True, check=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="anymask-cli-bench-"))
    modes = {
        "onnx, cached graphs (default)": [],
        "onnx, torch model": ["--checkpoint", checkpoint],
        "torch": ["--backend", "torch"],
    }

    def command(mode: str) -> list[str]:
        return ["segment", args.image, "--point", args.point, "-q", "-o", str(work / str(list(modes).index(mode))),
                *modes[mode]]

    for mode in modes:  # untimed: exports the graphs if needed, warms the file cache
        run_once(args.python, command(mode), env)
    walls: dict[str, list[float]] = {m: [] for m in modes}
    peaks: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
            wall, peak = run_once(args.python, command(mode), env)
            walls[mode].append(wall)
            peaks[mode].append(peak)
            print(f"round {r + 1}: {mode}: {wall:.2f} s, {peak:.0f} MB", file=sys.stderr)

    from PIL import Image

    stem = Path(args.image).stem
    masks = {m: np.asarray(Image.open(work / str(i) / f"{stem}_mask.png")) > 0 for i, m in enumerate(modes)}
    names = list(modes)
    same_onnx = bool(np.array_equal(masks[names[0]], masks[names[1]]))
    inter = np.logical_and(masks[names[0]], masks[names[2]]).sum()
    union = np.logical_or(masks[names[0]], masks[names[2]]).sum()
    iou_torch = float(inter / union) if union else 1.0

    baseline = statistics.median(walls[names[1]])
    rows = []
    for mode in modes:
        med = statistics.median(walls[mode])
        rows.append({"mode": mode, "median_s": round(med, 3), "min_s": round(min(walls[mode]), 3),
                     "max_s": round(max(walls[mode]), 3), "peak_rss_mb": round(max(peaks[mode]), 1),
                     "speedup_vs_torch_model": round(baseline / med, 2)})
    version = subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                             text=True).stdout.strip()
    torch_version = subprocess.run([args.python, "-c", "from importlib.metadata import version; print(version('torch'))"],
                                   capture_output=True, text=True).stdout.strip()
    result = {
        "command": f"anymask segment {Path(args.image).name} --point {args.point}", "rounds": args.rounds,
        "python": version, "torch": torch_version, "machine": platform.machine(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "rows": rows, "onnx_masks_identical": same_onnx,
        "iou_onnx_vs_torch": round(iou_torch, 5),
    }
    lines = [f"`{result['command']}` in a fresh process, {args.rounds} interleaved rounds (Python {version}, torch "
             f"{torch_version}; load average {os.getloadavg()[0]:.1f})", "",
             "| mode | median (s) | range (s) | peak RSS (MB) | speed-up vs torch model |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['mode']} | {row['median_s']:.2f} | {row['min_s']:.2f}-{row['max_s']:.2f} | "
                     f"{row['peak_rss_mb']:.0f} | {row['speedup_vs_torch_model']:.2f}x |")
    lines += ["", f"Masks: the two onnx modes identical: {same_onnx}; onnx against torch IoU {iou_torch:.4f}."]
    write_results(args.out, result, "\n".join(lines))


if __name__ == "__main__":
    main()
