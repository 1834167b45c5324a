"""Tests of anymask.predictor with the real MobileSAM weights on real photos.

Image encodings are the expensive part (seconds each on a CPU), so almost every test reuses the
session-scoped ``predictor`` fixture (the astronaut photo, already encoded). Tests that need another image
build their own ``Predictor(mobile_sam)``; where only the encoder *input* matters the encoder is replaced by
a recorder (the encoder is deterministic, so the same input means the same embedding).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anymask import ImageEmbedding, Predictor
from anymask.errors import AnymaskError, ImageError, ModelError, PromptError
from anymask.images import load_image
from anymask.masks import iou, mask_to_box

from conftest import EXAMPLE_IMAGE, load_mask

H = W = 512
SHUTTLE_CLICK = (405.0, 150.0)  # on the white orbiter of the space-shuttle model (top right)
HELMET_BOX = (275.0, 340.0, 512.0, 512.0)  # the black helmet at the bottom right
FLAG_CLICK = (30.0, 250.0)  # on the US flag at the left edge


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_image(EXAMPLE_IMAGE)


@pytest.fixture(scope="module")
def click(predictor):
    """``predict(points=[SHUTTLE_CLICK], labels=[1])``: (masks, scores, logits), computed once."""
    return predictor.predict(points=[SHUTTLE_CLICK], labels=[1])


@pytest.fixture(scope="module")
def helmet(predictor):
    """``predict(box=HELMET_BOX, multimask=False)``: (masks, scores, logits), computed once."""
    return predictor.predict(box=HELMET_BOX, multimask=False)


def _box_fraction(mask: np.ndarray, box) -> tuple[float, float]:
    """(fraction of the box covered by the mask, fraction of the mask lying outside the box)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    inside = mask[y0:y1, x0:x1]
    covered = inside.sum() / inside.size
    outside = (mask.sum() - inside.sum()) / max(mask.sum(), 1)
    return float(covered), float(outside)


class _EncoderRecorder:
    """Stands in for the image encoder's forward: records its inputs, returns a fixed embedding."""

    def __init__(self):
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x):
        self.inputs.append(x.clone())
        return torch.zeros(1, 256, 64, 64)


# ------------------------------------------------------------------------------------------ shapes


def test_single_click_multimask_shapes(click):
    masks, scores, logits = click
    assert masks.shape == (3, H, W) and masks.dtype == np.bool_
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert logits.shape == (3, 256, 256) and logits.dtype == np.float32
    assert np.all((scores > 0) & (scores < 1.2))
    # the three candidates are different masks
    assert len({m.tobytes() for m in masks}) == 3


def test_box_single_mask_shapes(helmet):
    masks, scores, logits = helmet
    assert masks.shape == (1, H, W) and masks.dtype == np.bool_
    assert scores.shape == (1,)
    assert logits.shape == (1, 256, 256)


def test_two_boxes_give_a_batch(predictor):
    boxes = np.array([HELMET_BOX, (355, 0, 470, 290)])
    masks, scores, logits = predictor.predict(box=boxes)
    assert masks.shape == (2, 3, H, W) and masks.dtype == np.bool_
    assert scores.shape == (2, 3)
    assert logits.shape == (2, 3, 256, 256)
    # an entry of the batch is what that box gives alone (the second: not just a copy of the first)
    single_masks, single_scores, single_logits = predictor.predict(box=boxes[1])
    np.testing.assert_allclose(logits[1], single_logits, atol=1e-3)
    np.testing.assert_allclose(scores[1], single_scores, atol=1e-4)
    assert iou(masks[1, 0], single_masks[0]) > 0.999
    assert iou(masks[0, 0], masks[1, 0]) < 0.05


def test_points_and_box_together(predictor):
    box = (355.0, 0.0, 470.0, 290.0)
    masks, scores, logits = predictor.predict(points=[SHUTTLE_CLICK, (440, 270)], labels=[1, 0], box=box,
                                              multimask=False)
    assert masks.shape == (1, H, W) and scores.shape == (1,) and logits.shape == (1, 256, 256)
    box_only = predictor.predict(box=box, multimask=False)[2]
    assert not np.allclose(logits, box_only, atol=1e-3), "the points had no effect"
    assert masks[0][int(SHUTTLE_CLICK[1]), int(SHUTTLE_CLICK[0])]


