"""SAM's mask upscaling as matrix products on channels-last pixels (same result as the convolutions).

The mask decoder turns its ``(B, h * w, C)`` image tokens into mask logits with
``ConvTranspose2d(C, C/4, 2, stride 2) -> LayerNorm2d -> GELU -> ConvTranspose2d(C/4, C/8, 2, stride 2) -> GELU``
and a dot product of every pixel's ``C/8`` features with each mask token's hypernetwork weights.

A 2x2 transposed convolution with stride 2 maps every input pixel to its own 2x2 output block: it is one
matrix product ``(pixels, C_in) @ (C_in, 4 * C_out)``. Kept channels-last, the tokens need no transpose to
``(B, C, h, w)``, the LayerNorm is the native one over the last axis, and the sub-pixel positions stay apart
until the very end, where only the ``(B, M, 4h, 4w)`` logits are rearranged into image order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["upscaled_mask_logits"]


def _as_matrix(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``kernel 2, stride 2`` transposed convolution as ``(C_in, 4 * C_out)`` weight and ``(4 * C_out,)`` bias,
    columns ordered (kernel row, kernel column, output channel)."""
    weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, -1)
    return weight, conv.bias.repeat(4)


def upscaled_mask_logits(
    upscaling: nn.Sequential, tokens: torch.Tensor, height: int, width: int, hyper_in: torch.Tensor
) -> torch.Tensor:
    """Mask logits from the transformer's image tokens, channels-last.

    Args:
        upscaling: the decoder's ``output_upscaling``: ConvTranspose2d, LayerNorm2d, activation,
            ConvTranspose2d, activation (both convolutions kernel 2, stride 2).
        tokens: ``(B, h * w, C)`` image tokens, row-major over the ``h x w`` grid.
        height: ``h``.
        width: ``w``.
        hyper_in: ``(B, M, C_2)`` per-mask weights (``C_2`` the second convolution's output channels).

    Returns:
        ``(B, M, 4h, 4w)`` logits, equal to ``hyper_in @ upscaling(tokens as (B, C, h, w))`` up to float32
        rounding.
    """
    conv1, norm, act1, conv2, act2 = upscaling
    batch = tokens.shape[0]
    weight1, bias1 = _as_matrix(conv1)
    weight2, bias2 = _as_matrix(conv2)
    x = torch.matmul(tokens, weight1) + bias1  # (B, hw, 4 * C1): sub-pixel (i1, j1) x channel
    x = F.layer_norm(x.reshape(batch, -1, conv1.out_channels), (conv1.out_channels,), norm.weight, norm.bias, norm.eps)
    x = act1(x)
    x = act2(torch.matmul(x, weight2) + bias2)  # (B, 4hw, 4 * C2): sub-pixel (i2, j2) x channel
    masks = torch.matmul(x.reshape(batch, -1, conv2.out_channels), hyper_in.transpose(1, 2))  # (B, 16hw, M)
    # pixel (4y + 2 i1 + i2, 4x + 2 j1 + j2) of every mask
    masks = masks.reshape(batch, height, width, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return masks.reshape(batch, -1, 4 * height, 4 * width)
