"""Tests of segment-everything: the geometry helpers (against segment_anything's own), the generator on the
real MobileSAM model and the astronaut photo (against the official generator), and ``anymask everything``.

Settings are small (4 to 8 points a side) so the tests stay quick; the astronaut's image embedding is computed
once per session (the ``predictor`` fixture) and reused wherever the generator sets that same image.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from anymask import amg_utils, cli
from anymask.automatic import AutomaticMaskGenerator
from anymask.errors import ImageError, OutputError, PromptError
from anymask.images import load_image
from anymask.masks import decode_rle, masks_to_boxes, remove_small_regions

from conftest import EXAMPLE_IMAGE, REPO_ROOT

ASTRONAUT = load_image(EXAMPLE_IMAGE)


def _patch_astronaut(mp: pytest.MonkeyPatch, embedding, model) -> dict:
    from anymask import models
    from anymask.predictor import Predictor

    real_set_image = Predictor.set_image
    calls = {"encoder": 0, "reused": 0}

    def set_image(self, image, pad_to_square=None):
        rgb = load_image(image)
        if rgb.shape == ASTRONAUT.shape and np.array_equal(rgb, ASTRONAUT):
            calls["reused"] += 1
            self.set_embedding(embedding)
            return embedding
        calls["encoder"] += 1
        return real_set_image(self, image, pad_to_square=pad_to_square)

    mp.setattr(Predictor, "set_image", set_image)
    mp.setattr(models, "load_model", lambda *a, **k: model)
    return calls


@pytest.fixture()
def reuse_astronaut(monkeypatch, predictor, mobile_sam):
    """``Predictor.set_image`` reuses the session's astronaut embedding; ``load_model`` the session's model."""
    return _patch_astronaut(monkeypatch, predictor.embedding, mobile_sam)


@pytest.fixture(scope="module")
def exact_run(predictor, mobile_sam):
    """anymask's generator at 6 x 6 points on the astronaut (no result-changing option): records and stats."""
    with pytest.MonkeyPatch.context() as mp:
        _patch_astronaut(mp, predictor.embedding, mobile_sam)
        generator = AutomaticMaskGenerator(mobile_sam, points_per_side=6, output_mode="coco_rle")
        return generator.generate(EXAMPLE_IMAGE), generator.last_stats


def _iou_matrix(a: list[dict], b: list[dict]) -> np.ndarray:
    enc = lambda rles: [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles]  # noqa: E731
    return np.asarray(mask_utils.iou(enc(a), enc(b), [0] * len(b))).reshape(len(a), len(b))


# ------------------------------------------------------------------------------------- geometry helpers


def test_grids_and_crop_boxes_match_segment_anything():
    from segment_anything.utils import amg

    for n in (1, 4, 32):
        np.testing.assert_allclose(amg_utils.build_point_grid(n), amg.build_point_grid(n))
    for layers, factor in ((0, 1), (2, 2)):
        ours = amg_utils.build_all_layer_point_grids(16, layers, factor)
        theirs = amg.build_all_layer_point_grids(16, layers, factor)
        assert len(ours) == len(theirs) and all(np.allclose(a, b) for a, b in zip(ours, theirs))
    for size, layers, ratio in (((480, 640), 1, 512 / 1500), ((1024, 700), 2, 0.2), ((33, 50), 3, 0.5)):
        assert amg_utils.generate_crop_boxes(size, layers, ratio) == amg.generate_crop_boxes(size, layers, ratio)


def test_coarse_to_fine_order_is_a_permutation_starting_sparse():
    order = amg_utils.coarse_to_fine_order(16 * 16)
    assert sorted(order.tolist()) == list(range(256))
    rows, cols = np.divmod(order[:4], 16)
    assert set(rows.tolist()) <= {0, 8} and set(cols.tolist()) <= {0, 8}  # the 2 x 2 coarsest sub-grid first
    np.testing.assert_array_equal(amg_utils.coarse_to_fine_order(10), np.arange(10))  # not a square grid


def test_box_nms_matches_torchvision():
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(0)
    for n in (0, 1, 50, 300):
        xy = rng.uniform(0, 200, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 120, (n, 2))], axis=1).round()
        scores = rng.uniform(0, 1, n)
        for thresh in (0.3, 0.7):
            theirs = batched_nms(torch.as_tensor(boxes).float(), torch.as_tensor(scores).float(),
                                 torch.zeros(n), thresh).numpy()
            np.testing.assert_array_equal(amg_utils.box_nms(boxes, scores, thresh), theirs)


