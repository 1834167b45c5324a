"""Small layers shared by several networks of the Segment Anything family."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LayerNorm2d", "MLPBlock"]


class MLPBlock(nn.Module):
    """Two-layer perceptron applied over the last dimension: ``lin2(act(lin1(x)))``.

    Args:
        embedding_dim: Size ``C`` of the input and output features.
        mlp_dim: Size of the hidden layer.
        act: Activation class placed between the two linear layers.
    """

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C) -> (..., C)``."""
        return self.lin2(self.act(self.lin1(x)))


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channel dimension of a ``(B, C, H, W)`` feature map.

    Every pixel is normalised on its own across its ``C`` channels, then scaled and shifted by
    per-channel ``weight`` and ``bias``.

    Args:
        num_channels: Number of channels ``C``.
        eps: Added to the variance before the square root.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        centred = x - x.mean(dim=1, keepdim=True)
        variance = centred.pow(2).mean(dim=1, keepdim=True)
        normalised = centred / torch.sqrt(variance + self.eps)
        return normalised * self.weight[:, None, None] + self.bias[:, None, None]
