"""Two-way transformer of SAM's mask decoder.

Prompt tokens and image tokens update each other: in every block the tokens attend to themselves,
then to the image, go through an MLP, and finally the image attends back to the tokens. A last
token-to-image attention closes the stack.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock

__all__ = ["Attention", "TwoWayAttentionBlock", "TwoWayTransformer"]


class TwoWayTransformer(nn.Module):
    """Stack of :class:`TwoWayAttentionBlock` and a final token-to-image attention.

    Args:
        depth: Number of two-way blocks.
        embedding_dim: Width ``C`` of tokens and image embedding.
        num_heads: Attention heads; must divide ``embedding_dim // attention_downsample_rate``.
        mlp_dim: Hidden width of the token MLPs.
        activation: Activation class of the token MLPs.
        attention_downsample_rate: Factor by which cross-attention projects ``C`` down internally.
    """

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(index == 0),
            )
            for index in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer.

        Args:
            image_embedding: ``(B, C, h, w)`` image features, or ``(1, C, h, w)`` shared by all ``B``
                prompts (cheaper: the first block's image-side projections are then computed once).
            image_pe: ``(B, C, h, w)`` or ``(1, C, h, w)`` positional encoding of the image features.
            point_embedding: ``(B, T, C)`` tokens; also used as their positional encoding.

        Returns:
            Updated tokens ``(B, T, C)`` and updated image tokens ``(B, h * w, C)``.
        """
        keys = image_embedding.flatten(2).permute(0, 2, 1)  # (B, h*w, C)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding

        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe)

        attended = self.final_attn_token_to_image(
            q=queries + point_embedding, k=keys + key_pe, v=keys
        )
        queries = self.norm_final_attn(queries + attended)
        return queries, keys


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token-to-image attention, token MLP, image-to-token attention.

    Each step is residual and followed by a LayerNorm. Positional encodings are added to queries
    and keys (not values) of every attention, except the first self-attention of the stack when
    ``skip_first_layer_pe`` is set, which then also drops its residual.

    Args:
        embedding_dim: Width ``C`` of tokens and image tokens.
        num_heads: Attention heads.
        mlp_dim: Hidden width of the token MLP.
        activation: Activation class of the token MLP.
        attention_downsample_rate: Internal width reduction of the two cross-attentions.
        skip_first_layer_pe: Whether this is the first block (see above).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, C)`` tokens and ``(B, N, C)`` image tokens (with their PEs) -> updated pair."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


class Attention(nn.Module):
    """Multi-head attention whose projections may narrow the width by ``downsample_rate``.

    Args:
        embedding_dim: Width ``C`` of inputs and output.
        num_heads: Attention heads; must divide ``embedding_dim // downsample_rate``.
        downsample_rate: Internal width is ``embedding_dim // downsample_rate``.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, D) -> (B, heads, N, D / heads)``."""
        batch, tokens, width = x.shape
        return x.reshape(batch, tokens, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Queries ``(B, Nq, C)``, keys and values ``(B, Nk, C)`` -> ``(B, Nq, C)``.

        Any of the three may have batch 1 while the others have batch B: it is projected once and broadcast.
        """
        q = self._split_heads(self.q_proj(q))
        k = self._split_heads(self.k_proj(k))
        v = self._split_heads(self.v_proj(v))
        # An input of batch 1 (the image side before any prompt touched it) is projected once and shared.
        batch = max(q.shape[0], k.shape[0], v.shape[0])
        q, k, v = (t.expand(batch, -1, -1, -1) if t.shape[0] != batch else t for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        batch, _, tokens, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, self.internal_dim))
