"""Tests of anymask.models: the registry, the builders against the real checkpoints, and load_model's errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from anymask import Predictor, get_model_spec, list_models, load_model, weights
from anymask.errors import ModelError, WeightsError
from anymask.models import DEFAULT_MODEL, ModelSpec, load_state_dict_strict

from conftest import EXAMPLE_IMAGE

ALL_MODELS = ["lite_medsam", "mobile_sam", "vit_b", "vit_h", "vit_l"]


@pytest.fixture(scope="module")
def mobile_sam_state(mobile_sam_checkpoint):
    return torch.load(mobile_sam_checkpoint, map_location="cpu", weights_only=True)


def _shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


# ------------------------------------------------------------------------------------------ registry


def test_list_models():
    assert list_models() == ALL_MODELS
    assert DEFAULT_MODEL == "mobile_sam"


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("mobile_sam", "mobile_sam"),
        ("vit_t", "mobile_sam"),
        ("mobilesam", "mobile_sam"),
        ("  VIT_T ", "mobile_sam"),
        ("lite_medsam", "lite_medsam"),
        ("litemedsam", "lite_medsam"),
        ("LiteMedSAM", "lite_medsam"),
        ("vit_b", "vit_b"),
        ("sam_vit_b", "vit_b"),
        ("vit_l", "vit_l"),
        ("sam_vit_l", "vit_l"),
        ("vit_h", "vit_h"),
        ("sam_vit_h", "vit_h"),
        ("default_sam", "vit_h"),
    ],
)
def test_names_and_aliases(alias, canonical):
    spec = get_model_spec(alias)
    assert isinstance(spec, ModelSpec)
    assert spec.name == canonical


@pytest.mark.parametrize("name", ALL_MODELS)
def test_specs(name):
    spec = get_model_spec(name)
    assert spec.weights in weights.catalog(), "the spec names a checkpoint the catalogue does not have"
    assert spec.image_size == (256 if name == "lite_medsam" else 1024)
    assert spec.normalization == ("min_max" if name == "lite_medsam" else "mean_std")
    assert spec.description
    for alias in spec.aliases:
        assert get_model_spec(alias) is spec


@pytest.mark.parametrize("bad", ["sam_xxl", "", "vit", "mobile-sam"])
def test_unknown_model_name(bad):
    with pytest.raises(ModelError) as info:
        get_model_spec(bad)
    message = str(info.value)
    assert "unknown model" in message and repr(bad) in message
    for name in ALL_MODELS + ["vit_t"]:
        assert name in message


def test_load_model_unknown_name_lists_known_names():
    with pytest.raises(ModelError, match="known models: .*mobile_sam.*vit_b"):
        load_model("sam_xxl")


def test_load_model_without_weights():
    model = load_model("vit_t", pretrained=False)
    assert model.spec is get_model_spec("mobile_sam")
    assert not model.training
    assert next(model.parameters()).device == torch.device("cpu")


# ------------------------------------------------------------------------------------------ builders


@pytest.mark.parametrize("name", ["mobile_sam", "lite_medsam"])
def test_builder_keys_and_shapes_equal_the_real_checkpoint(name, request):
    checkpoint = request.getfixturevalue(f"{name}_checkpoint")
    state = weights.load_state_dict(checkpoint)
    model = get_model_spec(name).builder()
    assert _shapes(model.state_dict()) == _shapes(state)


def test_loaded_mobile_sam_holds_the_checkpoint_weights(mobile_sam, mobile_sam_state):
    assert mobile_sam.spec.name == "mobile_sam" and not mobile_sam.training
    loaded = mobile_sam.state_dict()
    assert set(loaded) == set(mobile_sam_state)
    for key in mobile_sam_state:
        assert torch.equal(loaded[key], mobile_sam_state[key]), key


def test_loaded_weights_are_the_checkpoints_own_mapped_pages(mobile_sam_checkpoint):
    from anymask.checkpoint import mapped_unwritten
    from anymask.runtime import state_dict_digest, weights_digest

    model = load_model("mobile_sam", checkpoint=mobile_sam_checkpoint)
    assert mapped_unwritten(mobile_sam_checkpoint, model.state_dict().values())  # not copied into the heap
    # so the graph cache's key needs no tensor read while they are unwritten
    assert weights_digest(model) == "checkpoint-" + weights.get_entry("mobile_sam").sha256
    # a write anywhere in the mapping (here through numpy, which no version counter sees) is noticed
    model.mask_decoder.iou_token.weight.detach().numpy()[0, 0] += 1.0
    assert not mapped_unwritten(mobile_sam_checkpoint, model.state_dict().values())
    assert weights_digest(model) == state_dict_digest(model.state_dict())

    other = load_model("mobile_sam", checkpoint=mobile_sam_checkpoint)
    other.mask_decoder.iou_token.weight = torch.nn.Parameter(other.mask_decoder.iou_token.weight.clone())
    assert weights_digest(other) == state_dict_digest(other.state_dict())  # a replaced tensor: read them all
    assert not mapped_unwritten(mobile_sam_checkpoint, other.state_dict().values())


def test_a_checkpoint_of_another_dtype_is_converted(mobile_sam_state, tmp_path):
    path = tmp_path / "float64.pt"
    torch.save({k: v.double() if v.is_floating_point() else v for k, v in mobile_sam_state.items()}, path)
    model = load_model("mobile_sam", checkpoint=path, verify=False)
    for key, value in model.state_dict().items():
        assert value.dtype == mobile_sam_state[key].dtype, key
        assert torch.equal(value, mobile_sam_state[key]), key


SAM_VITS = {
    # name: (embed_dim, depth, num_heads, global attention blocks)
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


@pytest.mark.parametrize("name", sorted(SAM_VITS))
def test_sam_vit_builders(name, mobile_sam_state):
    embed_dim, depth, heads, global_blocks = SAM_VITS[name]
    head_dim = embed_dim // heads  # 64 for ViT-B/L, 80 for ViT-H
    with torch.device("meta"):
        model = get_model_spec(name).builder()
    state = _shapes(model.state_dict())
    assert all(t.is_meta for t in model.state_dict().values())

    assert state["image_encoder.pos_embed"] == (1, 64, 64, embed_dim)
    assert state["image_encoder.patch_embed.proj.weight"] == (embed_dim, 3, 16, 16)
    assert state["image_encoder.neck.0.weight"] == (256, embed_dim, 1, 1)
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks.")}
    assert blocks == set(range(depth))
    for i in range(depth):
        size = 2 * 64 - 1 if i in global_blocks else 2 * 14 - 1  # global: 64x64 tokens; windowed: 14x14
        assert state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] == (size, head_dim), i
        assert state[f"image_encoder.blocks.{i}.attn.rel_pos_w"] == (size, head_dim), i
        assert state[f"image_encoder.blocks.{i}.attn.qkv.weight"] == (3 * embed_dim, embed_dim)
        assert state[f"image_encoder.blocks.{i}.mlp.lin1.weight"] == (4 * embed_dim, embed_dim)

    # the prompt encoder and mask decoder are SAM's, the same as in the real MobileSAM checkpoint
    decoder_parts = {k: v for k, v in state.items() if not k.startswith("image_encoder.")}
    expected = {k: v for k, v in _shapes(mobile_sam_state).items() if not k.startswith("image_encoder.")}
    assert decoder_parts == expected


# ------------------------------------------------------------------------------------ bad checkpoints


def test_checkpoint_with_a_renamed_key(mobile_sam_state, tmp_path):
    state = dict(mobile_sam_state)
    state["mask_decoder.iou_token.weights"] = state.pop("mask_decoder.iou_token.weight")
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    with pytest.raises(ModelError) as info:
        load_model("mobile_sam", checkpoint=path, verify=False)
    message = str(info.value)
    assert str(path) in message
    assert "1 missing key(s): mask_decoder.iou_token.weight" in message
    assert "1 unexpected key(s): mask_decoder.iou_token.weights" in message


def test_checkpoint_with_a_wrong_shape(mobile_sam_state, tmp_path):
    state = dict(mobile_sam_state)
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    path = tmp_path / "reshaped.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"1 wrong shape key\(s\): mask_decoder.iou_token.weight"):
        load_model("mobile_sam", checkpoint=path, verify=False)


def test_load_state_dict_strict_leaves_the_model_alone_on_error(mobile_sam_state):
    model = get_model_spec("mobile_sam").builder()
    before = model.state_dict()["mask_decoder.iou_token.weight"].clone()
    state = {k: v for k, v in mobile_sam_state.items() if k != "mask_decoder.mask_tokens.weight"}
    with pytest.raises(ModelError, match="missing"):
        load_state_dict_strict(model, state)
    assert torch.equal(model.state_dict()["mask_decoder.iou_token.weight"], before)


def test_fine_tuned_checkpoint_loads_without_verification(mobile_sam_state, tmp_path):
    state = {k: v.clone() for k, v in mobile_sam_state.items()}
    state["mask_decoder.iou_token.weight"] += 1.0
    path = tmp_path / "fine_tuned.pt"
    torch.save(state, path)
    model = load_model("mobile_sam", checkpoint=path, verify=False)
    assert torch.equal(model.mask_decoder.iou_token.weight, state["mask_decoder.iou_token.weight"])


@pytest.fixture()
def tampered_checkpoint(mobile_sam_checkpoint, tmp_path):
    """The real checkpoint with one byte changed: the catalogue's size, another sha256."""
    data = bytearray(mobile_sam_checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "tampered.pt"
    path.write_bytes(bytes(data))
    return path


def test_checkpoint_with_the_wrong_sha256(tampered_checkpoint, mobile_sam_checkpoint):
    """verify=True: the named file must be the catalogued one; no silent fall-back to the cached copy."""
    cached_before = mobile_sam_checkpoint.stat()
    with pytest.raises(WeightsError) as info:
        load_model("mobile_sam", checkpoint=tampered_checkpoint, verify=True)
    message = str(info.value)
    assert str(tampered_checkpoint) in message and "sha256 mismatch" in message
    after = mobile_sam_checkpoint.stat()
    assert (after.st_size, after.st_mtime_ns) == (cached_before.st_size, cached_before.st_mtime_ns)


def test_checkpoint_of_the_wrong_size(mobile_sam_state, tmp_path):
    path = tmp_path / "other.pt"
    torch.save({k: v for k, v in list(mobile_sam_state.items())[:10]}, path)
    with pytest.raises(WeightsError, match="wrong size"):
        load_model("mobile_sam", checkpoint=path)  # verify=True is the default


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_model("mobile_sam", checkpoint=tmp_path / "nope.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        load_model("mobile_sam", checkpoint=tmp_path / "nope.pt", verify=False)


class _Payload:
    """Unpickling this object calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_checkpoint(path, marker):
    state = {"model": {"mask_decoder.iou_token.weight": torch.zeros(1, 256)}, "hook": _Payload(marker)}
    torch.save(state, path)
    return path


def test_the_malicious_payload_really_runs_when_unpickled_unsafely(tmp_path):
    """Proves the payload of the next test is armed: unsafe loading does create the marker."""
    marker = tmp_path / "armed"
    path = _malicious_checkpoint(tmp_path / "armed.pt", marker)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


def test_malicious_pickle_checkpoint_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = _malicious_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(WeightsError) as info:
        load_model("mobile_sam", checkpoint=path, verify=False)
    assert "not a plain tensor checkpoint" in str(info.value) and "nothing in it was run" in str(info.value)
    assert not marker.exists()
    with pytest.raises(WeightsError):
        weights.load_state_dict(path)
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt"]


def test_pickle_is_really_used_by_torch_save(tmp_path):
    """Sanity: the crafted file is a pickle-based torch checkpoint (so the refusal above is weights_only's)."""
    path = _malicious_checkpoint(tmp_path / "evil.pt", tmp_path / "never")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None], ids=["empty", "garbage", "truncated"])
def test_unreadable_checkpoints(content, mobile_sam_checkpoint, tmp_path):
    path = tmp_path / "broken.pt"
    if content is None:
        content = mobile_sam_checkpoint.read_bytes()[:1_000_000]
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="broken.pt"):
        load_model("mobile_sam", checkpoint=path, verify=False)


