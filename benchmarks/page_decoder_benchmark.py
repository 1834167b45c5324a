"""Masks of the page's decoder graphs against the server's float32 decoder, on real photos.

    python benchmarks/page_decoder_benchmark.py      # writes benchmarks/results/page_decoder.{json,md}

The page (``web/``) runs a decoder graph in the browser with onnxruntime-web: the float32 graph without mask
input (it sends no mask prompt, so the mask-downscaling convolutions are skipped). A cheaper (int8) graph
would only be acceptable if its masks matched the server's float32 masks: the project's bar is mask IoU >= 0.99
on real photos. For the first ``--images`` photos of GrabCut and of Berkeley (``../shared/data``), MobileSAM encodes
the photo once and three prompts are decoded by the server's graph (``decoder_low_res.onnx``, float32) and by
each candidate (:func:`candidate_graphs`): one point at the object's most interior
pixel (3 candidates: all compared), three interior points, and the object's box (1 mask each). Each candidate
mask (page upsampling: bilinear 256 -> 1024, crop, -> H x W, > 0) is compared with the float32 one by IoU.
The graphs run in onnxruntime's CPU provider here; onnxruntime-web runs the same kernels' arithmetic in wasm.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "src"))

from benchmarks.datasets import SHARED_DATA, load_mask, read_index  # noqa: E402


def interior_points(mask: np.ndarray, count: int) -> np.ndarray:
    """``count`` (x, y) points inside ``mask``: the most interior pixel, then the most interior ones far from
    the points already taken."""
    free = mask.copy()
    points = []
    for _ in range(count):
        dist = cv2.distanceTransform(free.astype(np.uint8), cv2.DIST_L2, 5)
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        points.append((x, y))
        yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
        free &= (yy - y) ** 2 + (xx - x) ** 2 > max(4.0, dist[y, x]) ** 2
        if not free.any():
            free = mask.copy()
    return np.array(points, dtype=np.float32)


def prompts(mask: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray, list[int]]]:
    """(name, coords (1, N, 2), labels (1, N), mask tokens shown by the page) for one object."""
    ys, xs = np.nonzero(mask)
    box = np.array([[xs.min(), ys.min()], [xs.max(), ys.max()]], dtype=np.float32)
    one, three = interior_points(mask, 1), interior_points(mask, 3)
    pad = np.zeros((1, 2), np.float32)
    return [
        ("1 point", np.concatenate([one, pad])[None], np.array([[1, -1]], np.float32), [1, 2, 3]),
        ("3 points", np.concatenate([three, pad])[None], np.array([[1, 1, 1, -1]], np.float32), [0]),
        ("box", box[None], np.array([[2, 3]], np.float32), [0]),
    ]


def upsample(low: np.ndarray, input_size: tuple[int, int], size: tuple[int, int], image_size: int) -> np.ndarray:
    """The page's (and ``Predictor.upscale``'s) mask from ``(C, 256, 256)`` logits: ``(C, H, W)`` bool."""
    x = F.interpolate(torch.from_numpy(low)[None], (image_size, image_size), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return (F.interpolate(x, size, mode="bilinear", align_corners=False)[0] > 0).numpy()


#: MatMul nodes of the mask upscaling (the two transposed convolutions as products: 268M and 134M MACs)
def candidate_graphs(no_mask: Path, work: Path) -> dict[str, Path]:
    """The graphs measured: the page's (``no_mask``: float32, no mask input) and two int8 variants of it, with
    one scale per tensor (onnxruntime-web 1.30 rejects per-channel ``MatMulIntegerToFloat``): every weight
    MatMul, or the two upscaling MatMuls only."""
    from anymask.export import quantize_int8, quantize_upscaling_int8

    work.mkdir(parents=True, exist_ok=True)
    int8, upscaling = work / "decoder_int8.onnx", work / "decoder_int8_upscaling.onnx"
    quantize_int8(no_mask, int8, per_channel=False)
    quantize_upscaling_int8(no_mask, upscaling, per_channel=False)
    return {"float32, no mask input (the page's)": no_mask, "int8, every weight MatMul": int8,
            "int8, the 2 upscaling MatMuls": upscaling}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="photos per data set (GrabCut, Berkeley; default 6)")
    parser.add_argument("--work", default="/tmp/anymask-page-decoder",
                        help="folder for the int8 graphs (default /tmp/anymask-page-decoder)")
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "results" / "page_decoder"),
                        help="output path without suffix (default benchmarks/results/page_decoder)")
    args = parser.parse_args()
    import onnxruntime as ort

    from anymask import load_model
    from anymask.fileio import atomic_write_text
    from anymask.masks import iou
    from anymask.predictor import Predictor
    from anymask.runtime import DECODER_FILE, build_graphs
    from anymask.runtime import DECODER_NO_MASK_FILE

    model = load_model("mobile_sam")
    predictor = Predictor(model, backend="onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2

    def session(path: Path):
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    reference = session(build_graphs(model) / DECODER_FILE)
    folder = build_graphs(model)
    candidates = {name: session(path) for name, path in candidate_graphs(folder / DECODER_NO_MASK_FILE,
                                                                            Path(args.work)).items()}
    ious: dict[str, dict[str, list[float]]] = {name: {} for name in candidates}
    photos = []
    for dataset in ("grabcut", "berkeley"):
        rows = read_index(SHARED_DATA / dataset)[: args.images]
        for row in rows:
            image = np.array(Image.open(SHARED_DATA / dataset / row["image"]).convert("RGB"))
            target = load_mask(SHARED_DATA / dataset / row["mask"])
            embedding = predictor.set_image(image)
            photos.append(f"{dataset}/{Path(row['image']).name}")
            for kind, coords, labels, tokens in prompts(target):
                feeds = {"image_embeddings": embedding.features, "point_coords": coords, "point_labels": labels,
                         "orig_im_size": np.array(image.shape[:2], np.int64)}
                full = dict(feeds, mask_input=np.zeros((1, 1, 256, 256), np.float32),
                            has_mask_input=np.zeros(1, np.float32))
                want = upsample(reference.run(None, full)[0][0, tokens], embedding.input_size, image.shape[:2],
                                model.spec.image_size)
                for name, candidate in candidates.items():
                    inputs = {i.name: full[i.name] for i in candidate.get_inputs()}
                    got = upsample(candidate.run(None, inputs)[0][0, tokens], embedding.input_size,
                                   image.shape[:2], model.spec.image_size)
                    ious[name].setdefault(kind, []).extend(float(iou(g, w)) for g, w in zip(got, want))
    summary = {}
    for name, kinds in ious.items():
        every = [v for values in kinds.values() for v in values]
        summary[name] = {"min_iou": round(min(every), 4), "mean_iou": round(float(np.mean(every)), 5),
                         "below_0.99": sum(v < 0.99 for v in every), "masks": len(every),
                         "min_iou_by_prompt": {k: round(min(v), 4) for k, v in kinds.items()}}
    result = {"machine": f"{platform.machine()}, Python {platform.python_version()}", "photos": photos,
              "command": "python benchmarks/page_decoder_benchmark.py", "graphs": summary}
    lines = ["# The page's decoder graphs against the server's float32 decoder", "",
             f"Photos: {len(photos)} ({', '.join(photos)}); prompts per photo: 1 point (3 candidates), 3 "
             "interior points, the box. Bar: mask IoU >= 0.99.", "", f"Command: `{result['command']}`", "",
             "| graph | masks | min IoU | mean IoU | masks below 0.99 | min IoU: 1 point / 3 points / box |",
             "|---|---|---|---|---|---|"]
    for name, s in summary.items():
        by = s["min_iou_by_prompt"]
        lines.append(f"| {name} | {s['masks']} | {s['min_iou']} | {s['mean_iou']} | {s['below_0.99']} | "
                     f"{by['1 point']} / {by['3 points']} / {by['box']} |")
    table = "\n".join(lines) + "\n"
    print(table)
    atomic_write_text(Path(args.output).with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    atomic_write_text(Path(args.output).with_suffix(".md"), table)


if __name__ == "__main__":
    main()
