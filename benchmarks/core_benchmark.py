"""Core benchmark: anymask vs the official implementation, same weights, same images, same run.

Measures, for MobileSAM on this machine's CPU:
  * image encoder time (``set_image``), median over ``--repeats`` runs per image;
  * one click (1 point, multimask, 3 full-resolution masks), median over ``--repeats`` runs;
  * peak resident memory (RSS) of a process that loads the model, encodes the images and predicts
    (each implementation in its own fresh process, so that the peaks do not mix);
  * parity: min mask IoU, max |score diff| and max |low-res logit diff| per prompt type on real images.

Needs the test extras (``pip install -e .[test]``). Real images: ``examples/astronaut.png`` plus
GrabCut/Berkeley/DAVIS images from ``../shared/data`` when that folder exists.

    python benchmarks/core_benchmark.py                 # prints a table, writes benchmarks/results/core.{json,md}
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import median_ms  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _timing_images() -> list[Path]:
    from benchmarks.datasets import SHARED_DATA

    images = [ROOT / "examples" / "astronaut.png"]
    if SHARED_DATA.is_dir():
        images += [SHARED_DATA / "grabcut" / "images" / "106024.jpg", SHARED_DATA / "davis2016_val" / "images"
                   / "blackswan" / "00000.jpg"]
    return images




def child_timing(impl: str, repeats: int) -> dict:
    """Runs in a fresh process: load one implementation, time it, report peak RSS."""
    import torch

    from anymask import Predictor, load_model, weights
    from anymask.images import load_image

    checkpoint = weights.resolve("mobile_sam")
    if impl == "anymask":
        predictor = Predictor(load_model("mobile_sam", checkpoint=checkpoint))

        def click(xy):
            return predictor.predict(points=[xy], labels=[1], multimask=True)
    else:
        from benchmarks.reference import reference_predictor

        predictor = reference_predictor("mobile_sam", checkpoint)

        def click(xy):
            return predictor.predict(point_coords=np.array([xy]), point_labels=np.array([1]),
                                     multimask_output=True)

    rows = []
    with torch.inference_mode():
        for path in _timing_images():
            image = load_image(path)
            predictor.set_image(image)  # warm-up
            encode = median_ms(lambda: predictor.set_image(image), repeats)
            xy = (image.shape[1] * 0.5, image.shape[0] * 0.5)
            click(xy)
            decode = median_ms(lambda: click(xy), repeats * 3)
            rows.append({"image": path.name, "size": f"{image.shape[1]}x{image.shape[0]}",
                         "encoder_ms": encode, "click_ms": decode})
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"impl": impl, "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows,
            "peak_rss_mb": peak_mb}


def child_parity() -> dict:
    """Runs in a fresh process: both implementations on real images, worst-case agreement per prompt."""
    from anymask import Predictor, load_model, weights
    from benchmarks import reference
    from benchmarks.datasets import SHARED_DATA, read_index

    if not SHARED_DATA.is_dir():
        return {}
    checkpoint = weights.resolve("mobile_sam")
    ours = Predictor(load_model("mobile_sam", checkpoint=checkpoint))
    ref = reference.reference_predictor("mobile_sam", checkpoint)
    rows = read_index(SHARED_DATA / "grabcut")[::10][:5] + read_index(SHARED_DATA / "berkeley")[::20][:5]
    rows += read_index(SHARED_DATA / "davis2016_val")[::150][:5]
    results = reference.compare_on(ours, ref, rows)

    # SAM ViT-B: no real checkpoint here, so the reference is built with seeded random weights
    from anymask.models import load_state_dict_strict

    ref_b = reference.reference_predictor("vit_b", seed=1234)
    model_b = load_model("vit_b", pretrained=False)
    load_state_dict_strict(model_b, ref_b.model.state_dict())
    results_b = reference.compare_on(Predictor(model_b), ref_b, rows[:3])

    def summary(res):
        return {k: {"predictions": r.count, "masks_compared": len(r.ious), "min_iou": r.min_iou,
                    "mean_iou": float(np.mean(r.ious)), "max_score_diff": r.max_score_diff,
                    "max_logit_diff": r.max_logit_diff} for k, r in res.items()}

    return {"images": len(rows), "kinds": summary(results), "vit_b_images": 3, "vit_b": summary(results_b)}


def _run_child(args: list[str], python: str = sys.executable) -> dict:
    out = subprocess.run([python, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _parity_table(kinds: dict) -> list[str]:
    lines = ["| prompt | predictions | masks compared | min IoU | mean IoU | max abs score diff | "
             "max abs low-res logit diff |", "|---|---|---|---|---|---|---|"]
    for kind, r in kinds.items():
        lines.append(f"| {kind} | {r['predictions']} | {r['masks_compared']} | {r['min_iou']:.6f} | "
                     f"{r['mean_iou']:.6f} | {r['max_score_diff']:.2e} | {r['max_logit_diff']:.2e} |")
    return lines


def _markdown(result: dict) -> str:
    ours, ref = result["anymask"], result["reference"]
    lines = [
        "# Core benchmark: anymask vs the official implementation (MobileSAM weights, CPU)",
        "",
        f"Machine: {result['machine']}; torch {ours['torch']}, {ours['threads']} threads; "
        f"medians over {result['repeats']} runs (encoder) and {result['repeats'] * 3} runs (click). "
        "Click = 1 point, multimask, 3 masks upsampled to full resolution.",
        "",
        "| image | size | encoder anymask (ms) | encoder reference (ms) | ratio | click anymask (ms) "
        "| click reference (ms) | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a, b in zip(ours["rows"], ref["rows"]):
        lines.append(f"| {a['image']} | {a['size']} | {a['encoder_ms']:.0f} | {b['encoder_ms']:.0f} | "
                     f"{b['encoder_ms'] / a['encoder_ms']:.2f}x | {a['click_ms']:.1f} | {b['click_ms']:.1f} | "
                     f"{b['click_ms'] / a['click_ms']:.2f}x |")
    lines += ["", f"Peak RSS of the whole process: anymask {ours['peak_rss_mb']:.0f} MB, "
              f"reference {ref['peak_rss_mb']:.0f} MB.", ""]
    product = result.get("anymask_product")
    if product:
        lines += [f"anymask as users install it (torch {product['torch']}, no torchvision), same run:", "",
                  "| image | encoder (ms) | click (ms) |", "|---|---|---|"]
        lines += [f"| {r['image']} | {r['encoder_ms']:.0f} | {r['click_ms']:.1f} |" for r in product["rows"]]
        lines += ["", f"Peak RSS: {product['peak_rss_mb']:.0f} MB.", ""]
    parity = result.get("parity") or {}
    if parity:
        lines += [f"## Parity on {parity['images']} real images (GrabCut, Berkeley, DAVIS)", "",
                  *_parity_table(parity["kinds"]), "",
                  f"SAM ViT-B with seeded random weights (no real checkpoint here), first "
                  f"{parity['vit_b_images']} images:", "", *_parity_table(parity["vit_b"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per image for the encoder (x3 for clicks)")
    parser.add_argument("--no-parity", action="store_true", help="skip the parity measurement")
    parser.add_argument("--product-python", metavar="PYTHON",
                        help="also time anymask under this interpreter (e.g. .venv/bin/python from scripts/demo.sh, "
                        "torch 2.13 CPU as users install it); the reference needs the test environment")
    parser.add_argument("--child", choices=["anymask", "reference", "parity"], help=argparse.SUPPRESS)
    parser.add_argument("-o", "--output", default=str(RESULTS / "core"), help="results path without suffix")
    args = parser.parse_args()
    if args.child:
        result = child_parity() if args.child == "parity" else child_timing(args.child, args.repeats)
        print(json.dumps(result))
        return
    result = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, {platform.python_version()}",
        "repeats": args.repeats,
        "anymask": _run_child(["--child", "anymask", "--repeats", str(args.repeats)]),
        "reference": _run_child(["--child", "reference", "--repeats", str(args.repeats)]),
    }
    if args.product_python:
        result["anymask_product"] = _run_child(["--child", "anymask", "--repeats", str(args.repeats)],
                                               python=args.product_python)
    if not args.no_parity:
        result["parity"] = _run_child(["--child", "parity"])
    from anymask.fileio import atomic_write_text

    table = _markdown(result)
    atomic_write_text(Path(args.output).with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    atomic_write_text(Path(args.output).with_suffix(".md"), table)
    print(table)


if __name__ == "__main__":
    main()
