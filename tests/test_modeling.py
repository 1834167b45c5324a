"""Tests of anymask.modeling: strict checkpoint loading and numerical parity with the references.

The parity tests build a module of the official implementation (``segment_anything`` /
``mobile_sam``), copy its state dict into the anymask module with strict key matching and compare
the outputs on seeded random inputs.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from anymask.modeling import (
    ImageEncoderViT,
    LayerNorm2d,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TinyViT,
    TwoWayTransformer,
)
from anymask.modeling.image_encoder import relative_embeddings

pytestmark = [
    # mobile_sam imports deprecated timm paths and re-registers timm models on import.
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:Overwriting tiny_vit:UserWarning"),
]

# MobileSAM / LiteMedSAM TinyViT-5M configuration.
TINY_VIT_CFG: dict[str, Any] = dict(
    embed_dims=[64, 128, 160, 320],
    depths=[2, 2, 6, 2],
    num_heads=[2, 4, 5, 10],
    window_sizes=[7, 7, 14, 7],
    mlp_ratio=4.0,
    mbconv_expand_ratio=4.0,
    local_conv_size=3,
)

# (embed_dim, depth, num_heads, global_attn_indexes) of the official ViT encoders.
VIT_CONFIGS = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


# Module scoped (loaded once), so the checkpoint fixtures must be module or session scoped too.
@pytest.fixture(scope="module")
def mobile_sam_state(mobile_sam_checkpoint: Path) -> dict[str, torch.Tensor]:
    return _load_state(mobile_sam_checkpoint)


# ---------------------------------------------------------------------------------------------
# helpers


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        pytest.skip(f"checkpoint not found: {path}")
    return torch.load(path, weights_only=True, map_location="cpu")


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _mask_decoder() -> MaskDecoder:
    """SAM's mask decoder configuration (all released models share it)."""
    return MaskDecoder(
        transformer_dim=256,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=2048),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )


def _build_sam(*, patch_stride: int, img_size: int, num_classes: int) -> Sam:
    """The anymask model of MobileSAM (patch_stride 4, 1024 px) or LiteMedSAM (1, 256 px)."""
    return Sam(
        image_encoder=TinyViT(
            img_size=img_size, patch_stride=patch_stride, num_classes=num_classes, **TINY_VIT_CFG
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(64, 64),
            input_image_size=(img_size, img_size),
            mask_in_chans=16,
        ),
        mask_decoder=_mask_decoder(),
    ).eval()


def _copy_into(ours: nn.Module, ref: nn.Module) -> None:
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()


def _randomise(module: nn.Module, seed: int) -> None:
    """Non-trivial values for every parameter (zero-initialised tables included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            noise = torch.randn(param.shape, generator=gen)
            param.copy_(noise * 0.05 if param.dim() > 1 else 1.0 + 0.1 * noise)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """Max abs error within ``rtol`` of the expected tensor's largest magnitude."""
    assert actual.shape == expected.shape
    scale = expected.abs().max().clamp_min(1e-6)
    error = (actual - expected).abs().max()
    assert error <= rtol * scale, f"max abs error {error.item():.3g} vs scale {scale.item():.3g}"


def _reference_tiny_vit(state: dict[str, torch.Tensor], *, pointwise_stem: bool) -> nn.Module:
    """mobile_sam's TinyViT with ``state`` loaded, optionally with LiteMedSAM's 1x1 stem.

    The reference derives its stage resolutions from ``img_size // 4``; built for 1024 px and given
    a 1x1 stride-1 stem, it is exactly LiteMedSAM's encoder for a 256 px input.
    """
    ref_tiny_vit = pytest.importorskip("mobile_sam.modeling.tiny_vit_sam")
    ref = ref_tiny_vit.TinyViT(
        img_size=1024, num_classes=1000, drop_path_rate=0.0, **TINY_VIT_CFG
    )
    if pointwise_stem:
        ref.patch_embed.seq[0] = ref_tiny_vit.Conv2d_BN(3, 32, 1, 1, 0)
        ref.patch_embed.seq[2] = ref_tiny_vit.Conv2d_BN(32, 64, 1, 1, 0)
        del ref.norm_head, ref.head  # LiteMedSAM's checkpoint has no classifier head
    ref.load_state_dict(state, strict=True)
    # The reference caches its attention biases when switched to eval mode, so switch *after*
    # loading (mobile_sam's own build_sam_vit_t does it before, and so runs with zero biases).
    return ref.eval()


