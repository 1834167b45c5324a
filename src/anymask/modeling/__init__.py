"""The networks of the Segment Anything family: tensors in, tensors out."""

from .common import LayerNorm2d, MLPBlock
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PositionEmbeddingRandom, PromptEncoder
from .sam import Sam
from .tiny_vit import TinyViT
from .transformer import TwoWayAttentionBlock, TwoWayTransformer

__all__ = [
    "ImageEncoderViT",
    "LayerNorm2d",
    "MLPBlock",
    "MaskDecoder",
    "PositionEmbeddingRandom",
    "PromptEncoder",
    "Sam",
    "TinyViT",
    "TwoWayAttentionBlock",
    "TwoWayTransformer",
]
