"""Mask logits of the grid cells that cover the image only (``Predictor.predict_low_res(image_only=True)``, the
automatic mask generator's decoding): on a non-square photo the upscaling skips the square padding's cells, and
every mask, score and record is the same as with the whole grid.

Real photo (the astronaut, cropped to 4:3 landscape and to portrait), real MobileSAM weights, both backends; the
upscaling of a grid corner is checked on random tokens (geometry only).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anymask import Predictor
from anymask.automatic import AutomaticMaskGenerator
from anymask.images import load_image
from anymask.modeling.mask_upscaling import upscaled_mask_logits
from anymask.runtime import PADDING_LOGIT, graph_sources_digest

from conftest import EXAMPLE_IMAGE

ASTRONAUT = load_image(EXAMPLE_IMAGE)  # 512 x 512
LANDSCAPE = np.ascontiguousarray(ASTRONAUT[64:448])  # 384 x 512: resized to 768 x 1024
PORTRAIT = np.ascontiguousarray(ASTRONAUT[:, 106:406])  # 512 x 300: resized to 1024 x 600


def _grid_points(image: np.ndarray, n: int) -> np.ndarray:
    h, w = image.shape[:2]
    gx, gy = np.meshgrid((np.arange(n) + 0.5) * w / n, (np.arange(n) + 0.5) * h / n)
    return np.stack([gx.ravel(), gy.ravel()], 1)[:, None, :]


def test_upscaling_a_corner_of_the_grid_equals_that_corner_of_the_whole(mobile_sam):
    upscaling = mobile_sam.mask_decoder.output_upscaling
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 6 * 7, 256, generator=generator)
    hyper_in = torch.randn(2, 4, 32, generator=generator)
    with torch.inference_mode():
        whole = upscaled_mask_logits(upscaling, tokens, 6, 7, hyper_in)
        for rows, cols in [(6, 7), (4, 7), (6, 3), (1, 1), (9, 20)]:
            part = upscaled_mask_logits(upscaling, tokens, 6, 7, hyper_in, torch.tensor([rows, cols]))
            r, c = min(rows, 6), min(cols, 7)
            assert part.shape == (2, 4, 4 * r, 4 * c)
            torch.testing.assert_close(part, whole[..., : 4 * r, : 4 * c], rtol=1e-5, atol=1e-5)  # rounding only


@pytest.fixture(scope="module", params=["torch", "onnx"])
def backend(request, mobile_sam):
    if request.param == "onnx":
        pytest.importorskip("onnxruntime")
    return request.param


@pytest.mark.parametrize("image, cells", [(LANDSCAPE, (49, 64)), (PORTRAIT, (64, 38))], ids=["landscape", "portrait"])
def test_image_only_logits_give_the_same_masks(mobile_sam, backend, image, cells):
    predictor = Predictor(mobile_sam, backend=backend)
    predictor.set_image(image)
    assert predictor.image_cells() == cells
    prompts = dict(points=_grid_points(image, 3), labels=np.ones((9, 1)))
    whole, scores = predictor.predict_low_res(**prompts)
    part, part_scores = predictor.predict_low_res(**prompts, image_only=True)
    assert part.shape == whole.shape == (9, 3, 256, 256)
    rows, cols = 4 * cells[0], 4 * cells[1]
    np.testing.assert_array_equal(part[..., :rows, :cols], whole[..., :rows, :cols])
    np.testing.assert_array_equal(part_scores, scores)
    assert (part[..., rows:, :] == PADDING_LOGIT).all() and (part[..., :, cols:] == PADDING_LOGIT).all()
    masks = predictor.masks_from_low_res(whole)
    assert masks.any() and masks.shape == (9, 3, *image.shape[:2])
    np.testing.assert_array_equal(predictor.masks_from_low_res(part), masks)
    np.testing.assert_array_equal(predictor.masks_from_low_res(part, return_logits=True),
                                  predictor.masks_from_low_res(whole, return_logits=True))


def test_a_square_image_and_mask_prompts_decode_the_whole_grid(mobile_sam, predictor):
    assert predictor.image_cells() == (64, 64)
    low, _ = predictor.predict_low_res(points=[[250, 180]], labels=[1], image_only=True)
    assert (low > PADDING_LOGIT).all()
    rect = Predictor(mobile_sam, backend="torch")
    rect.set_image(LANDSCAPE)
    first, _ = rect.predict_low_res(points=[[250, 180]], labels=[1], multimask=False)
    # a mask prompt reads the whole grid: image_only does not apply to it
    again, _ = rect.predict_low_res(points=[[250, 180]], labels=[1], mask_input=first[0], multimask=False,
                                    image_only=True)
    assert (again > PADDING_LOGIT).all()


@pytest.mark.parametrize("crop_n_layers", [0, 1])
def test_the_generator_finds_the_same_masks_on_a_non_square_photo(mobile_sam, monkeypatch, crop_n_layers):
    """The generator decodes with ``image_only`` (every crop too); turning it off gives the very same records."""
    generator = AutomaticMaskGenerator(mobile_sam, points_per_side=5 - 2 * crop_n_layers, output_mode="coco_rle",
                                       crop_n_layers=crop_n_layers)
    fast = generator.generate(LANDSCAPE)
    assert fast
    real = Predictor.predict_low_res
    monkeypatch.setattr(Predictor, "predict_low_res", lambda self, *a, image_only=False, **k: real(self, *a, **k))
    whole = generator.generate(LANDSCAPE)
    assert fast == whole


def test_the_graph_cache_key_follows_the_graph_sources(tmp_path):
    """An edit of the modules the graphs are traced from changes the digest in the cache key."""
    (tmp_path / "modeling").mkdir()
    (tmp_path / "modeling" / "decoder.py").write_text("x = 1\n")
    (tmp_path / "export.py").write_text("y = 2\n")
    (tmp_path / "cli.py").write_text("z = 3\n")
    first = graph_sources_digest(tmp_path)
    assert first == graph_sources_digest(tmp_path)
    (tmp_path / "cli.py").write_text("z = 4\n")  # not a graph source
    assert graph_sources_digest(tmp_path) == first
    (tmp_path / "modeling" / "decoder.py").write_text("x = 2\n")
    assert graph_sources_digest(tmp_path) != first
    assert len(graph_sources_digest()) == 64  # the installed package's own