# ---------------------------------------------------------------------------------------------
# strict checkpoint loading


def test_mobile_sam_checkpoint_loads_strictly(mobile_sam_state: dict[str, torch.Tensor]) -> None:
    state = mobile_sam_state
    model = _build_sam(patch_stride=4, img_size=1024, num_classes=1000)
    model.load_state_dict(state, strict=True)
    assert model.image_encoder.head.weight.shape == (1000, 320)


def test_lite_medsam_checkpoint_loads_strictly(lite_medsam_checkpoint: Path) -> None:
    state = _load_state(lite_medsam_checkpoint)
    model = _build_sam(patch_stride=1, img_size=256, num_classes=0)
    model.load_state_dict(state, strict=True)
    assert model.image_encoder.patch_embed.seq[0].c.weight.shape == (32, 3, 1, 1)


def test_sam_container_has_no_preprocessing() -> None:
    model = _build_sam(patch_stride=1, img_size=256, num_classes=0)
    assert Sam.mask_threshold == 0.0
    names = {name for name, _ in model.named_buffers()} | set(model.state_dict())
    assert not any("pixel_mean" in n or "pixel_std" in n for n in names)
    assert {k.split(".")[0] for k in model.state_dict()} == {
        "image_encoder",
        "prompt_encoder",
        "mask_decoder",
    }


@pytest.mark.parametrize("name", sorted(VIT_CONFIGS))
def test_vit_state_dict_matches_reference(name: str) -> None:
    ref_modeling = pytest.importorskip("segment_anything.modeling")
    embed_dim, depth, num_heads, global_indexes = VIT_CONFIGS[name]
    kwargs: dict[str, Any] = dict(
        img_size=1024,
        patch_size=16,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        qkv_bias=True,
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=global_indexes,
        out_chans=256,
    )
    with torch.device("meta"):
        ref = ref_modeling.ImageEncoderViT(**kwargs)
        ours = ImageEncoderViT(**kwargs)

    def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}

    assert shapes(ours) == shapes(ref)


# ---------------------------------------------------------------------------------------------
# numerical parity with the reference modules


