"""Model registry: names -> builders, and :func:`load_model`.

Each model of the SAM family anymask knows is described by a :class:`ModelSpec`: how to build the network,
which catalogued checkpoint holds its weights, the side of the square image its encoder takes, and how
pixels are normalised. Builders are registered with :func:`register_model`, in the manner of timm::

    >>> from anymask import load_model, list_models
    >>> list_models()
    ['lite_medsam', 'mobile_sam', 'vit_b', 'vit_h', 'vit_l']
    >>> model = load_model("mobile_sam")          # fetched, verified and cached on first use

``load_model`` returns the :class:`~anymask.modeling.Sam` network (a ``torch.nn.Module`` in eval mode) with
its spec attached as ``model.spec``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch

from . import weights
from .errors import ModelError
from .modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TinyViT,
    TwoWayTransformer,
)

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "mobile_sam"

#: ImageNet statistics in 0..255 pixel units, used by SAM and MobileSAM
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ModelSpec:
    """What anymask needs to know to build, load and feed one model.

    Attributes:
        name: canonical registry name.
        builder: function returning the untrained network.
        weights: name of the checkpoint in the weights catalogue (``anymask weights list``).
        image_size: side of the square, padded image the encoder takes (1024 for SAM and MobileSAM).
        normalization: ``"mean_std"``: ``(pixel - pixel_mean) / pixel_std`` per channel, in 0..255 units;
            ``"min_max"``: each image scaled to [0, 1] by its own minimum and maximum (LiteMedSAM).
        resize: how the image is resized to ``image_size`` on its longer side: ``"bilinear"`` (PIL, as SAM
            and MobileSAM) or ``"area"`` (OpenCV area averaging, as LiteMedSAM).
        pixel_mean, pixel_std: per-channel RGB statistics for ``"mean_std"``.
        aliases: other names accepted by :func:`load_model`.
        description: one line for listings.
    """

    name: str
    builder: Callable[[], Sam]
    weights: str
    image_size: int
    normalization: Literal["mean_std", "min_max"] = "mean_std"
    resize: Literal["bilinear", "area"] = "bilinear"
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    aliases: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.normalization not in ("mean_std", "min_max"):
            raise ModelError(f"normalization must be 'mean_std' or 'min_max', not {self.normalization!r}")
        if self.resize not in ("bilinear", "area"):
            raise ModelError(f"resize must be 'bilinear' or 'area', not {self.resize!r}")


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register_model(
    name: str,
    *,
    weights: str,
    image_size: int,
    aliases: tuple[str, ...] = (),
    description: str = "",
    **options,
) -> Callable[[Callable[[], Sam]], Callable[[], Sam]]:
    """Decorator registering a model builder under ``name`` (and ``aliases``); names are case-insensitive."""
    name = name.strip().lower()
    aliases = tuple(a.strip().lower() for a in aliases)

    def decorate(builder: Callable[[], Sam]) -> Callable[[], Sam]:
        spec = ModelSpec(
            name=name,
            builder=builder,
            weights=weights,
            image_size=image_size,
            aliases=aliases,
            description=description,
            **options,
        )
        _REGISTRY[name] = spec
        for alias in (name, *aliases):
            _ALIASES[alias] = name
        return builder

    return decorate


def list_models() -> list[str]:
    """Canonical names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name`` or one of its aliases.

    Raises:
        ModelError: unknown name (the message lists the known ones).
    """
    canonical = _ALIASES.get(str(name).strip().lower())
    if canonical is None:
        known = ", ".join(sorted(_ALIASES))
        raise ModelError(f"unknown model {name!r}; known models: {known}")
    return _REGISTRY[canonical]


# --------------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------------

PROMPT_EMBED_DIM = 256


def _prompt_and_decoder(image_size: int, embedding_size: int) -> tuple[PromptEncoder, MaskDecoder]:
    prompt_encoder = PromptEncoder(
        embed_dim=PROMPT_EMBED_DIM,
        image_embedding_size=(embedding_size, embedding_size),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_EMBED_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=PROMPT_EMBED_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return prompt_encoder, mask_decoder


def _sam_vit(embed_dim: int, depth: int, num_heads: int, global_attn_indexes: tuple[int, ...]) -> Sam:
    image_size, patch_size = 1024, 16
    encoder = ImageEncoderViT(
        img_size=image_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
        out_chans=PROMPT_EMBED_DIM,
        qkv_bias=True,
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=global_attn_indexes,
    )
    return Sam(encoder, *_prompt_and_decoder(image_size, image_size // patch_size))


def _tiny_vit_sam(image_size: int, patch_stride: int, num_classes: int) -> Sam:
    encoder = TinyViT(
        img_size=image_size,
        in_chans=3,
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
        mlp_ratio=4.0,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        patch_stride=patch_stride,
        num_classes=num_classes,
    )
    # TinyViT downsamples by 4 after its patch embedding (two stride-2 merges; the last merge keeps size)
    embedding_size = image_size // (patch_stride * 4)
    return Sam(encoder, *_prompt_and_decoder(image_size, embedding_size))


@register_model(
    "mobile_sam",
    weights="mobile_sam",
    image_size=1024,
    aliases=("vit_t", "mobilesam"),
    description="MobileSAM: TinyViT-5M encoder distilled from SAM ViT-H, SAM's decoder (Apache-2.0)",
)
def build_mobile_sam() -> Sam:
    """MobileSAM (vit_t): TinyViT encoder at 1024 px; the checkpoint keeps TinyViT's unused ImageNet head."""
    return _tiny_vit_sam(1024, patch_stride=4, num_classes=1000)


