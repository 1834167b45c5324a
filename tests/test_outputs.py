"""Tests of anymask.outputs: written files are readable and right; writes are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from anymask import outputs
from anymask.errors import OutputError
from anymask.images import load_image
from anymask.masks import decode_rle, mask_to_polygons
from anymask.outputs import (
    BOX_COLOR,
    NEGATIVE_POINT_COLOR,
    PALETTE,
    POSITIVE_POINT_COLOR,
    make_cutout,
    make_overlay,
    mask_record,
    save_cutout,
    save_mask_png,
    save_overlay,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return load_image(ASTRONAUT)


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    y, x = np.mgrid[0:512, 0:512]
    m = (x - 220) ** 2 + (y - 150) ** 2 <= 70**2  # roughly the head
    m[300:320, 400:430] = True  # a second, separate region
    return m


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------------------------------- mask PNG


def test_save_mask_png(tmp_path, mask):
    path = save_mask_png(tmp_path / "mask.png", mask)
    assert path == tmp_path / "mask.png"
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (512, 512)
        values = np.asarray(im)
    assert set(np.unique(values).tolist()) == {0, 255}
    np.testing.assert_array_equal(values == 255, mask)
    assert _leftovers(tmp_path) == ["mask.png"]  # no temp files left


def test_save_mask_png_creates_directories_and_accepts_uint8(tmp_path, mask):
    path = save_mask_png(tmp_path / "a" / "b" / "m.png", mask.astype(np.uint8))
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im) == 255, mask)


def test_save_mask_png_rejects_3d(tmp_path):
    with pytest.raises(ValueError):
        save_mask_png(tmp_path / "m.png", np.zeros((2, 4, 4), bool))
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------ cut-out


def test_make_cutout_crop(image, mask):
    cut = make_cutout(image, mask)
    ys, xs = np.nonzero(mask)
    assert cut.dtype == np.uint8
    assert cut.shape == (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1, 4)
    sub_mask = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    sub_image = image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    np.testing.assert_array_equal(cut[..., 3], np.where(sub_mask, 255, 0))
    np.testing.assert_array_equal(cut[sub_mask][:, :3], sub_image[sub_mask])
    assert (cut[~sub_mask] == 0).all()


def test_make_cutout_no_crop(image, mask):
    cut = make_cutout(image, mask, crop=False)
    assert cut.shape == (512, 512, 4)
    np.testing.assert_array_equal(cut[..., 3] == 255, mask)
    np.testing.assert_array_equal(cut[mask][:, :3], image[mask])
    assert (cut[~mask] == 0).all()


def test_make_cutout_empty_mask(image):
    empty = np.zeros((512, 512), bool)
    assert make_cutout(image, empty).tolist() == [[[0, 0, 0, 0]]]
    full = make_cutout(image, empty, crop=False)
    assert full.shape == (512, 512, 4) and not full.any()


def test_make_cutout_shape_mismatch(image):
    with pytest.raises(ValueError):
        make_cutout(image, np.zeros((10, 10), bool))
    with pytest.raises(ValueError):
        make_cutout(image.astype(np.float32), np.zeros((512, 512), bool))


def test_save_cutout(tmp_path, image, mask):
    path = save_cutout(tmp_path / "cut.png", image, mask)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(im), make_cutout(image, mask))
    path = save_cutout(tmp_path / "empty.png", image, np.zeros((512, 512), bool))
    with Image.open(path) as im:
        assert im.size == (1, 1) and im.getpixel((0, 0)) == (0, 0, 0, 0)


# ------------------------------------------------------------------------------------------- overlay


def test_overlay_without_anything_is_the_image(image):
    out = make_overlay(image, np.zeros((0, 512, 512), bool))
    np.testing.assert_array_equal(out, image)
    assert out.flags.c_contiguous and not np.shares_memory(out, image)


def test_overlay_tints_masks_and_draws_prompts(image, mask):
    second = np.zeros_like(mask)
    second[400:480, 50:150] = True
    points = np.array([[220.0, 150.0], [100.4, 440.6], [-5, -5]])
    labels = np.array([1, 0, 1])
    boxes = np.array([[150, 80, 290, 220]])
    out = make_overlay(image, np.stack([mask, second]), points=points, labels=labels, boxes=boxes, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    # inside a mask, away from outlines and prompts: exact blend with the mask's colour
    blend0 = np.rint(0.5 * image[150, 180].astype(float) + 0.5 * np.array(PALETTE[0])).astype(np.uint8)
    np.testing.assert_array_equal(out[150, 180], blend0)
    blend1 = np.rint(0.5 * image[430, 120].astype(float) + 0.5 * np.array(PALETTE[1])).astype(np.uint8)
    np.testing.assert_array_equal(out[430, 120], blend1)
    # outside every mask and drawing: unchanged
    np.testing.assert_array_equal(out[20:60, 420:500], image[20:60, 420:500])
    # points and box
    assert tuple(out[150, 220]) == POSITIVE_POINT_COLOR
    assert tuple(out[441, 100]) == NEGATIVE_POINT_COLOR
    assert tuple(out[80, 200]) == BOX_COLOR
    assert tuple(out[150, 290]) == BOX_COLOR
    # the outline is drawn in the mask colour (on the outer boundary of the small rectangle region)
    assert tuple(out[300, 415]) == PALETTE[0]
    # inputs untouched
    assert image[150, 220].tolist() != list(POSITIVE_POINT_COLOR)


def test_overlay_single_mask_default_labels_and_flat_box(image, mask):
    out = make_overlay(image, mask, points=[[10, 10]], boxes=[300, 300, 400, 400], alpha=1.0)
    assert tuple(out[10, 10]) == POSITIVE_POINT_COLOR
    assert tuple(out[150, 180]) == PALETTE[0]  # alpha 1: the colour itself
    assert tuple(out[300, 350]) == BOX_COLOR


def test_overlay_palette_repeats(image):
    masks = np.zeros((len(PALETTE) + 1, 512, 512), bool)
    for i in range(len(masks)):
        masks[i, 10:40, 40 * i + 5 : 40 * i + 35] = True
    out = make_overlay(image, masks, alpha=1.0)
    assert tuple(out[25, 20]) == PALETTE[0]
    assert tuple(out[25, 40 * len(PALETTE) + 20]) == PALETTE[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"masks": np.zeros((1, 10, 10), bool)},
        {"points": np.zeros((3, 3))},
        {"points": np.zeros((2, 2)), "labels": np.ones(3)},
        {"points": np.array([[np.nan, 1.0]])},
        {"boxes": np.zeros((2, 5))},
        {"alpha": 1.5},
    ],
)
def test_overlay_rejects_bad_arguments(image, kwargs):
    args = {"masks": np.zeros((1, 512, 512), bool), **kwargs}
    with pytest.raises(ValueError):
        make_overlay(image, **args)


@pytest.mark.parametrize("name, fmt", [("o.png", "PNG"), ("o.jpg", "JPEG"), ("O.JPEG", "JPEG")])
def test_save_overlay(tmp_path, image, mask, name, fmt):
    path = save_overlay(tmp_path / name, image, mask[None], points=[[220, 150]], labels=[1])
    with Image.open(path) as im:
        assert im.format == fmt and im.mode == "RGB" and im.size == (512, 512)
        saved = np.asarray(im)
    expected = make_overlay(image, mask[None], points=[[220, 150]], labels=[1])
    if fmt == "PNG":
        np.testing.assert_array_equal(saved, expected)
    else:
        assert np.abs(saved.astype(int) - expected).mean() < 3


def test_save_overlay_unknown_suffix(tmp_path, image, mask):
    with pytest.raises(OutputError, match="overlay"):
        save_overlay(tmp_path / "o.gif", image, mask[None])
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- JSON


def test_mask_record(mask):
    record = mask_record(mask, np.float32(0.875), index=np.int64(3))
    assert set(record) == {"index", "score", "area", "bbox", "bbox_xyxy", "segmentation", "polygons"}
    assert record["index"] == 3 and type(record["index"]) is int
    assert record["score"] == 0.875 and type(record["score"]) is float
    assert record["area"] == int(mask.sum()) and type(record["area"]) is int
    ys, xs = np.nonzero(mask)
    assert record["bbox_xyxy"] == [xs.min(), ys.min(), xs.max(), ys.max()]
    x0, y0, x1, y1 = record["bbox_xyxy"]
    assert record["bbox"] == [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
    assert all(type(v) is int for v in record["bbox"] + record["bbox_xyxy"])
    rle = record["segmentation"]
    assert rle["size"] == [512, 512] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(decode_rle(rle), mask)
    coco_rle = {"size": rle["size"], "counts": rle["counts"].encode()}
    assert mask_utils.toBbox(coco_rle).tolist() == record["bbox"]  # COCO bbox = pycocotools' own
    assert int(mask_utils.area(coco_rle)) == record["area"]
    assert record["polygons"] == mask_to_polygons(mask) and len(record["polygons"]) == 2
    # JSON round trip with plain types only
    assert json.loads(json.dumps(record, allow_nan=False)) == record


def test_mask_record_without_polygons_and_empty():
    empty = np.zeros((4, 6), bool)
    record = mask_record(empty, 0.0, include_polygons=False)
    assert "polygons" not in record
    assert record["area"] == 0 and record["bbox"] == [0, 0, 0, 0] and record["bbox_xyxy"] == [0, 0, 0, 0]
    np.testing.assert_array_equal(decode_rle(record["segmentation"]), empty)
    with pytest.raises(ValueError):
        mask_record(empty, float("nan"))


def test_write_json(tmp_path, mask):
    obj = {"name": "astronaut ✓ Eileen", "masks": [mask_record(mask, 0.9)], "n": np.int32(1), "arr": np.arange(3)}
    path = write_json(tmp_path / "out" / "result.json", obj)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and '\n  "name"' in text and "✓" in text
    loaded = json.loads(text)
    assert loaded["n"] == 1 and loaded["arr"] == [0, 1, 2]
    np.testing.assert_array_equal(decode_rle(loaded["masks"][0]["segmentation"]), mask)
    assert _leftovers(tmp_path / "out") == ["result.json"]


def test_write_json_unserialisable_leaves_no_file(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "nan.json", {"score": float("nan")})
    with pytest.raises(TypeError):
        write_json(tmp_path / "obj.json", {"x": object()})
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ failures, atomicity


def _writers(image, mask):
    return {
        "mask": lambda p: save_mask_png(p, mask),
        "cutout": lambda p: save_cutout(p, image, mask),
        "overlay": lambda p: save_overlay(p, image, mask[None]),
        "json": lambda p: write_json(p, mask_record(mask, 0.5)),
    }


@pytest.mark.parametrize("kind", ["mask", "cutout", "overlay", "json"])
def test_parent_is_a_file_gives_output_error(tmp_path, image, mask, kind):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    name = "out.json" if kind == "json" else "out.png"
    for target in (blocker / name, blocker / "sub" / name):
        with pytest.raises(OutputError):
            _writers(image, mask)[kind](target)
    assert _leftovers(tmp_path) == ["blocker"]
    assert blocker.read_text() == "a regular file"


@pytest.mark.parametrize("kind", ["mask", "cutout", "overlay"])
def test_encoder_failure_writes_nothing(tmp_path, monkeypatch, image, mask, kind):
    target = tmp_path / "out.png"
    target.write_bytes(b"old content")

    def broken_save(self, fp, format=None, **params):  # noqa: A002
        fp.write(b"half an image")
        raise OSError("simulated encoder failure")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="simulated"):
        _writers(image, mask)[kind](target)
    assert target.read_bytes() == b"old content"  # the old file is intact
    assert _leftovers(tmp_path) == ["out.png"]  # and no temp file
    (tmp_path / "fresh").mkdir()
    with pytest.raises(OSError, match="simulated"):
        _writers(image, mask)[kind](tmp_path / "fresh" / "new.png")
    assert _leftovers(tmp_path / "fresh") == []


def test_failure_during_file_write_leaves_no_partial_file(tmp_path, monkeypatch, mask):
    target = tmp_path / "m.png"

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.atomic_write_bytes.__globals__["os"], "replace", failing_replace)
    with pytest.raises(OutputError):
        save_mask_png(target, mask)
    assert _leftovers(tmp_path) == []