def test_box_nms_memory_does_not_grow_with_the_square_of_the_boxes(tmp_path):
    """3000 candidates (a 32 x 32 grid's 3 masks each): an IoU matrix would take 72 MB per float64 array, and
    its temporaries several times that. Measured as the growth of the peak RSS of a fresh process."""
    import subprocess
    import sys

    from torchvision.ops import batched_nms

    rng = np.random.default_rng(1)
    n = 3000
    xy = rng.uniform(0, 1000, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 300, (n, 2))], axis=1).round()
    scores = rng.uniform(0, 1, n)
    np.save(tmp_path / "boxes.npy", boxes)
    np.save(tmp_path / "scores.npy", scores)
    script = f"""
import resource, numpy as np
from anymask import amg_utils
boxes, scores = np.load({str(tmp_path / "boxes.npy")!r}), np.load({str(tmp_path / "scores.npy")!r})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
keep = amg_utils.box_nms(boxes, scores, 0.7)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(grown, ",".join(map(str, keep)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) < 32, f"box_nms grew the peak RSS by {float(out[0]):.0f} MB for {n} boxes"
    theirs = batched_nms(torch.as_tensor(boxes).float(), torch.as_tensor(scores).float(), torch.zeros(n), 0.7)
    np.testing.assert_array_equal(np.array(out[1].split(","), dtype=np.int64), theirs.numpy())


def test_mask_boxes_edges_and_uncompressed_rle_match_segment_anything():
    from segment_anything.utils import amg

    rng = np.random.default_rng(1)
    masks = np.zeros((5, 40, 60), dtype=bool)
    masks[0, 3:9, 10:30] = True
    masks[1, 0:40, 0:1] = True
    masks[2] = rng.uniform(size=(40, 60)) > 0.7
    masks[4, 39, 59] = True  # masks[3] stays empty
    boxes = amg_utils.masks_to_boxes_torch(torch.from_numpy(masks))
    np.testing.assert_array_equal(boxes.numpy(), amg.batched_mask_to_box(torch.from_numpy(masks)).numpy())
    np.testing.assert_array_equal(boxes.numpy(), masks_to_boxes(masks))
    crop, orig = [10, 0, 50, 30], [0, 0, 60, 40]
    np.testing.assert_array_equal(amg_utils.is_box_near_crop_edge(boxes.numpy(), crop, orig),
                                  amg.is_box_near_crop_edge(boxes, crop, orig).numpy())
    rles = amg_utils.encode_rles(masks)
    for m, rle, sam in zip(masks, rles, amg.mask_to_rle_pytorch(torch.from_numpy(masks))):
        assert amg_utils.rle_to_uncompressed(rle) == sam
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), m)


# -------------------------------------------------------------------------------------------- generator


@pytest.mark.parametrize("options", [
    {"points_per_side": 0}, {"points_per_side": None}, {"points_per_side": 4, "point_grids": [np.zeros((1, 2))]},
    {"points_per_batch": 0}, {"pred_iou_thresh": 1.5}, {"pred_iou_thresh": "high"},
    {"stability_score_thresh": -0.1}, {"stability_score_offset": -1}, {"box_nms_thresh": 0},
    {"crop_n_layers": -1}, {"crop_nms_thresh": 2}, {"crop_overlap_ratio": 1.0}, {"crop_n_points_downscale_factor": 0},
    {"points_per_side": None, "point_grids": [np.full((3, 2), 1.5)]},
    {"points_per_side": None, "point_grids": [np.full((3, 2), 0.5)], "crop_n_layers": 1},
    {"points_per_side": 2, "crop_n_layers": 2, "crop_n_points_downscale_factor": 2},
    {"min_mask_region_area": -5}, {"output_mode": "polygons"}, {"pred_iou_thresh": float("nan")},
    {"precision": "fp16"},
])
def test_parameters_out_of_range_raise_a_clear_error(options):
    with pytest.raises(PromptError) as info:
        AutomaticMaskGenerator.check_options(**options)
    assert str(info.value)


@pytest.fixture(scope="module")
def reference_result():
    """The official SamAutomaticMaskGenerator with MobileSAM's original network and the same weights."""
    from segment_anything import SamAutomaticMaskGenerator

    from anymask import weights
    from benchmarks.reference import reference_predictor

    model = reference_predictor("mobile_sam", weights.resolve("mobile_sam")).model
    return SamAutomaticMaskGenerator(model, points_per_side=6, output_mode="coco_rle").generate(ASTRONAUT)