# ---------------------------------------------------------------------------------------- LiteMedSAM


def test_lite_medsam_predicts_a_box_on_a_real_photo(lite_medsam_checkpoint):
    model = load_model("lite_medsam", checkpoint=lite_medsam_checkpoint)
    assert model.spec.name == "lite_medsam" and model.spec.image_size == 256
    predictor = Predictor(model)
    emb = predictor.set_image(EXAMPLE_IMAGE)
    assert emb.features.shape == (1, 256, 64, 64) and emb.input_size == (256, 256) and emb.model == "lite_medsam"
    box = (275, 340, 512, 512)  # the helmet
    masks, scores, logits = predictor.predict(box=box, multimask=False)
    assert masks.shape == (1, 512, 512) and masks.dtype == np.bool_
    assert scores.shape == (1,) and logits.shape == (1, 256, 256)
    mask = masks[0]
    area = int(mask.sum())
    assert area > 0.4 * (237 * 172), area  # a substantial part of the box
    inside = int(mask[340:, 275:].sum())
    assert inside / area > 0.95  # and hardly anything outside it


# ------------------------------------------------------------------------------------ edge cases


def test_registration_is_case_insensitive(monkeypatch):
    from anymask import models

    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    monkeypatch.setattr(models, "_ALIASES", dict(models._ALIASES))
    models.register_model("MySAM", weights="mobile_sam", image_size=1024, aliases=("My_Alias",))(
        models.build_mobile_sam)
    for name in ("MySAM", "mysam", "MY_ALIAS"):
        assert get_model_spec(name).name == "mysam"


