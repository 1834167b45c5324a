"""Container of the three networks of a Segment Anything model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT

__all__ = ["Sam"]


class Sam(nn.Module):
    """Image encoder, prompt encoder and mask decoder under the names the checkpoints use.

    The container does no pre- or post-processing: the image encoder expects an already
    normalised, resized and padded ``(B, 3, H, W)`` tensor (normalisation belongs to each model's
    spec), and masks come out as low-resolution logits. ``mask_threshold`` is the logit above which a
    pixel belongs to the mask.
    """

    mask_threshold: float = 0.0
    #: the model's ``anymask.models.ModelSpec`` (how to build, load and feed it), set by ``load_model``
    spec: Any = None

    def __init__(
        self,
        image_encoder: ImageEncoderViT | TinyViT | nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return self.prompt_encoder.no_mask_embed.weight.device