@register_model(
    "lite_medsam",
    weights="lite_medsam",
    image_size=256,
    normalization="min_max",
    resize="area",
    aliases=("litemedsam",),
    description="LiteMedSAM: TinyViT encoder at 256 px fine-tuned on medical images (Apache-2.0)",
)
def build_lite_medsam() -> Sam:
    """LiteMedSAM: TinyViT encoder at 256 px with a 1x1 stride-1 patch embedding (64x64 embedding)."""
    return _tiny_vit_sam(256, patch_stride=1, num_classes=0)


@register_model("vit_b", weights="vit_b", image_size=1024, aliases=("sam_vit_b",),
                description="SAM ViT-B (91M encoder parameters, Apache-2.0)")
def build_sam_vit_b() -> Sam:
    """SAM with the ViT-B image encoder."""
    return _sam_vit(768, 12, 12, (2, 5, 8, 11))


@register_model("vit_l", weights="vit_l", image_size=1024, aliases=("sam_vit_l",),
                description="SAM ViT-L (308M encoder parameters, Apache-2.0)")
def build_sam_vit_l() -> Sam:
    """SAM with the ViT-L image encoder."""
    return _sam_vit(1024, 24, 16, (5, 11, 17, 23))


@register_model("vit_h", weights="vit_h", image_size=1024, aliases=("sam_vit_h", "default_sam"),
                description="SAM ViT-H (636M encoder parameters, Apache-2.0)")
def build_sam_vit_h() -> Sam:
    """SAM with the ViT-H image encoder."""
    return _sam_vit(1280, 32, 16, (7, 15, 23, 31))


# --------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------