def test_spec_rejects_unknown_normalisation_and_resize():
    with pytest.raises(ModelError, match="normalization"):
        ModelSpec("x", lambda: None, "mobile_sam", 1024, normalization="bogus")
    with pytest.raises(ModelError, match="resize"):
        ModelSpec("x", lambda: None, "mobile_sam", 1024, resize="nearest")


@pytest.mark.parametrize("device", ["bogus", "cuda:0" if not torch.cuda.is_available() else "cuda:999999"])
def test_unavailable_device_is_a_model_error(device):
    with pytest.raises(ModelError, match="device"):
        load_model("mobile_sam", pretrained=False, device=device)


def test_unverified_checkpoint_may_be_a_folder(mobile_sam_checkpoint):
    model = load_model("mobile_sam", checkpoint=mobile_sam_checkpoint.parent, verify=False)
    ref = load_model("mobile_sam", checkpoint=mobile_sam_checkpoint)
    key = "mask_decoder.iou_token.weight"
    assert torch.equal(model.state_dict()[key], ref.state_dict()[key])


def test_lite_medsam_preprocessing_follows_litemedsam(lite_medsam_checkpoint):
    """Area-averaging resize of the longer side to 256, min-max scaling to [0, 1], zero padding."""
    import cv2

    p = Predictor(load_model("lite_medsam", checkpoint=lite_medsam_checkpoint))
    image = np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB"))[:300]  # 300x512 -> 150x256
    x, (h, w) = p.preprocess(image)
    assert x.shape == (1, 3, 256, 256) and (h, w) == (150, 256)
    small = cv2.resize(image, (256, 150), interpolation=cv2.INTER_AREA).astype(np.float32)
    expected = (small - small.min()) / (small.max() - small.min())
    np.testing.assert_allclose(x[0, :, :h, :w].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert float(x[0, :, h:, :].abs().max()) == 0.0
