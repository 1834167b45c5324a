"""Encoding non-square images without padding them to the square model input (``pad_to_square=False``).

A 16:9 image is resized to 1024 x 576 and encoded as it is (a 64 x 36 embedding) instead of padded to
1024 x 1024: 44 % less encoder and decoder work. The results are close to, not equal to, the padded ones (the
encoder's attention windows near the bottom edge see image instead of padding), so the tests compare the two
modes with an IoU bar on a clear object (0.9: measured 0.987 for the click below; on DAVIS frames prompted with
the ground-truth box the two modes differ by -0.07 to +0.01 IoU, docs/video.md), while the padded default keeps
matching the reference (tests/test_parity.py). Real photo (the astronaut, cropped to 16:9) and the real MobileSAM model throughout.
"""

from __future__ import annotations

import numpy as np
import pytest

from anymask import Predictor
from anymask.errors import ModelError, PromptError
from anymask.images import load_image
from anymask.masks import iou
from anymask.predictor import ImageEmbedding

from conftest import EXAMPLE_IMAGE, load_mask, read_index

CLICK = (256.0, 150.0)  # on the astronaut's chest, in the 512 x 288 crop


@pytest.fixture(scope="module")
def wide_photo() -> np.ndarray:
    """The astronaut photo cropped to 512 x 288 (16:9)."""
    return np.ascontiguousarray(load_image(EXAMPLE_IMAGE)[64:352])


@pytest.fixture(scope="module")
def onnx_predictor(mobile_sam) -> Predictor:
    """The product's default backend (graphs exported once per machine, the unpadded encoder once per shape)."""
    pytest.importorskip("onnxruntime")
    return Predictor(mobile_sam, backend="onnx")


@pytest.fixture(scope="module")
def embeddings(mobile_sam, onnx_predictor, wide_photo) -> dict[str, ImageEmbedding]:
    """The wide photo's embeddings: unpadded in torch (the exact reference of the ONNX graphs), unpadded and
    padded in onnxruntime (the encoder is the slow part of these tests: each runs once)."""
    return {
        "torch unpadded": Predictor(mobile_sam, backend="torch").set_image(wide_photo, pad_to_square=False),
        "unpadded": onnx_predictor.set_image(wide_photo, pad_to_square=False),
        "padded": onnx_predictor.set_image(wide_photo),
    }


def _predictor(mobile_sam, embedding: ImageEmbedding, backend: str = "torch") -> Predictor:
    p = Predictor(mobile_sam, backend=backend)
    p.set_embedding(embedding)
    return p


def test_shapes_of_the_unpadded_mode(mobile_sam, embeddings):
    padded, unpadded = embeddings["padded"], embeddings["torch unpadded"]
    assert padded.features.shape == (1, 256, 64, 64)
    assert unpadded.features.shape == (1, 256, 36, 64)  # 1024 x 576 / 16
    assert unpadded.input_size == padded.input_size == (576, 1024)
    p = _predictor(mobile_sam, unpadded)
    assert p.low_res_size == (144, 256)
    masks, scores, low = p.predict(points=[CLICK], labels=[1])
    assert masks.shape == (3, 288, 512) and scores.shape == (3,) and low.shape == (3, 144, 256)
    best = low[np.argmax(scores)][None]
    # feedback: the low-res logits go back in as mask_input, in their own size only
    again, _, low_again = p.predict(points=[CLICK], labels=[1], mask_input=best)
    assert again.shape == (3, 288, 512) and low_again.shape == (3, 144, 256)
    assert max(iou(m, masks[np.argmax(scores)]) for m in again) > 0.95  # the fed-back mask is reproduced
    batch_low, batch_scores = p.predict_low_res(box=np.array([[150, 20, 380, 280], [300, 0, 512, 100]]),
                                                mask_input=np.repeat(best[None], 2, axis=0), multimask=False)
    assert batch_low.shape == (2, 1, 144, 256) and batch_scores.shape == (2, 1)
    with pytest.raises(PromptError, match=r"\(144, 256\)"):
        p.predict(points=[CLICK], mask_input=np.zeros((256, 256), np.float32))
    # the low-res frame maps back onto the image exactly as the full-resolution masks do
    assert np.array_equal(p.masks_from_low_res(low), masks)


def test_unpadded_masks_are_close_to_the_padded_ones(mobile_sam, onnx_predictor, embeddings):
    results = {}
    for mode in ("padded", "unpadded"):
        onnx_predictor.set_embedding(embeddings[mode])
        masks, scores, _ = onnx_predictor.predict(points=[CLICK], labels=[1])
        results[mode] = masks[np.argmax(scores)]
    assert results["padded"].sum() > 10000
    assert iou(results["padded"], results["unpadded"]) >= 0.9