def test_points_are_shared_by_a_batch_of_boxes(predictor):
    boxes = np.array([HELMET_BOX, (355, 0, 470, 290)])
    points, labels = [(300, 500)], [0]
    masks, scores, logits = predictor.predict(points=points, labels=labels, box=boxes, multimask=False)
    assert masks.shape == (2, 1, H, W) and scores.shape == (2, 1) and logits.shape == (2, 1, 256, 256)
    alone = predictor.predict(points=points, labels=labels, box=boxes[1], multimask=False)
    np.testing.assert_allclose(logits[1], alone[2], atol=1e-3)
    assert masks[0, 0][450, 400] and not masks[1, 0][450, 400]


def test_batched_points(predictor, click):
    points = np.array([[SHUTTLE_CLICK], [FLAG_CLICK]])  # (B=2, N=1, 2)
    masks, scores, logits = predictor.predict(points=points)
    assert masks.shape == (2, 3, H, W) and scores.shape == (2, 3) and logits.shape == (2, 3, 256, 256)
    np.testing.assert_allclose(logits[0], click[2], atol=1e-3)
    np.testing.assert_allclose(logits[1], predictor.predict(points=points[1])[2], atol=1e-3)
    # different objects: the best masks of the two prompts hardly overlap
    a, b = masks[0, scores[0].argmax()], masks[1, scores[1].argmax()]
    assert iou(a, b) < 0.05


def test_mask_input_feedback(predictor, click):
    masks, scores, logits = click
    best = logits[scores.argmax()]
    assert best.shape == (256, 256)
    prompt = dict(points=[SHUTTLE_CLICK, (418, 60)], labels=[1, 1], multimask=False)
    refined, refined_scores, refined_logits = predictor.predict(mask_input=best[None], **prompt)  # (1,256,256)
    assert refined.shape == (1, H, W) and refined_scores.shape == (1,) and refined_logits.shape == (1, 256, 256)
    flat = predictor.predict(mask_input=best, **prompt)  # (256, 256): the same prompt
    np.testing.assert_array_equal(flat[0], refined)
    np.testing.assert_allclose(flat[2], refined_logits, atol=1e-6)
    without = predictor.predict(**prompt)[2]
    assert not np.allclose(refined_logits, without, atol=1e-3), "mask_input had no effect"
    # still the shuttle model: contains the clicks, nothing of the astronaut
    assert refined[0][150, 405] and refined[0][60, 418]
    x0, y0, x1, y1 = mask_to_box(refined[0])
    assert x0 >= 340 and x1 <= 485 and y1 <= 360, (x0, y0, x1, y1)  # the model (and at most its stand)


def test_return_logits(predictor, click):
    masks, scores, _ = click
    logits, scores2, _ = predictor.predict(points=[SHUTTLE_CLICK], return_logits=True)
    assert logits.shape == (3, H, W)
    assert logits.dtype == np.float32
    assert logits.min() < 0 < logits.max()
    np.testing.assert_array_equal(logits > 0, masks)
    np.testing.assert_allclose(scores, scores2)


def test_labels_default_to_foreground(predictor):
    default = predictor.predict(points=[SHUTTLE_CLICK, FLAG_CLICK])
    explicit = predictor.predict(points=[SHUTTLE_CLICK, FLAG_CLICK], labels=[1, 1])
    background = predictor.predict(points=[SHUTTLE_CLICK, FLAG_CLICK], labels=[1, 0])
    np.testing.assert_array_equal(default[0], explicit[0])
    np.testing.assert_allclose(default[2], explicit[2])
    assert not np.allclose(default[2], background[2], atol=1e-3)


# ----------------------------------------------------------------------------------- mask quality


def test_click_on_the_shuttle_model(click):
    masks, scores, _ = click
    best = masks[scores.argmax()]
    assert best[150, 405], "the mask does not contain the click"
    area = int(best.sum())
    assert 3_000 < area < 30_000, area  # the model is ~115 x 285 px; the image is 262,144 px
    x0, y0, x1, y1 = mask_to_box(best)
    # the shuttle stack occupies about x 355..470, y 0..285
    assert 340 <= x0 and x1 <= 485 and y1 <= 300, (x0, y0, x1, y1)
    # nothing of the astronaut's face, suit or the flag
    assert not best[:, :300].any()
    assert not best[300:, :].any()


