"""TinyViT's high-resolution parts computed in stripes of rows give the one-pass result (real photo, real model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from anymask.modeling.tiny_vit import TinyViT


def _normalised(path: Path, height: int, width: int, pad_to: int | None = None) -> torch.Tensor:
    """The photo resized to ``(height, width)``, normalised as MobileSAM's input, optionally zero-padded square."""
    image = np.array(Image.open(path).convert("RGB").resize((width, height), Image.BILINEAR))
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = (x - torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)) / torch.tensor([58.395, 57.12, 57.375]).view(
        1, 3, 1, 1)
    if pad_to:
        x = F.pad(x, (0, pad_to - width, 0, pad_to - height))
    return x


@pytest.fixture(scope="module")
def encoder(mobile_sam) -> TinyViT:
    encoder = mobile_sam.image_encoder
    assert isinstance(encoder, TinyViT)
    yield encoder
    encoder.stripe_rows = 32


def _run(encoder: TinyViT, x: torch.Tensor, rows: int | None, stage_only: bool = False) -> torch.Tensor:
    encoder.stripe_rows = rows
    with torch.inference_mode():
        return encoder.convolutional_stage(x) if stage_only else encoder(x)


@pytest.mark.parametrize("rows", [32, 16, 5])
def test_striped_encoder_matches_one_pass_on_padded_photo(encoder: TinyViT, example_image_path: Path, rows: int) -> None:
    x = _normalised(example_image_path, 768, 1024, pad_to=1024)
    expected = _run(encoder, x, None)
    actual = _run(encoder, x, rows)
    assert actual.shape == expected.shape == (1, 256, 64, 64)
    assert float((actual - expected).abs().max() / expected.abs().max()) < 1e-5


def test_striped_stage_matches_one_pass_on_unpadded_odd_height(encoder: TinyViT, example_image_path: Path) -> None:
    # 600 rows: not a multiple of the stage's stride (8), so the last stripe is shorter and ends at the border
    x = _normalised(example_image_path, 600, 1024)
    expected = _run(encoder, x, None, stage_only=True)
    actual = _run(encoder, x, 16, stage_only=True)
    assert actual.shape == expected.shape == (1, 128, 75, 128)
    assert float((actual - expected).abs().max() / expected.abs().max()) < 1e-5
    whole = _run(encoder, x, None)
    assert float((_run(encoder, x, 16) - whole).abs().max() / whole.abs().max()) < 1e-5


def test_halo_is_needed(encoder: TinyViT, example_image_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one halo row fewer the stripes' seams differ: the comparisons above would catch a wrong halo."""
    x = _normalised(example_image_path, 1024, 1024)
    expected = _run(encoder, x, None, stage_only=True)
    stride, halo = encoder._stem_stride_and_halo()
    assert (stride, halo) == (8, 2)
    monkeypatch.setattr(encoder, "_stem_stride_and_halo", lambda: (stride, halo - 1))
    short = _run(encoder, x, 32, stage_only=True)
    assert float((short - expected).abs().max() / expected.abs().max()) > 1e-3


def test_stripe_rows_reach_the_mlps(encoder: TinyViT) -> None:
    encoder.stripe_rows = 24
    assert all(block.mlp_stripe_rows == 24 for layer in encoder.layers[1:] for block in layer.blocks)
    encoder.stripe_rows = None
    assert all(block.mlp_stripe_rows is None for layer in encoder.layers[1:] for block in layer.blocks)