def test_padded_default_is_unchanged(mobile_sam, wide_photo):
    p = Predictor(mobile_sam, backend="torch")
    assert p.pad_to_square
    x, size = p.preprocess(wide_photo)
    assert x.shape == (1, 3, 1024, 1024) and size == (576, 1024)
    assert p.preprocess(wide_photo, pad_to_square=False)[0].shape == (1, 3, 576, 1024)
    assert p.preprocess(wide_photo[:, :300], pad_to_square=False)[0].shape == (1, 3, 992, 1024)  # 983 -> 62 x 16
    # pad_multiple: padding to a coarser multiple, never past the square input
    coarse = Predictor(mobile_sam, backend="torch", pad_multiple=224)  # 14 cells: a stage-3 attention window
    assert coarse.preprocess(wide_photo, pad_to_square=False)[0].shape == (1, 3, 672, 1024)
    assert coarse.embedding_grid((576, 1000), False) == (42, 64)
    with pytest.raises(ModelError, match="multiple"):
        Predictor(mobile_sam, backend="torch", pad_multiple=24)
    # a square image is encoded the same way in both modes
    square = np.ascontiguousarray(wide_photo[:, :288])
    assert np.array_equal(p.preprocess(square)[0], p.preprocess(square, pad_to_square=False)[0])
    # the unpadded grid's positional encoding is the top-left part of the full grid's (training positions)
    pe = mobile_sam.prompt_encoder
    assert np.array_equal(pe.get_dense_pe((36, 64)).numpy(), pe.get_dense_pe()[:, :, :36, :64].numpy())


def test_unpadded_embedding_save_load_and_checks(mobile_sam, embeddings, tmp_path):
    embedding = embeddings["unpadded"]
    loaded = ImageEmbedding.load(embedding.save(tmp_path / "wide.npz"))
    p = _predictor(mobile_sam, loaded)
    assert p.low_res_size == (144, 256)
    wrong = ImageEmbedding(embedding.features[:, :, :30], embedding.original_size, embedding.input_size,
                           embedding.model)
    with pytest.raises(ModelError, match="grid"):
        p.set_embedding(wrong)


def test_onnx_agrees_with_torch_unpadded(mobile_sam, onnx_predictor, embeddings):
    onnx = onnx_predictor
    onnx.set_embedding(embeddings["unpadded"])
    features, torch_features = embeddings["unpadded"].features, embeddings["torch unpadded"].features
    assert features.shape == torch_features.shape == (1, 256, 36, 64)
    assert np.abs(features - torch_features).max() < 1e-2 * np.abs(torch_features).max()
    reference = _predictor(mobile_sam, embeddings["torch unpadded"])
    box = (150.0, 20.0, 380.0, 280.0)
    for kwargs in ({"points": [CLICK], "labels": [1]}, {"box": box, "multimask": False}):
        masks, scores, low = onnx.predict(**kwargs)
        ref_masks, ref_scores, ref_low = reference.predict(**kwargs)
        assert low.shape == ref_low.shape and masks.shape == ref_masks.shape
        for a, b in zip(masks, ref_masks):
            assert iou(a, b) >= 0.999
        assert np.allclose(scores, ref_scores, atol=2e-3)
        # feedback through the ONNX graph with mask input, at the unpadded low-res size
        fed, _, _ = onnx.predict(box=box, mask_input=low[:1], multimask=False)
        ref_fed, _, _ = reference.predict(box=box, mask_input=low[:1], multimask=False)
        assert iou(fed[0], ref_fed[0]) >= 0.999


def test_video_predictor_unpadded_on_davis(onnx_predictor, shared_data):
    """Three DAVIS frames (854 x 480) in the video predictor's unpadded mode (its default): the box
    on frame 0 is followed, the tracks hold (1, 144, 256) logits, and a mask prompt becomes logits of that size."""
    from anymask.video import VideoPredictor

    from benchmarks.datasets import box_of

    rows = [r for r in read_index(shared_data / "davis2016_val") if r["image"].parent.name == "blackswan"][:7:3]
    assert VideoPredictor(onnx_predictor, pad_to_square=True).pad_to_square  # SAM's padding, on request
    video = VideoPredictor(onnx_predictor).open([r["image"] for r in rows])  # default: unpadded
    assert not video.pad_to_square and onnx_predictor.pad_to_square  # the still-image predictor keeps padding
    video.add_prompt(0, 1, box=box_of(rows[0]))
    video.add_prompt(0, 2, mask=load_mask(rows[0]["mask"]))
    assert video._prompts[0][2].track.logits.shape == (1, 144, 256)
    assert video.predictor.embedding.features.shape == (1, 256, 36, 64)  # 480 / 854 * 1024 = 575.5 -> 576
    scores = {obj: [] for obj in (1, 2)}
    for index, masks in video.propagate():
        if index > 0:
            truth = load_mask(rows[index]["mask"])
            for obj in (1, 2):
                scores[obj].append(iou(masks[obj], truth))
    assert min(scores[1] + scores[2]) > 0.85, scores