@pytest.mark.reference
def test_generator_finds_the_reference_masks(exact_run, reference_result):
    ours, stats = exact_run
    assert len(ours) >= 5 and len(reference_result) >= 5
    iou = _iou_matrix([o["segmentation"] for o in ours], [r["segmentation"] for r in reference_result])
    assert (iou.max(axis=0) >= 0.9).mean() >= 0.95 and (iou.max(axis=1) >= 0.9).mean() >= 0.95
    # only a part of the candidates was upsampled to full resolution
    assert stats["prompts"] == 36 and stats["candidates"] == 108 and stats["upsampled"] < stats["candidates"]
    by_point = {tuple(r["point_coords"][0]): r for r in reference_result}
    for record in ours:
        assert set(record) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score",
                               "crop_box"}
        assert record["area"] == int(mask_utils.area({**record["segmentation"],
                                                      "counts": record["segmentation"]["counts"].encode()}))
        assert record["predicted_iou"] > 0.88 and record["stability_score"] >= 0.95
        assert record["crop_box"] == [0, 0, 512, 512]
        ref = by_point.get(tuple(record["point_coords"][0]))
        if ref is not None and ref["segmentation"] == record["segmentation"]:
            assert record["bbox"] == ref["bbox"]  # SAM's XYWH convention (w = x1 - x0)
            assert abs(record["stability_score"] - ref["stability_score"]) < 1e-6
    scores = [r["predicted_iou"] for r in ours]
    assert scores == sorted(scores, reverse=True)


def test_output_modes_hold_the_same_masks(mobile_sam, reuse_astronaut):
    results = {mode: AutomaticMaskGenerator(mobile_sam, points_per_side=2, output_mode=mode).generate(ASTRONAUT)
               for mode in ("binary_mask", "uncompressed_rle", "coco_rle")}
    assert len({len(r) for r in results.values()}) == 1 and len(results["coco_rle"]) > 0
    for binary, unc, coco in zip(*results.values()):
        assert binary["segmentation"].shape == (512, 512) and binary["segmentation"].dtype == bool
        assert binary["area"] == int(binary["segmentation"].sum())
        assert isinstance(coco["segmentation"]["counts"], str)
        np.testing.assert_array_equal(decode_rle(coco["segmentation"]), binary["segmentation"])
        np.testing.assert_array_equal(decode_rle(unc["segmentation"]), binary["segmentation"])
        x, y, w, h = binary["bbox"]
        ys, xs = np.nonzero(binary["segmentation"])
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_min_mask_region_area_removes_small_holes_and_islands_inside_masks(mobile_sam, reuse_astronaut):
    area = 400
    generator = AutomaticMaskGenerator(mobile_sam, points_per_side=4, min_mask_region_area=area)
    plain = AutomaticMaskGenerator(mobile_sam, points_per_side=4).generate(ASTRONAUT)
    cleaned = generator.generate(ASTRONAUT)
    assert cleaned
    for record in cleaned:
        mask = record["segmentation"]
        for mode in ("holes", "islands"):
            assert not remove_small_regions(mask, area, mode)[1], mode
    # whole masks smaller than the area are not what it removes: the plain run's small masks can survive
    changed = [p for p in plain if any(remove_small_regions(p["segmentation"], area, m)[1] for m in ("holes", "islands"))]
    assert changed, "the astronaut has masks with small holes or islands at this setting"


def test_skipping_covered_points_decodes_fewer_prompts(mobile_sam, reuse_astronaut, exact_run):
    a, exact_stats = exact_run
    skipping = AutomaticMaskGenerator(mobile_sam, points_per_side=6, points_per_batch=9, output_mode="coco_rle",
                                      skip_covered_points=True)
    b = skipping.generate(ASTRONAUT)
    stats = skipping.last_stats
    print(stats, len(a), len(b))
    assert stats["skipped"] > 0 and stats["prompts"] + stats["skipped"] == 36 and exact_stats["skipped"] == 0
    iou = _iou_matrix([r["segmentation"] for r in b], [r["segmentation"] for r in a])
    assert (iou.max(axis=1) >= 0.9).mean() >= 0.8  # what it finds, the exact run finds too


