"""Tests of anymask.masks: RLE, areas, boxes, polygons, IoU, stability score, small-region removal."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from anymask.masks import (
    box_xyxy_to_xywh,
    decode_rle,
    encode_rle,
    iou,
    low_res_extent,
    mask_area,
    mask_to_box,
    mask_to_polygons,
    masks_to_boxes,
    remove_small_regions,
    stability_score,
    upscale_logits,
)

ROOT = Path(__file__).resolve().parents[1]
GRABCUT = ROOT.parent / "shared" / "data" / "grabcut"
HAVE_GRABCUT = (GRABCUT / "index.csv").is_file()


def _disc(height: int, width: int, cx: float, cy: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r**2


def _grabcut_rows(limit: int = 6) -> list[dict[str, str]]:
    with open(GRABCUT / "index.csv", newline="") as handle:
        return list(csv.DictReader(handle))[:limit]


# ------------------------------------------------------------------------------------------------- RLE


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (13, 1), (37, 53), (128, 96)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_rle_round_trip_random(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    mask = rng.random(shape) < density
    rle = encode_rle(mask)
    assert rle["size"] == list(shape)
    assert isinstance(rle["counts"], str)
    assert json.loads(json.dumps(rle)) == rle  # plain JSON types
    decoded = decode_rle(rle)
    assert decoded.dtype == np.bool_ and decoded.shape == shape and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, mask)
    # pycocotools agrees on the area and on the encoding
    coco = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    assert int(mask_utils.area(coco)) == mask_area(mask)


def test_rle_of_non_bool_and_non_contiguous_masks():
    base = _disc(40, 60, 30, 20, 12)
    expected = encode_rle(base)
    assert encode_rle(base.astype(np.uint8) * 255) == expected
    assert encode_rle(np.ascontiguousarray(base[:, ::-1])[:, ::-1]) == expected
    assert encode_rle(np.asfortranarray(base)) == expected


def test_decode_rle_accepts_bytes_and_uncompressed_counts():
    mask = _disc(10, 8, 4, 5, 3)
    rle = encode_rle(mask)
    np.testing.assert_array_equal(decode_rle({"size": rle["size"], "counts": rle["counts"].encode()}), mask)
    # uncompressed: column-major run lengths starting with background
    flat = mask.flatten(order="F")
    runs, current, count = [], False, 0
    for value in flat:
        if value == current:
            count += 1
        else:
            runs.append(count)
            current, count = value, 1
    runs.append(count)
    np.testing.assert_array_equal(decode_rle({"size": [10, 8], "counts": runs}), mask)


def test_decode_rle_rejects_garbage():
    with pytest.raises(ValueError):
        decode_rle({"counts": "abc"})


def test_encode_rle_rejects_wrong_ndim():
    with pytest.raises(ValueError):
        encode_rle(np.zeros((2, 3, 4), bool))


@pytest.mark.skipif(not HAVE_GRABCUT, reason="../shared/data/grabcut not present")
def test_rle_area_and_box_on_real_grabcut_masks():
    for row in _grabcut_rows():
        with Image.open(GRABCUT / row["mask"]) as im:
            mask = np.asarray(im) > 127
        assert mask.shape == (int(row["height"]), int(row["width"]))
        rle = encode_rle(mask)
        np.testing.assert_array_equal(decode_rle(rle), mask)
        assert mask_area(mask) == int(row["fg_pixels"])
        expected_box = tuple(int(row[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))
        assert mask_to_box(mask) == expected_box
        assert tuple(masks_to_boxes(mask[None])[0]) == expected_box
        # the outer polygons of a real object cover nearly all its pixels (holes are filled in, so the
        # rasterised polygons may hold more)
        polygons = mask_to_polygons(mask)
        raster = decode_rle(mask_utils.merge(mask_utils.frPyObjects(polygons, *mask.shape)))
        assert (raster & mask).sum() / mask.sum() > 0.96
        assert iou(raster, mask) > 0.85


# ----------------------------------------------------------------------------------------------- boxes


def test_mask_to_box_inclusive():
    mask = np.zeros((10, 12), bool)
    mask[7, 3] = True
    assert mask_to_box(mask) == (3, 7, 3, 7)
    mask[2:5, 4:11] = True
    assert mask_to_box(mask) == (3, 2, 10, 7)
    assert all(type(v) is int for v in mask_to_box(mask))
    assert mask_to_box(np.zeros((4, 4), bool)) == (0, 0, 0, 0)
    full = np.ones((5, 9), bool)
    assert mask_to_box(full) == (0, 0, 8, 4)


def test_masks_to_boxes_matches_loop():
    rng = np.random.default_rng(1)
    masks = rng.random((20, 31, 27)) < 0.003
    masks[0] = False
    masks[1] = True
    boxes = masks_to_boxes(masks)
    assert boxes.shape == (20, 4) and boxes.dtype == np.int64
    for mask, box in zip(masks, boxes):
        if not mask.any():
            assert box.tolist() == [0, 0, 0, 0]
            continue
        ys, xs = np.nonzero(mask)
        assert box.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
    # leading dimensions are kept
    stacked = masks_to_boxes(masks.reshape(4, 5, 31, 27))
    assert stacked.shape == (4, 5, 4)
    np.testing.assert_array_equal(stacked.reshape(20, 4), boxes)
    assert masks_to_boxes(np.zeros((0, 8, 8), bool)).shape == (0, 4)


def test_box_xyxy_to_xywh():
    np.testing.assert_array_equal(box_xyxy_to_xywh([10, 20, 30, 60]), [10, 20, 20, 40])
    boxes = np.array([[0.5, 1.0, 2.5, 4.0], [3, 3, 3, 3]], dtype=np.float32)
    out = box_xyxy_to_xywh(boxes)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.5, 1.0, 2.0, 3.0], [3, 3, 0, 0]])
    np.testing.assert_array_equal(boxes[0], [0.5, 1.0, 2.5, 4.0])  # input untouched
    with pytest.raises(ValueError):
        box_xyxy_to_xywh([1, 2, 3])


def test_mask_area():
    assert mask_area(np.zeros((3, 3), bool)) == 0
    assert mask_area(_disc(50, 50, 25, 25, 10)) == int(_disc(50, 50, 25, 25, 10).sum())
    assert type(mask_area(np.ones((2, 2), bool))) is int


# -------------------------------------------------------------------------------------------- polygons


def _polygon_area(flat: list[float]) -> float:
    xy = np.asarray(flat).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def test_polygon_area_close_to_disc_area():
    mask = _disc(200, 220, 110, 95, 60)
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 1
    flat = polygons[0]
    assert len(flat) % 2 == 0 and len(flat) >= 6
    assert all(type(v) is float for v in flat)
    area = _polygon_area(flat)
    assert abs(area - mask.sum()) / mask.sum() < 0.03
    # vertices are centres (column + 0.5, row + 0.5) of the mask's boundary pixels
    xy = np.asarray(flat).reshape(-1, 2)
    np.testing.assert_array_equal(xy % 1, 0.5)
    cols, rows = np.floor(xy).astype(int).T
    assert mask[rows, cols].all()
    assert (cols.min(), rows.min(), cols.max(), rows.max()) == mask_to_box(mask)
    # rasterised back by pycocotools it is nearly the same mask
    raster = decode_rle(mask_utils.frPyObjects([flat], 200, 220)[0])
    assert iou(raster, mask) > 0.98


def test_polygon_of_rectangle():
    mask = np.zeros((20, 20), bool)
    mask[2:12, 3:8] = True  # columns 3..7, rows 2..11
    (flat,) = mask_to_polygons(mask)
    xy = np.asarray(flat).reshape(-1, 2)
    assert sorted(map(tuple, xy.tolist())) == [(3.5, 2.5), (3.5, 11.5), (7.5, 2.5), (7.5, 11.5)]
    raster = decode_rle(mask_utils.frPyObjects([flat], 20, 20)[0])
    assert (raster <= mask).all() and raster.sum() >= 36


def test_polygons_one_per_region_holes_not_represented_min_area():
    mask = np.zeros((60, 80), bool)
    mask[5:25, 5:35] = True  # 20 x 30 block ...
    mask[10:15, 10:15] = False  # ... with a hole
    mask[40:44, 60:64] = True  # 4 x 4 block
    mask[50, 10] = True  # one pixel: fewer than 3 points
    mask[55, 20:22] = True  # two pixels: fewer than 3 points
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    areas = sorted(_polygon_area(p) for p in polygons)
    assert areas == [9.0, 29.0 * 19.0]  # the hole is not subtracted
    assert len(mask_to_polygons(mask, min_area=10)) == 1
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []
    assert mask_to_polygons(np.zeros((0, 5), bool)) == []


# --------------------------------------------------------------------------------------- IoU


def test_iou():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    assert iou(a, b) == 1.0
    a[:5] = True
    assert iou(a, b) == 0.0
    b[3:8] = True
    assert iou(a, b) == pytest.approx(20 / 80)
    assert type(iou(a, b)) is float
    batch = iou(np.stack([a, b, a]), b)
    np.testing.assert_allclose(batch, [0.25, 1.0, 0.25])
    with pytest.raises(ValueError):
        iou(a, np.zeros((3, 3), bool))


# ----------------------------------------------------------------------------------- stability score


def test_stability_score_matches_direct_computation():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 32, 40, generator=gen) * 4
    threshold, offset = 0.0, 1.0
    scores = stability_score(logits, threshold, offset)
    assert scores.shape == (2, 3) and scores.dtype == torch.float32
    arr = logits.numpy()
    for b in range(2):
        for c in range(3):
            high = arr[b, c] > threshold + offset
            low = arr[b, c] > threshold - offset
            assert scores[b, c].item() == pytest.approx(iou(high, low), abs=1e-6)


def test_stability_score_matches_segment_anything():
    amg = pytest.importorskip("segment_anything.utils.amg")
    logits = torch.randn(5, 64, 64, generator=torch.Generator().manual_seed(3)) * 3
    for threshold, offset in ((0.0, 1.0), (0.5, 0.25)):
        expected = amg.calculate_stability_score(logits, threshold, offset)
        torch.testing.assert_close(stability_score(logits, threshold, offset), expected.float())


def test_stability_score_edge_cases():
    logits = torch.full((2, 8, 8), -10.0)
    logits[1, :4] = 10.0
    scores = stability_score(logits, 0.0, 1.0)
    assert scores.tolist() == [0.0, 1.0]  # empty union gives 0, not NaN
    assert stability_score(torch.zeros(4, 4), 0.0, 1.0).shape == ()


# --------------------------------------------------------------------------------- small regions


def _sam_reference(mask: np.ndarray, area_thresh: float, mode: str):
    amg = pytest.importorskip("segment_anything.utils.amg")
    return amg.remove_small_regions(mask, area_thresh, mode)


def test_remove_small_holes():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[10:12, 10:12] = False  # 4-pixel hole
    mask[20:28, 20:28] = False  # 64-pixel hole
    out, changed = remove_small_regions(mask, 10, "holes")
    assert changed and out.dtype == np.bool_ and out.shape == mask.shape
    assert out[10:12, 10:12].all()
    assert not out[20:28, 20:28].any()
    assert mask_area(out) == mask_area(mask) + 4
    out2, changed2 = remove_small_regions(out, 10, "holes")
    assert not changed2
    np.testing.assert_array_equal(out2, out)


def test_remove_small_islands():
    mask = np.zeros((40, 40), bool)
    mask[2:4, 2:4] = True  # 4 pixels
    mask[10:30, 10:30] = True  # 400 pixels
    out, changed = remove_small_regions(mask, 10, "islands")
    assert changed
    assert not out[2:4, 2:4].any() and out[10:30, 10:30].all()
    # every island small: the largest is kept
    small = np.zeros((20, 20), bool)
    small[1, 1] = True
    small[5:7, 5:8] = True
    out, changed = remove_small_regions(small, 100, "islands")
    assert changed
    np.testing.assert_array_equal(out, np.pad(np.ones((2, 3), bool), ((5, 13), (5, 12))))
    # nothing to remove: unchanged, and a new array
    out, changed = remove_small_regions(mask, 2, "islands")
    assert not changed and not np.shares_memory(out, mask)
    np.testing.assert_array_equal(out, mask)
    with pytest.raises(ValueError):
        remove_small_regions(mask, 2, "bumps")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_remove_small_regions_matches_segment_anything(mode):
    rng = np.random.default_rng(5)
    for _ in range(5):
        mask = rng.random((48, 64)) < (0.3 if mode == "islands" else 0.7)
        for thresh in (2, 5, 30):
            expected, expected_changed = _sam_reference(mask, thresh, mode)
            out, changed = remove_small_regions(mask, thresh, mode)
            assert changed == expected_changed
            np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("input_size, low_res_shape", [((576, 1024), (256, 256)), ((1024, 600), (256, 256)),
                                                       ((768, 1024), (256, 256)), ((1024, 1024), (256, 256)),
                                                       ((576, 1024), (144, 256)), ((3, 1024), (256, 256))])
def test_upscaling_resizes_only_the_low_res_rows_the_image_reads(input_size, low_res_shape):
    """Resizing the rows and columns of :func:`low_res_extent` gives the whole map's resize, cropped, bit for bit;
    one row (or column) fewer changes the image's last pixels (geometry, random logits)."""
    import cv2

    logits = np.random.default_rng(0).normal(scale=8, size=low_res_shape).astype(np.float32)
    h, w = input_size
    whole = cv2.resize(logits, (4 * low_res_shape[1], 4 * low_res_shape[0]), interpolation=cv2.INTER_LINEAR)[:h, :w]
    original = (round(h * 0.75), round(w * 0.75))
    expected = cv2.resize(np.ascontiguousarray(whole), original[::-1], interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(upscale_logits(logits, 4, input_size, original), expected)
    np.testing.assert_array_equal(upscale_logits(logits, 4, input_size, input_size), whole)
    rows, cols = low_res_extent(low_res_shape, 4, input_size)
    for r, c in ((rows - 1, cols), (rows, cols - 1)):  # one row or column fewer: the image's edge changes
        cut = cv2.resize(logits[:r, :c], (4 * c, 4 * r), interpolation=cv2.INTER_LINEAR)
        assert cut.shape[0] < h or cut.shape[1] < w or not np.array_equal(cut[:h, :w], whole)