def load_model(
    name: str = DEFAULT_MODEL,
    checkpoint: str | os.PathLike | None = None,
    *,
    pretrained: bool = True,
    verify: bool = True,
    download: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Sam:
    """Build a registered model and load its weights.

    Args:
        name: registry name or alias (``mobile_sam``/``vit_t``, ``vit_b``, ``vit_l``, ``vit_h``, ``lite_medsam``).
        checkpoint: a local checkpoint file to use instead of the catalogue's sources. With ``verify=True``
            it must be the catalogued file (same sha256); pass ``verify=False`` for a fine-tuned checkpoint
            of the same architecture (its keys and shapes are still checked strictly).
        pretrained: ``False`` returns randomly initialised weights (for tests and training).
        verify: check the checkpoint's sha256 against the catalogue.
        download: allow fetching from the network when the file is not found locally.
        device: torch device to put the model on (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        progress: show a progress bar while downloading.

    Returns:
        The network in eval mode, with its :class:`ModelSpec` as ``model.spec``.

    Raises:
        ModelError: unknown name, unavailable device, or a checkpoint whose keys/shapes do not match.
        WeightsError: the checkpoint cannot be obtained, fails verification, or is not a plain tensor file.
    """
    spec = get_model_spec(name)
    device = _check_device(device)
    if not pretrained:
        model = spec.builder()
        model.spec = spec
        return model.eval().to(device)
    if checkpoint is not None and not verify:
        path = Path(checkpoint)
        if path.is_dir():
            path = path / weights.get_entry(spec.weights).filename
    else:
        path = weights.resolve(spec.weights, path=checkpoint, download=download, progress=progress)
    state_dict = weights.load_state_dict(path)
    model = _build_with_weights(spec, state_dict, source=str(path))
    logger.info("loaded %s weights from %s", spec.name, path)
    model.spec = spec
    model = model.eval().to(device)
    if checkpoint is None or verify:  # the catalogue's file (sha256 verified): its graphs can be found by name
        from .runtime import graph_build_options

        model.loaded_from = {"checkpoint": str(path), "sha256": weights.get_entry(spec.weights).sha256,
                             "build": graph_build_options(model), "layout": tensor_layout(model)}
    return model


def _build_with_weights(spec: ModelSpec, state_dict: dict, source: str) -> Sam:
    """The network of ``spec`` holding the tensors of ``state_dict`` themselves as its parameters and buffers.

    The checkpoint's tensors replace the freshly initialised ones (``load_state_dict(assign=True)``) instead of
    being copied into them: read memory-mapped (:func:`anymask.checkpoint.load_state_dict`), they stay pages of the
    checkpoint file until written to (the file must then not be changed in place while the model lives; anymask's
    weights cache replaces files, never rewrites them). Copied, the network held a second, anonymous copy of the
    weights (MobileSAM: ~40 MB). Tensors of another dtype than the network's are converted. (Building on the
    ``meta`` device would skip the random initialisation too, but its first use imports ~70 MB of torch's meta
    kernels.)
    """
    model = spec.builder()
    check_state_dict(model, state_dict, source=source)
    expected = model.state_dict()
    converted = {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype) for k, v in state_dict.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    return model


def tensor_layout(model: torch.nn.Module) -> dict[str, tuple]:
    """``{name: (data_ptr, shape, stride, dtype)}`` of the model's state dict: which memory holds its weights."""
    return {k: (v.data_ptr(), tuple(v.shape), v.stride(), str(v.dtype)) for k, v in model.state_dict().items()}


def _check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device that exists here, else ModelError."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelError(f"bad device {device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {str(device)!r} asked for, but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {str(device)!r} asked for, but MPS is not available here")
    return device


def load_state_dict_strict(model: torch.nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """Load ``state_dict`` into ``model`` with exact key and shape matching.

    Raises:
        ModelError: naming a few missing, unexpected or mis-shaped keys.
    """
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)


def check_state_dict(model: torch.nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """Check that ``state_dict`` has exactly ``model``'s keys, with its shapes (``model`` may be on ``meta``).

    Raises:
        ModelError: naming a few missing, unexpected or mis-shaped keys.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = sorted(
        k for k in set(expected) & set(state_dict) if tuple(expected[k].shape) != tuple(state_dict[k].shape)
    )
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
            problems.append(f"{len(keys)} {label} key(s): {shown}")
    if problems:
        raise ModelError(f"{source} does not fit this model: " + "; ".join(problems))
