"""The folded decoder (cross-attention through the token side, channels-last upscaling, the first block's image
side prepared once per image) equals the plain one.

Real photo, real MobileSAM weights, the exact float32 torch path; every prompt kind the predictor sends to the
decoder: a click, a box, a batch of boxes, a grid of single points (shared image side), a long click sequence,
mask prompts, and a non-square embedding grid. The onnxruntime graphs of the prepared decoder are checked
against the unprepared graph.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anymask import Predictor
from anymask.modeling.mask_upscaling import upscaled_mask_logits

from conftest import EXAMPLE_IMAGE


@pytest.fixture(scope="module")
def predictor(mobile_sam):
    """The exact torch path on the astronaut photo (the default backend would run the same ONNX graph twice)."""
    p = Predictor(mobile_sam, backend="torch")
    p.set_image(EXAMPLE_IMAGE)
    return p


@pytest.fixture
def plain_and_folded(predictor):
    """Run ``fn`` with the plain formulation, then the folded one; restore the folded default."""
    transformer = predictor.model.mask_decoder.transformer

    def run(fn):
        results = []
        for fold in (False, True):
            transformer.fold = fold
            try:
                results.append(fn())
            finally:
                transformer.fold = True
        return results

    return run


def _grid_points(n: int, size: int) -> np.ndarray:
    coords = (np.arange(n) + 0.5) * size / n
    gx, gy = np.meshgrid(coords, coords)
    return np.stack([gx.ravel(), gy.ravel()], 1)[:, None, :]


def _assert_same(plain, folded) -> None:
    (low_a, iou_a), (low_b, iou_b) = plain, folded
    assert low_a.shape == low_b.shape
    scale = max(1.0, float(np.abs(low_a).max()))
    assert np.abs(low_a - low_b).max() <= 2e-5 * scale
    assert np.abs(iou_a - iou_b).max() <= 1e-5
    masks_a, masks_b = low_a > 0, low_b > 0
    assert (masks_a != masks_b).mean() < 1e-4  # only pixels whose logit is within rounding of 0 may flip


@pytest.mark.parametrize(
    "prompt",
    ["click", "box", "boxes", "points", "long_clicks", "mask_input", "mask_input_batch"],
)
def test_folded_decoder_equals_plain(predictor, plain_and_folded, prompt):
    h, w = predictor.embedding.original_size
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(0, w * 0.5, 6), rng.uniform(0, h * 0.5, 6)
    boxes = np.stack([x0, y0, x0 + rng.uniform(40, w * 0.5, 6), y0 + rng.uniform(40, h * 0.5, 6)], 1)
    previous, _ = predictor.predict_low_res(points=[[250, 180], [300, 400]], labels=[1, 0], multimask=False)
    kwargs = {
        "click": dict(points=[[250, 180]], labels=[1]),
        "box": dict(box=[120, 40, 400, 460], multimask=False),
        "boxes": dict(box=boxes, multimask=False),
        "points": dict(points=_grid_points(4, h), labels=np.ones((16, 1))),
        # 20 points: 26 tokens, past the folding threshold (the prepared first block then projects its output)
        "long_clicks": dict(points=_grid_points(5, h)[:20, 0], labels=np.r_[np.ones(12), np.zeros(8)],
                            multimask=False),
        "mask_input": dict(points=[[250, 180], [300, 400]], labels=[1, 0], mask_input=previous[0]),
        "mask_input_batch": dict(points=_grid_points(2, h), labels=np.ones((4, 1)),
                                 mask_input=np.repeat(previous, 4, 0)),
    }[prompt]
    _assert_same(*plain_and_folded(lambda: predictor.predict_low_res(**kwargs)))


def test_folded_decoder_on_a_non_square_grid(predictor, plain_and_folded):
    """A 40 x 64 embedding grid (an unpadded landscape image): transformer and upscaling are grid-agnostic."""
    model = predictor.model
    features = torch.from_numpy(predictor.embedding.features)[..., :40, :]
    pe = model.prompt_encoder.get_dense_pe()[..., :40, :]
    points = torch.tensor([[[300.0, 200.0], [0.0, 0.0]], [[100.0, 100.0], [0.0, 0.0]], [[500.0, 90.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, -1]] * 3)

    def decode():
        with torch.inference_mode():
            sparse, dense = model.prompt_encoder(points=(points, labels), boxes=None, masks=None)
            masks, iou = model.mask_decoder.predict_masks(features, pe, sparse, dense[..., :40, :])
        return masks.numpy(), iou.numpy()

    plain, folded = plain_and_folded(decode)
    assert plain[0].shape == (3, 4, 160, 256)
    _assert_same(plain, folded)


def test_channels_last_upscaling_equals_the_convolutions(mobile_sam):
    decoder = mobile_sam.mask_decoder
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 3 * 5, 256, generator=generator)
    hyper_in = torch.randn(2, 4, 32, generator=generator)
    with torch.inference_mode():
        upscaled = decoder.output_upscaling(tokens.transpose(1, 2).reshape(2, 256, 3, 5))
        expected = (hyper_in @ upscaled.reshape(2, 32, -1)).reshape(2, 4, 12, 20)
        got = upscaled_mask_logits(decoder.output_upscaling, tokens, 3, 5, hyper_in)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_prepared_image_side_follows_the_image(mobile_sam, predictor):
    """The prepared first block is recomputed for a new image: a reused predictor answers like a fresh one."""
    from PIL import Image

    other = np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB"))[::-1, ::2].copy()  # another picture
    reused = Predictor(mobile_sam, backend="torch")
    reused.set_image(EXAMPLE_IMAGE)
    reused.predict_low_res(points=[[250, 180]], labels=[1])
    assert reused._prepared is not None  # made on the image's first prompt
    reused.set_image(other)
    assert reused._prepared is None
    fresh = Predictor(mobile_sam, backend="torch")
    fresh.set_image(other)
    fresh._prepared_image = lambda *args: None  # the unprepared path
    prompt = dict(points=[[100, 120]], labels=[1])
    _assert_same(fresh.predict_low_res(**prompt), reused.predict_low_res(**prompt))
    assert reused._prepared is not None


def test_prepared_onnx_decoder_equals_the_unprepared_graph(mobile_sam, predictor):
    """onnxruntime: ``decoder_prepare`` + ``decoder_low_res_prepared`` give the no-mask graph's logits, on the
    full grid and on an unpadded 40 x 64 grid, for a click, a long click sequence and a batch of boxes."""
    pytest.importorskip("onnxruntime")
    onnx = Predictor(mobile_sam, backend="onnx")
    runner = onnx._runner
    full = predictor.embedding.features
    size = predictor.embedding.original_size
    prompts = [
        (np.array([[[250.0, 180.0], [0.0, 0.0]]]), np.array([[1.0, -1.0]])),
        (np.concatenate([_grid_points(5, size[0])[:20, 0], [[0.0, 0.0]]])[None], np.r_[np.ones(12), np.zeros(8), -1][None]),
        (np.array([[[40.0, 30.0], [300.0, 400.0]], [[100.0, 90.0], [480.0, 500.0]]]), np.array([[2.0, 3.0]] * 2)),
    ]
    for features in (full, np.ascontiguousarray(full[..., :40, :])):
        prepared = runner.prepare(features)
        assert prepared["block_keys"].shape == (1, 8, 16, features.shape[2] * features.shape[3])
        for coords, labels in prompts:
            plain = runner.decode(features, coords, labels, None, size)
            fast = runner.decode(features, coords, labels, None, size, prepared=prepared)
            _assert_same(plain, fast)


def test_factored_upscaling_product_equals_the_image_tokens_product(predictor, monkeypatch):
    """With the image side prepared, the mask upscaling's first product is computed from the prepared image and
    the blocks' low-rank updates (``FactoredTokens``): the same logits as multiplying the image tokens, for a
    click, a batch of boxes and a grid of points."""
    from anymask.modeling import mask_upscaling

    calls = []
    factored = mask_upscaling._factored_first_products
    monkeypatch.setattr(mask_upscaling, "_factored_first_products", lambda *a: calls.append(1) or factored(*a))
    h, w = predictor.embedding.original_size
    prompts = [dict(points=[[250, 180]], labels=[1]),
               dict(box=np.array([[40.0, 30.0, 300.0, 400.0], [100.0, 90.0, 480.0, 500.0]])),
               dict(points=_grid_points(3, min(h, w)), labels=np.ones((9, 1)))]
    results = [predictor.predict_low_res(**prompt) for prompt in prompts]
    assert len(calls) >= len(prompts)
    prepared = predictor._prepared
    assert prepared.upscale_base_0.shape == (1, 64 * 64, 128)
    predictor._prepared = prepared._replace(upscale_base_0=None, upscale_base_1=None)  # multiply the tokens
    try:
        for prompt, result in zip(prompts, results):
            calls.clear()
            _assert_same(predictor.predict_low_res(**prompt), result)
            assert not calls
    finally:
        predictor._prepared = prepared