def test_crop_layers_add_masks_from_crops(mobile_sam):
    generator = AutomaticMaskGenerator(mobile_sam, points_per_side=2, crop_n_layers=1, output_mode="coco_rle")
    records = generator.generate(ASTRONAUT[:256, :384])
    crops = {tuple(r["crop_box"]) for r in records}
    assert records and len(crops) >= 2 and (0, 0, 384, 256) in crops
    for r in records:
        x, y, w, h = r["bbox"]
        cx, cy, cw, ch = r["crop_box"]
        assert r["segmentation"]["size"] == [256, 384]
        assert cx <= r["point_coords"][0][0] <= cx + cw and cy <= r["point_coords"][0][1] <= cy + ch


# ------------------------------------------------------------------------------------------------ CLI


CLI_SMALL = ["--points-per-side", "2", "-q"]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_cli_folder_with_an_unreadable_file_then_resume(tmp_path, reuse_astronaut, capsys, caplog):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLE_IMAGE, src / "a_astronaut.png")
    Image.fromarray(ASTRONAUT[:, ::-1]).save(src / "b_flipped.jpg", quality=95)
    (src / "c_broken.jpg").write_bytes(b"not a jpeg at all")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    rc = cli.main(["everything", str(src), "-o", str(out), *CLI_SMALL])
    captured = capsys.readouterr()
    assert rc == ImageError.exit_code  # the run went on, but says that an image was skipped
    assert "c_broken.jpg" in captured.err and "1 unreadable image" in captured.err
    assert "2 of 3 images done" in captured.out
    files = _files(out)
    assert "coco.json" in files and "records/a_astronaut.json" in files and "records/b_flipped.json" in files
    assert "a_astronaut_overlay.png" in files and not any(f.startswith("c_broken") for f in files)
    assert not any(Path(f).name.startswith(".") for f in files)  # no temporary file left behind
    coco = json.loads((out / "coco.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a_astronaut.png", "b_flipped.jpg"]
    record = json.loads((out / "records" / "a_astronaut.json").read_text())
    assert len(record["masks"]) > 0
    n_a = len(record["masks"])
    assert sum(1 for f in files if f.startswith("a_astronaut_masks/")) == n_a
    ann = [a for a in coco["annotations"] if a["image_id"] == 1]
    assert len(ann) == n_a and {"segmentation", "bbox", "area", "score"} <= set(ann[0])
    mask0 = decode_rle(ann[0]["segmentation"])
    png0 = np.asarray(Image.open(out / "a_astronaut_masks" / "000.png")) > 127
    np.testing.assert_array_equal(mask0, png0)
    ys, xs = np.nonzero(mask0)
    assert ann[0]["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert ann[0]["area"] == int(mask0.sum())

    # resume: complete images are skipped (their files untouched); a deleted output makes its image redone
    mtime = (out / "records" / "a_astronaut.json").stat().st_mtime_ns
    (out / "b_flipped_overlay.png").unlink()
    encoder_calls = reuse_astronaut["encoder"]
    with caplog.at_level("WARNING", logger="anymask"):
        rc = cli.main(["everything", str(src), "-o", str(out), *CLI_SMALL[:2]])
    assert rc == ImageError.exit_code
    assert "skipping 1 of 3 images" in caplog.text
    assert (out / "records" / "a_astronaut.json").stat().st_mtime_ns == mtime
    assert (out / "b_flipped_overlay.png").is_file() and reuse_astronaut["encoder"] == encoder_calls + 1
    assert json.loads((out / "coco.json").read_text())["annotations"][:n_a] == ann


def test_cli_single_image_formats(tmp_path, reuse_astronaut, capsys):
    out = tmp_path / "coco_only"
    assert cli.main(["everything", str(EXAMPLE_IMAGE), "-o", str(out), "--format", "coco", *CLI_SMALL]) == 0
    assert _files(out) == ["coco.json", "records/astronaut.json"]
    out_png = tmp_path / "png_only"
    assert cli.main(["everything", str(EXAMPLE_IMAGE), "-o", str(out_png), "--format", "png", *CLI_SMALL]) == 0
    files = _files(out_png)
    assert "coco.json" not in files and "astronaut_overlay.png" in files and "astronaut_masks/000.png" in files
    # the same settings give the same masks whatever the format
    a = json.loads((out / "records" / "astronaut.json").read_text())["masks"]
    b = json.loads((out_png / "records" / "astronaut.json").read_text())["masks"]
    assert a == b


def test_cli_bad_input(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["everything", str(empty), "-o", str(tmp_path / "o")]) == ImageError.exit_code
    assert "no image files" in capsys.readouterr().err
    assert cli.main(["everything", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "o")]) == ImageError.exit_code
    assert "does not exist" in capsys.readouterr().err
    rc = cli.main(["everything", str(EXAMPLE_IMAGE), "-o", str(tmp_path / "o"), "--pred-iou-thresh", "1.5"])
    err = capsys.readouterr().err
    assert rc == PromptError.exit_code and "pred_iou_thresh" in err and err.count("\n") == 1
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    rc = cli.main(["everything", str(EXAMPLE_IMAGE), "-o", str(blocker / "out")])
    assert rc == OutputError.exit_code and "not a writable directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_help_explains_every_option():
    result = subprocess.run([sys.executable, "-m", "anymask", "everything", "--help"], capture_output=True,
                            text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    for option in ("--format", "--points-per-side", "--points-per-batch", "--pred-iou-thresh",
                   "--stability-score-thresh", "--stability-score-offset", "--box-nms-thresh", "--crop-n-layers",
                   "--crop-nms-thresh", "--crop-overlap-ratio", "--crop-n-points-downscale-factor",
                   "--min-mask-region-area", "--skip-covered-points", "--skip-iou-thresh", "--model", "--checkpoint",
                   "--no-verify", "--device", "-o OUT"):
        assert option in result.stdout, option


def test_upscale_skips_only_an_identity_resize(mobile_sam):
    """At a 1024 px image the final resize is the identity: skipping it gives SAM's two-resize logits exactly."""
    import torch.nn.functional as F

    from anymask.predictor import ImageEmbedding, Predictor

    p = Predictor(mobile_sam)
    low = torch.randn(3, 1, 256, 256)
    for original, input_size in (((1024, 768), (1024, 768)), ((500, 300), (1024, 614))):
        p.set_embedding(ImageEmbedding(np.zeros((1, 256, 64, 64), np.float32), original, input_size, "mobile_sam"))
        with torch.inference_mode():
            frame = F.interpolate(low, (1024, 1024), mode="bilinear", align_corners=False)
            cropped = frame[..., : input_size[0], : input_size[1]]
            expected = F.interpolate(cropped, original, mode="bilinear", align_corners=False)
            assert torch.equal(p.upscale(low), expected)


@pytest.mark.parametrize("size", [(1024, 1024), (1024, 768)])
def test_direct_upsampling_equals_the_full_resize(mobile_sam, predictor, size):
    """The window-only upsampling of a 1024 px image gives SAM's full-resize stability, masks and boxes exactly."""
    from anymask.amg_utils import masks_to_boxes_torch
    from anymask.masks import stability_score
    from anymask.predictor import ImageEmbedding, Predictor

    p = Predictor(mobile_sam)
    features = predictor.embedding.features  # the astronaut's real embedding, given a 1024 px frame
    p.set_embedding(ImageEmbedding(features, size, size, "mobile_sam"))
    points = np.array([[100, 100], [300, 200], [500, 700], [700, 400], [900, 900]]) * [size[1] / 1024, size[0] / 1024]
    low, _ = p.predict_low_res(points=points[:, None], labels=np.ones((len(points), 1), np.int64))
    low = low.reshape(-1, *low.shape[-2:])
    low[0] = -5.0  # a candidate with no pixel above threshold - offset
    generator = AutomaticMaskGenerator(p, points_per_side=4)
    stab, windows, boxes = generator._upsample_direct(low, 0.0)
    masks = np.zeros((len(low), *size), dtype=bool)
    for mask, (window, y0, x0) in zip(masks, windows):
        mask[y0:y0 + window.shape[0], x0:x0 + window.shape[1]] = window
    with torch.inference_mode():
        full = p.upscale(torch.from_numpy(low)[:, None])[:, 0]
        expected_masks = (full > 0.0).numpy()
        assert np.array_equal(masks, expected_masks)
        assert np.array_equal(stab, stability_score(full, 0.0, 1.0).numpy())
        assert np.array_equal(boxes, masks_to_boxes_torch(full > 0.0).numpy())
    assert masks[1:].any(axis=(1, 2)).all() and not masks[0].any()


def test_rle_from_window_equals_encoding_the_whole_mask():
    rng = np.random.default_rng(0)
    for height, width in ((7, 5), (40, 30), (1, 1)):
        for _ in range(100):
            wh, ww = rng.integers(0, height + 1), rng.integers(0, width + 1)
            top, left = rng.integers(0, height - wh + 1), rng.integers(0, width - ww + 1)
            window = rng.random((wh, ww)) < rng.random()
            full = np.zeros((height, width), dtype=bool)
            full[top:top + wh, left:left + ww] = window
            assert amg_utils.rle_from_window(window, top, left, height, width) == amg_utils.encode_rles(full[None])[0]
    with pytest.raises(ValueError):
        amg_utils.rle_from_window(np.ones((3, 3), bool), 5, 0, 6, 6)


def test_window_upsampling_gives_the_same_records_at_1024_px(mobile_sam):
    """On a real 1024 px photo (the astronaut, upscaled) the fast path and the full resizes give the same records,
    with and without skipping covered points."""
    image = np.asarray(Image.fromarray(ASTRONAUT).resize((1024, 768), Image.Resampling.BICUBIC))
    from anymask.predictor import Predictor

    generator = AutomaticMaskGenerator(Predictor(mobile_sam, backend="onnx"), points_per_side=4, points_per_batch=8,
                                       output_mode="coco_rle", pred_iou_thresh=0.8, stability_score_thresh=0.9)
    embedding = generator.predictor.set_image(image)  # encoded once, reused by every run below
    generator.predictor.set_image = lambda _image, pad_to_square=None: generator.predictor.set_embedding(embedding)
    fast = generator.generate(image)
    generator._window_upsampling = False
    slow = generator.generate(image)
    assert len(fast) > 0 and fast == slow
    generator.skip_covered_points = True
    slow_skip = generator.generate(image)
    generator._window_upsampling = True
    assert generator.generate(image) == slow_skip


def test_int8_precision_stays_close_to_float32(mobile_sam, predictor):
    """The decoder with its upscaling in int8 gives nearly the float32 masks and scores (real photo, real model)."""
    from anymask.predictor import Predictor

    onnx = Predictor(mobile_sam, backend="onnx")
    onnx.set_embedding(predictor.embedding)
    points = np.array([[[120, 60]], [[250, 250]], [[400, 420]], [[60, 400]]], dtype=np.float64)
    labels = np.ones((4, 1), np.int64)
    low32, iou32 = onnx.predict_low_res(points=points, labels=labels)
    low8, iou8 = onnx.predict_low_res(points=points, labels=labels, precision="int8")
    assert not np.array_equal(low8, low32)  # it is another computation
    inter = ((low8 > 0) & (low32 > 0)).sum(axis=(-2, -1))
    union = ((low8 > 0) | (low32 > 0)).sum(axis=(-2, -1))
    assert (inter / np.maximum(union, 1)).min() >= 0.9
    assert np.abs(iou8 - iou32).max() <= 0.05


def test_int8_precision_needs_an_onnx_backend(mobile_sam):
    from anymask.errors import ModelError
    from anymask.predictor import Predictor

    with pytest.raises(ModelError, match="onnx"):
        AutomaticMaskGenerator(Predictor(mobile_sam, backend="torch"), points_per_side=4, precision="int8")


def test_generator_pads_to_the_square_even_with_an_unpadded_predictor(mobile_sam):
    """A predictor made with ``pad_to_square=False`` (the video speed option) still gives SAM's padded geometry
    to the generator: the same records as the default predictor on a non-square real photo."""
    from anymask import Predictor

    wide = np.ascontiguousarray(ASTRONAUT[:288])  # 512 x 288: unpadded, its embedding would be 64 x 36
    unpadded = Predictor(mobile_sam, pad_to_square=False)
    records = AutomaticMaskGenerator(unpadded, points_per_side=4).generate(wide)
    expected = AutomaticMaskGenerator(Predictor(mobile_sam), points_per_side=4).generate(wide)
    assert records and len(records) == len(expected)
    for got, want in zip(records, expected):
        assert np.array_equal(got["segmentation"], want["segmentation"])
        assert got["predicted_iou"] == pytest.approx(want["predicted_iou"], abs=1e-5)