@pytest.mark.reference
def test_layer_norm_2d_matches_reference() -> None:
    ref_common = pytest.importorskip("segment_anything.modeling.common")
    ref, ours = ref_common.LayerNorm2d(8), LayerNorm2d(8)
    _randomise(ref, seed=0)
    _copy_into(ours, ref)
    x = torch.randn(2, 8, 5, 7, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


@pytest.mark.reference
@pytest.mark.parametrize(("q_size", "k_size", "length"), [(7, 7, 13), (7, 7, 9), (4, 8, 15)])
def test_relative_embeddings_match_reference(q_size: int, k_size: int, length: int) -> None:
    ref_encoder = pytest.importorskip("segment_anything.modeling.image_encoder")
    table = torch.randn(length, 6, generator=torch.Generator().manual_seed(0))
    expected = ref_encoder.get_rel_pos(q_size, k_size, table)
    torch.testing.assert_close(relative_embeddings(q_size, k_size, table), expected, rtol=0, atol=0)


@pytest.mark.reference
@pytest.mark.parametrize("window_size", [4, 5])  # 5 does not divide the 16x16 grid: padding
def test_small_vit_matches_reference(window_size: int) -> None:
    ref_modeling = pytest.importorskip("segment_anything.modeling")
    kwargs: dict[str, Any] = dict(
        img_size=256,
        patch_size=16,
        embed_dim=64,
        depth=2,
        num_heads=4,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        qkv_bias=True,
        use_rel_pos=True,
        window_size=window_size,
        global_attn_indexes=(1,),
        out_chans=32,
    )
    torch.manual_seed(0)
    ref = ref_modeling.ImageEncoderViT(**kwargs)
    _randomise(ref, seed=1)
    ours = ImageEncoderViT(**kwargs)
    _copy_into(ours, ref)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref(x)
        actual = ours(x)
    assert actual.shape == (2, 32, 16, 16)
    _assert_close(actual, expected)


@pytest.fixture(scope="module")
def mobile_sam_embeddings(mobile_sam_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference and anymask TinyViT outputs for one 1024 px input with MobileSAM's weights."""
    encoder_state = _sub_state(mobile_sam_state, "image_encoder.")
    ref = _reference_tiny_vit(encoder_state, pointwise_stem=False)
    ours = TinyViT(img_size=1024, num_classes=1000, **TINY_VIT_CFG)
    ours.load_state_dict(encoder_state, strict=True)
    ours.eval()
    for stage in (1, 2, 3):
        expected_idx = ref.layers[stage].blocks[0].attn.attention_bias_idxs
        assert torch.equal(ours.layers[stage].blocks[0].attn.attention_bias_idxs, expected_idx)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return {"reference": ref(x), "ours": ours(x)}


@pytest.mark.reference
def test_tiny_vit_mobile_sam_matches_reference(mobile_sam_embeddings: dict[str, torch.Tensor]) -> None:
    assert mobile_sam_embeddings["ours"].shape == (1, 256, 64, 64)
    _assert_close(mobile_sam_embeddings["ours"], mobile_sam_embeddings["reference"])


@pytest.mark.reference
def test_tiny_vit_lite_medsam_matches_reference(lite_medsam_checkpoint: Path) -> None:
    encoder_state = _sub_state(_load_state(lite_medsam_checkpoint), "image_encoder.")
    ref = _reference_tiny_vit(encoder_state, pointwise_stem=True)
    ours = TinyViT(img_size=256, patch_stride=1, **TINY_VIT_CFG)
    ours.load_state_dict(encoder_state, strict=True)
    ours.eval()
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref(x)
        actual = ours(x)
    assert actual.shape == (1, 256, 64, 64)
    _assert_close(actual, expected)


def _prompt_cases(size: int, mask_size: int) -> dict[str, dict[str, Any]]:
    """Prompts for 3 objects in a ``size`` px input, with ``mask_size`` mask prompts."""
    gen = torch.Generator().manual_seed(3)
    coords = torch.rand(3, 4, 2, generator=gen) * size
    labels = torch.tensor([[1, 0, 1, -1], [1, 1, 0, 0], [0, -1, -1, 1]])
    x0y0 = torch.rand(3, 2, generator=gen) * size / 2
    boxes = torch.cat([x0y0, x0y0 + torch.rand(3, 2, generator=gen) * size / 2], dim=1)
    masks = torch.randn(3, 1, mask_size, mask_size, generator=gen) * 5
    return {
        "points": {"points": (coords, labels), "boxes": None, "masks": None},
        "points+box+mask": {"points": (coords, labels), "boxes": boxes, "masks": masks},
        "box": {"points": None, "boxes": boxes, "masks": None},
        "mask": {"points": None, "boxes": None, "masks": masks},
        "nothing": {"points": None, "boxes": None, "masks": None},
    }


@pytest.mark.reference
@pytest.mark.parametrize("case", ["points", "points+box+mask", "box", "mask", "nothing"])
def test_prompt_encoder_matches_reference(case: str) -> None:
    ref_modeling = pytest.importorskip("segment_anything.modeling")
    kwargs: dict[str, Any] = dict(
        embed_dim=32, image_embedding_size=(16, 16), input_image_size=(256, 200), mask_in_chans=16
    )
    torch.manual_seed(0)
    ref = ref_modeling.PromptEncoder(**kwargs)
    _randomise(ref, seed=1)
    ours = PromptEncoder(**kwargs)
    _copy_into(ours, ref)
    prompts = _prompt_cases(200, mask_size=64)[case]
    with torch.no_grad():
        ref_sparse, ref_dense = ref(**prompts)
        sparse, dense = ours(**prompts)
        torch.testing.assert_close(ours.get_dense_pe(), ref.get_dense_pe(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sparse, ref_sparse, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dense, ref_dense, rtol=1e-6, atol=1e-6)


@pytest.mark.reference
def test_two_way_transformer_matches_reference() -> None:
    ref_transformer = pytest.importorskip("segment_anything.modeling.transformer")
    kwargs: dict[str, Any] = dict(depth=2, embedding_dim=32, num_heads=4, mlp_dim=64)
    torch.manual_seed(0)
    ref = ref_transformer.TwoWayTransformer(**kwargs)
    ours = TwoWayTransformer(**kwargs)
    _copy_into(ours, ref)
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(3, 32, 8, 8, generator=gen)
    pe = torch.randn(3, 32, 8, 8, generator=gen)
    tokens = torch.randn(3, 6, 32, generator=gen)
    with torch.no_grad():
        ref_queries, ref_keys = ref(image, pe, tokens)
        queries, keys = ours(image, pe, tokens)
    _assert_close(queries, ref_queries)
    _assert_close(keys, ref_keys)


def _reference_decoder(ref_modeling: Any) -> nn.Module:
    return ref_modeling.MaskDecoder(
        transformer_dim=256,
        transformer=ref_modeling.TwoWayTransformer(
            depth=2, embedding_dim=256, num_heads=8, mlp_dim=2048
        ),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )


@pytest.mark.reference
@pytest.mark.parametrize("multimask_output", [True, False])
def test_mask_decoder_matches_reference(multimask_output: bool) -> None:
    ref_modeling = pytest.importorskip("segment_anything.modeling")
    torch.manual_seed(0)
    ref = _reference_decoder(ref_modeling)
    ours = _mask_decoder()
    _copy_into(ours, ref)
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(1, 256, 64, 64, generator=gen)
    image_pe = torch.randn(1, 256, 64, 64, generator=gen)
    sparse = torch.randn(4, 3, 256, generator=gen)
    dense = torch.randn(4, 256, 64, 64, generator=gen)
    with torch.no_grad():
        ref_masks, ref_iou = ref(image, image_pe, sparse, dense, multimask_output)
        masks, iou = ours(image, image_pe, sparse, dense, multimask_output)
    count = 3 if multimask_output else 1
    assert masks.shape == (4, count, 256, 256)
    assert iou.shape == (4, count)
    _assert_close(masks, ref_masks)
    _assert_close(iou, ref_iou)


@pytest.mark.reference
def test_mobile_sam_prompt_to_mask_matches_reference(
    mobile_sam_state: dict[str, torch.Tensor], mobile_sam_embeddings: dict[str, torch.Tensor]
) -> None:
    """Real weights end to end: each side's own embedding, prompts, low-res logits and IoU."""
    ref_modeling = pytest.importorskip("segment_anything.modeling")
    ref_prompt = ref_modeling.PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    ref_prompt.load_state_dict(_sub_state(mobile_sam_state, "prompt_encoder."), strict=True)
    ref_decoder = _reference_decoder(ref_modeling)
    ref_decoder.load_state_dict(_sub_state(mobile_sam_state, "mask_decoder."), strict=True)
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    prompt_encoder.load_state_dict(_sub_state(mobile_sam_state, "prompt_encoder."), strict=True)
    decoder = _mask_decoder()
    decoder.load_state_dict(_sub_state(mobile_sam_state, "mask_decoder."), strict=True)

    prompts = _prompt_cases(1024, mask_size=256)["points+box+mask"]
    for multimask_output in (True, False):
        with torch.no_grad():
            ref_sparse, ref_dense = ref_prompt(**prompts)
            ref_masks, ref_iou = ref_decoder(
                mobile_sam_embeddings["reference"],
                ref_prompt.get_dense_pe(),
                ref_sparse,
                ref_dense,
                multimask_output,
            )
            sparse, dense = prompt_encoder(**prompts)
            masks, iou = decoder(
                mobile_sam_embeddings["ours"],
                prompt_encoder.get_dense_pe(),
                sparse,
                dense,
                multimask_output,
            )
        assert masks.shape == (3, 3 if multimask_output else 1, 256, 256)
        torch.testing.assert_close(masks, ref_masks, rtol=0, atol=1e-3)
        torch.testing.assert_close(iou, ref_iou, rtol=0, atol=1e-3)