def test_helmet_box(helmet):
    masks, scores, _ = helmet
    mask = masks[0]
    covered, outside = _box_fraction(mask, HELMET_BOX)
    assert covered > 0.6, covered  # the helmet fills most of its box
    assert outside < 0.03, outside
    x0, y0, x1, y1 = mask_to_box(mask)
    assert 270 <= x0 <= 300 and 335 <= y0 <= 360 and x1 >= 480 and y1 >= 500, (x0, y0, x1, y1)
    assert scores[0] > 0.8


def test_box_prompts_on_real_objects(mobile_sam, real_instances):
    """A box around a ground-truth object: IoU >= 0.8 for most of a spread of real images (3 encodings)."""
    picked = [real_instances[0], real_instances[5], real_instances[9]]  # GrabCut, Berkeley, DAVIS
    assert [name in str(row["image"]) for row, name in zip(picked, ("grabcut", "berkeley", "davis2016_val"))] == [True] * 3
    p = Predictor(mobile_sam)
    ious = []
    for row in picked:
        p.set_image(row["image"])
        gt = load_mask(row["mask"])
        box = [row["bbox_x0"], row["bbox_y0"], row["bbox_x1"] + 1, row["bbox_y1"] + 1]
        masks, _, _ = p.predict(box=box, multimask=False)
        assert masks.shape == (1, row["height"], row["width"]) == (1, *gt.shape)
        ious.append(float(iou(masks[0], gt)))
    print("box-prompt IoU:", [round(v, 3) for v in ious])
    assert sum(v >= 0.8 for v in ious) >= 2, ious
    assert np.mean(ious) >= 0.85 and min(ious) >= 0.5, ious


# ------------------------------------------------------------------------------------ embeddings


def test_embedding_attributes(predictor):
    emb = predictor.embedding
    assert emb.features.shape == (1, 256, 64, 64) and emb.features.dtype == np.float32
    assert emb.original_size == (H, W)
    assert emb.input_size == (1024, 1024)
    assert emb.model == "mobile_sam"


def test_embedding_save_load_and_set_embedding_skip_the_encoder(predictor, click, helmet, mobile_sam, tmp_path,
                                                                monkeypatch):
    path = predictor.embedding.save(tmp_path / "astronaut.npz")
    assert path == tmp_path / "astronaut.npz" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["astronaut.npz"]  # no temp files left
    loaded = ImageEmbedding.load(path)
    np.testing.assert_array_equal(loaded.features, predictor.embedding.features)
    assert loaded.original_size == (H, W) and loaded.input_size == (1024, 1024) and loaded.model == "mobile_sam"

    calls = []
    monkeypatch.setattr(mobile_sam.image_encoder, "forward", lambda *a, **k: calls.append(1) or 1 / 0)
    fresh = Predictor(mobile_sam)
    fresh.set_embedding(loaded)
    for prompt, expected in ((dict(points=[SHUTTLE_CLICK]), click), (dict(box=HELMET_BOX, multimask=False), helmet)):
        got = fresh.predict(**prompt)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[2], expected[2])
    assert calls == [], "set_embedding/predict ran the image encoder"


def test_set_embedding_from_another_model(predictor, mobile_sam):
    other = dataclasses.replace(predictor.embedding, model="lite_medsam")
    fresh = Predictor(mobile_sam)
    with pytest.raises(ModelError, match="lite_medsam") as info:
        fresh.set_embedding(other)
    assert "mobile_sam" in str(info.value)
    with pytest.raises(PromptError):  # and nothing was set
        fresh.predict(points=[SHUTTLE_CLICK])


def test_embedding_load_rejects_a_non_embedding_file(tmp_path):
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"this is not an npz file")
    with pytest.raises(ModelError, match="not an anymask embedding"):
        ImageEmbedding.load(bogus)
    with pytest.raises(ModelError):
        ImageEmbedding.load(tmp_path / "missing.npz")


def test_path_pil_array_and_rgba_give_the_same_encoder_input(predictor, mobile_sam, astronaut, tmp_path,
                                                             monkeypatch):
    rgba = np.dstack([astronaut, np.linspace(0, 255, H * W).reshape(H, W).astype(np.uint8)])
    rgba_path = tmp_path / "astronaut_rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(rgba_path)
    with Image.open(rgba_path) as im:
        assert im.mode == "RGBA"

    recorder = _EncoderRecorder()
    monkeypatch.setattr(mobile_sam.image_encoder, "forward", recorder)
    p = Predictor(mobile_sam)
    with Image.open(EXAMPLE_IMAGE) as pil:
        sources = [EXAMPLE_IMAGE, str(EXAMPLE_IMAGE), pil, astronaut.copy(), rgba_path]
        embeddings = [p.set_image(src) for src in sources]
    assert len(recorder.inputs) == len(sources)
    reference = recorder.inputs[0]
    assert reference.shape == (1, 3, 1024, 1024)
    for x in recorder.inputs[1:]:
        assert torch.equal(x, reference)
    for emb in embeddings:
        assert emb.original_size == (H, W) and emb.input_size == (1024, 1024)
    # and that input is what the real predictor encoded for the fixture
    expected, size = predictor.preprocess(astronaut)
    assert size == (1024, 1024) and torch.equal(expected, reference)


def test_exif_rotated_image_gives_masks_in_the_rotated_frame(mobile_sam, helmet, astronaut, tmp_path):
    shown = np.ascontiguousarray(astronaut[256:])  # (256, 512): lower half with the helmet at the right
    stored = np.ascontiguousarray(np.rot90(shown, k=1))  # (512, 256): how a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, quality=98, exif=exif)
    loaded = load_image(path)
    assert loaded.shape == (256, 512, 3)
    assert np.abs(loaded.astype(int) - shown.astype(int)).mean() < 3

    p = Predictor(mobile_sam)
    emb = p.set_image(path)
    assert emb.original_size == (256, 512)
    box = (275, 84, 512, 256)  # HELMET_BOX in the displayed frame
    masks, _, _ = p.predict(box=box, multimask=False)
    assert masks.shape == (1, 256, 512)
    covered, outside = _box_fraction(masks[0], box)
    assert covered > 0.6 and outside < 0.05, (covered, outside)
    assert iou(masks[0], helmet[0][0][256:]) > 0.85


def test_grayscale_image_is_accepted(mobile_sam, predictor, helmet, astronaut, tmp_path):
    gray_path = tmp_path / "gray.png"
    Image.fromarray(astronaut).convert("L").save(gray_path)
    with Image.open(gray_path) as im:
        assert im.mode == "L"
    p = Predictor(mobile_sam)
    emb = p.set_image(gray_path)
    assert emb.original_size == (H, W)
    assert not np.array_equal(emb.features, predictor.embedding.features)
    masks, scores, _ = p.predict(box=HELMET_BOX, multimask=False)
    assert masks.shape == (1, H, W)
    covered, outside = _box_fraction(masks[0], HELMET_BOX)
    assert covered > 0.6 and outside < 0.05, (covered, outside)
    assert iou(masks[0], helmet[0][0]) > 0.85


# ------------------------------------------------------------------------------------- bad input


def test_predict_before_set_image(mobile_sam):
    p = Predictor(mobile_sam)
    with pytest.raises(PromptError, match="no image is set"):
        p.predict(points=[(10, 10)])


def test_predict_after_reset_image(predictor, mobile_sam):
    p = Predictor(mobile_sam)
    p.set_embedding(predictor.embedding)
    assert p.predict(points=[SHUTTLE_CLICK])[0].shape == (3, H, W)
    p.reset_image()
    with pytest.raises(PromptError, match="no image is set"):
        p.predict(points=[SHUTTLE_CLICK])


def test_predictor_needs_a_spec():
    from anymask.models import build_mobile_sam

    with pytest.raises(ModelError, match="spec"):
        Predictor(build_mobile_sam())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), "no prompt"),
        (dict(labels=[1], box=HELMET_BOX), "labels given without points"),
        (dict(points=[(10, np.nan)]), "NaN"),
        (dict(points=[(10, np.inf)]), "NaN or infinite"),
        (dict(points=[(10, 10)], labels=[2]), "labels must be 1"),
        (dict(points=[(10, 10)], labels=[-1]), "labels must be 1"),
        (dict(points=[(10, 10), (20, 20)], labels=[1]), "do not match"),
        (dict(points=[(10, 10)], labels=[1, 0]), "do not match"),
        (dict(points=[(10, 10, 1)]), "points must have shape"),
        (dict(points=np.zeros((0, 2))), "points must have shape"),
        (dict(points=[("a", "b")]), "points must be numeric"),
        (dict(box=(100, 10, 50, 60)), "x0 <= x1"),
        (dict(box=(10, 100, 50, 60)), "y0 <= y1"),
        (dict(box=[(10, 10, 50, 50), (60, 10, 50, 50)]), "x0 <= x1"),
        (dict(box=(10, 10, 50)), "box must have shape"),
        (dict(box=np.zeros((1, 2, 4))), "box must have shape"),
        (dict(box=[]), "box must have shape"),
        (dict(points=[(600, 10)]), "outside the 512x512 image"),
        (dict(points=[(10, -1)]), "outside the 512x512 image"),
        (dict(box=(0, 0, 513, 100)), "outside the 512x512 image"),
        (dict(points=[(10, 10)], mask_input=np.zeros((64, 64))), "mask_input must be"),
        (dict(points=[(10, 10)], mask_input=np.zeros((3, 256, 256))), "mask_input must be"),
        (dict(points=[(10, 10)], mask_input=np.zeros((1, 1, 1, 256, 256))), "mask_input must be"),
        (dict(points=np.zeros((2, 1, 2)), box=np.array([[0, 0, 5, 5]] * 3)), "batch sizes differ"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_prompts(predictor, kwargs, message):
    with pytest.raises(PromptError) as info:
        predictor.predict(**kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, AnymaskError) and isinstance(info.value, ValueError)


def test_points_on_the_image_border_are_accepted(predictor):
    masks, _, _ = predictor.predict(points=[(0, 0), (W, H)], box=(0, 0, W, H), multimask=False)
    assert masks.shape == (1, H, W)


def test_batched_mask_input_is_not_silently_dropped(predictor):
    feedback = np.zeros((2, 1, 256, 256), dtype=np.float32)
    masks, scores, logits = predictor.predict(points=[SHUTTLE_CLICK], mask_input=feedback)
    assert masks.shape == (2, 3, H, W) and scores.shape == (2, 3) and logits.shape == (2, 3, 256, 256)


def _bad_image_files(tmp_path: Path) -> dict[str, Path]:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(EXAMPLE_IMAGE.read_bytes()[: EXAMPLE_IMAGE.stat().st_size // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    return {"missing": tmp_path / "missing.png", "corrupt": corrupt, "truncated": truncated, "text": text}


@pytest.mark.parametrize("kind", ["missing", "corrupt", "truncated", "text"])
def test_bad_image_files(mobile_sam, tmp_path, kind, monkeypatch):
    path = _bad_image_files(tmp_path)[kind]
    before = sorted(tmp_path.iterdir())
    monkeypatch.setattr(mobile_sam.image_encoder, "forward", lambda *a, **k: 1 / 0)  # must not get that far
    p = Predictor(mobile_sam)
    with pytest.raises(ImageError) as info:
        p.set_image(path)
    message = str(info.value)
    assert path.name in message
    expected = {"missing": "no such file", "corrupt": "not a recognised image", "truncated": "truncated",
                "text": "not a recognised image"}
    assert expected[kind] in message
    assert sorted(tmp_path.iterdir()) == before  # nothing written
    with pytest.raises(PromptError):  # and no image was set
        p.predict(points=[(1, 1)])


@pytest.mark.parametrize("array", [np.zeros((0, 0, 3), np.uint8), np.zeros((0, 10, 3), np.uint8),
                                   np.zeros((3, 8, 8), np.uint8), np.zeros((8, 8, 3), np.int32)],
                         ids=["empty", "zero-rows", "channels-first", "int32"])
def test_bad_image_arrays(mobile_sam, array, monkeypatch):
    monkeypatch.setattr(mobile_sam.image_encoder, "forward", lambda *a, **k: 1 / 0)
    with pytest.raises(ImageError):
        Predictor(mobile_sam).set_image(array)


# ------------------------------------------------------------------------------------ edge cases


@pytest.mark.parametrize("shape", [(1, 3000), (3000, 1), (1, 1)])
def test_extreme_aspect_ratios_are_encoded_and_decoded(mobile_sam, shape, monkeypatch):
    """A 1x3000 strip would resize to 0 rows; it is kept at 1 row and predicts at full size."""
    from anymask.predictor import resized_shape

    assert min(resized_shape(*shape, 1024)) >= 1
    p = Predictor(mobile_sam)
    grid = torch.zeros(1, 256, 64, 64)
    monkeypatch.setattr(mobile_sam.image_encoder, "forward", lambda x: grid)  # preprocessing is under test
    p.set_image(np.full(shape + (3,), 128, dtype=np.uint8))
    masks, scores, _ = p.predict(points=[(shape[1] / 2, shape[0] / 2)])
    assert masks.shape == (3, *shape) and np.isfinite(scores).all()


def test_shared_labels_broadcast_over_a_batch_of_points(predictor):
    points = np.array([[SHUTTLE_CLICK, FLAG_CLICK], [FLAG_CLICK, SHUTTLE_CLICK]])
    a = predictor.predict(points=points, labels=[1, 0], multimask=False)
    b = predictor.predict(points=points, labels=[[1, 0], [1, 0]], multimask=False)
    assert a[0].shape == (2, 1, H, W)
    np.testing.assert_array_equal(a[2], b[2])


def test_ragged_labels_are_a_prompt_error(predictor):
    with pytest.raises(PromptError, match="labels"):
        predictor.predict(points=[[SHUTTLE_CLICK], [SHUTTLE_CLICK]], labels=[[1], [1, 0]])


def test_set_embedding_copies_the_features(mobile_sam, predictor):
    before = predictor.predict(points=[SHUTTLE_CLICK])[2]
    p = Predictor(mobile_sam)
    emb = dataclasses.replace(predictor.embedding, features=predictor.embedding.features.copy())
    p.set_embedding(emb)
    emb.features[:] = 0  # changing the caller's array afterwards must not change predictions
    np.testing.assert_array_equal(p.predict(points=[SHUTTLE_CLICK])[2], before)


def test_set_embedding_casts_float64_features(mobile_sam, predictor):
    p = Predictor(mobile_sam)
    emb = dataclasses.replace(predictor.embedding, features=predictor.embedding.features.astype(np.float64))
    p.set_embedding(emb)
    np.testing.assert_allclose(p.predict(points=[SHUTTLE_CLICK])[2], predictor.predict(points=[SHUTTLE_CLICK])[2],
                               atol=1e-5)


@pytest.mark.parametrize("change, message", [
    (dict(input_size=(256, 256)), "input_size"),
    (dict(features=np.zeros((1, 256, 32, 32), np.float32)), "grid"),
    (dict(original_size=(0, 512)), "original_size"),
])
def test_set_embedding_rejects_inconsistent_embeddings(mobile_sam, predictor, change, message):
    with pytest.raises(ModelError, match=message):
        Predictor(mobile_sam).set_embedding(dataclasses.replace(predictor.embedding, **change))


@pytest.mark.parametrize("content", ["garbage", "npy", "truncated", "bad_sizes"])
def test_loading_a_bad_embedding_file_is_a_model_error(tmp_path, predictor, content):
    path = tmp_path / "emb.npz"
    if content == "garbage":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    elif content == "npy":
        np.save(tmp_path / "emb.npy", np.zeros(3))
        path = tmp_path / "emb.npy"
    elif content == "truncated":
        predictor.embedding.save(path)
        path.write_bytes(path.read_bytes()[:1000])
    else:
        np.savez(path, features=np.zeros((1, 256, 64, 64), np.float32), original_size=np.array(5),
                 input_size=np.array([1]), model=np.array("mobile_sam"))
    with pytest.raises(ModelError):
        ImageEmbedding.load(path)


def test_predict_low_res_matches_predict(predictor):
    """The low-res path gives the same logits and scores as predict(), and the same masks once upsampled."""
    masks, scores, logits = predictor.predict(points=[(405, 150)], labels=[1])
    low, low_scores = predictor.predict_low_res(points=[(405, 150)], labels=[1])
    assert low.shape == (1, 3, 256, 256) and low_scores.shape == (1, 3)
    np.testing.assert_allclose(low[0], logits, atol=1e-5)
    np.testing.assert_allclose(low_scores[0], scores, atol=1e-6)
    up = predictor.masks_from_low_res(low[0])
    assert up.shape == masks.shape and up.dtype == bool
    assert (up == masks).mean() > 0.9999
