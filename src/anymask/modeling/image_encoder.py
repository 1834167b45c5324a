"""The ViT image encoder of SAM (vit_b / vit_l / vit_h).

A plain Vision Transformer over 16x16 patches. Most blocks attend inside non-overlapping windows;
a few blocks (``global_attn_indexes``) attend over the whole token grid. Every attention layer adds
decomposed relative position terms (one table per image axis) to its attention logits, and a small
convolutional neck maps the tokens to a ``(B, 256, 64, 64)`` embedding for a 1024 px input.

The module and parameter names match the official checkpoints so that their state dicts load with
strict key matching.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock

__all__ = ["ImageEncoderViT"]


class ImageEncoderViT(nn.Module):
    """SAM's ViT backbone: ``(B, in_chans, img_size, img_size) -> (B, out_chans, G, G)``.

    ``G = img_size // patch_size`` (64 for the official 1024 px models). The defaults build vit_b;
    vit_l and vit_h differ only in ``embed_dim``, ``depth``, ``num_heads`` and
    ``global_attn_indexes``.

    Args:
        img_size: Side of the square input the absolute position embedding was trained for.
        patch_size: Side of the square patches (and stride of the patch projection).
        in_chans: Channels of the input image.
        embed_dim: Token width ``D``.
        depth: Number of transformer blocks.
        num_heads: Attention heads per block.
        mlp_ratio: Hidden width of each block's MLP, relative to ``embed_dim``.
        out_chans: Channels of the output embedding.
        qkv_bias: Whether the query/key/value projection has a bias.
        norm_layer: Normalisation class applied over the token width (SAM: LayerNorm, eps 1e-6).
        act_layer: Activation class of the MLPs.
        use_abs_pos: Whether to add a learned absolute position embedding after patchifying.
        use_rel_pos: Whether attention adds decomposed relative position terms.
        window_size: Side of the attention windows; 0 makes every block global.
        global_attn_indexes: Indexes of the blocks that attend over the whole grid.
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        act_layer: type[nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] | list[int] = (2, 5, 8, 11),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))

        self.blocks = nn.ModuleList()
        for index in range(depth):
            block_window = 0 if index in global_attn_indexes else window_size
            self.blocks.append(
                Block(
                    dim=embed_dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                    use_rel_pos=use_rel_pos,
                    window_size=block_window,
                    # Relative tables cover the attended area: a window, or the whole grid.
                    input_size=(block_window, block_window) if block_window else (grid, grid),
                )
            )

        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, out_chans, H // patch_size, W // patch_size)``."""
        x = self.patch_embed(x)  # (B, G, G, D)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: ``(B, C_in, H, W) -> (B, H / p, W / p, D)`` (channels last)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Block(nn.Module):
    """Pre-norm transformer block with optional windowed attention, on ``(B, H, W, D)`` tokens.

    With ``window_size > 0`` the grid is zero-padded to a multiple of the window, cut into windows,
    attended per window and stitched back; padded positions take part in the attention as keys,
    exactly as in the original model.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        norm_layer: Callable[[int], nn.Module],
        act_layer: type[nn.Module],
        use_rel_pos: bool,
        window_size: int,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos, input_size)
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, D) -> (B, H, W, D)``."""
        height, width = x.shape[1], x.shape[2]
        y = self.norm1(x)
        if self.window_size > 0:
            windows, padded_hw = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(windows), self.window_size, padded_hw, (height, width))
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head self-attention over a ``(B, H, W, D)`` token grid with decomposed relative positions.

    Args:
        dim: Token width ``D``.
        num_heads: Number of heads; must divide ``dim``.
        qkv_bias: Whether the joint query/key/value projection has a bias.
        use_rel_pos: Whether to add relative position terms to the attention logits.
        input_size: ``(H, W)`` the relative tables were trained for; other sizes are interpolated.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required when use_rel_pos is True")
            # One embedding per relative offset -(n-1) .. n-1 along each axis.
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, D) -> (B, H, W, D)``."""
        batch, height, width, _ = x.shape
        tokens = height * width
        # (B, N, 3 * D) -> 3 x (B, heads, N, head_dim)
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)

        bias = None
        if self.use_rel_pos:
            bias = relative_position_bias(
                q, self.rel_pos_h, self.rel_pos_w, (height, width), (height, width)
            )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, heads, N, head_dim)
        out = out.transpose(1, 2).reshape(batch, height, width, -1)
        return self.proj(out)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut ``(B, H, W, C)`` into ``(B * nW, window, window, C)`` windows, zero-padding H and W up.

    Returns the windows (row-major per image) and the padded size ``(Hp, Wp)``.
    """
    batch, height, width, channels = x.shape
    pad_h = -height % window
    pad_w = -width % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    padded_h, padded_w = height + pad_h, width + pad_w
    x = x.view(batch, padded_h // window, window, padded_w // window, window, channels)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, channels)
    return windows, (padded_h, padded_w)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, window, window, C) -> (B, H, W, C)``."""
    padded_h, padded_w = padded_hw
    height, width = hw
    rows, cols = padded_h // window, padded_w // window
    batch = windows.shape[0] // (rows * cols)
    x = windows.view(batch, rows, cols, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, padded_h, padded_w, -1)
    if padded_h > height or padded_w > width:
        x = x[:, :height, :width, :].contiguous()
    return x


def relative_embeddings(q_size: int, k_size: int, table: torch.Tensor) -> torch.Tensor:
    """Embedding of every (query, key) offset along one axis: ``(q_size, k_size, C)``.

    ``table`` is ``(L, C)``, one row per relative offset. It is resized by linear interpolation when
    ``L`` does not match ``2 * max(q_size, k_size) - 1``; coordinates of the shorter axis are
    stretched when query and key sizes differ.
    """
    length = 2 * max(q_size, k_size) - 1
    if table.shape[0] != length:
        resized = F.interpolate(table.t().unsqueeze(0), size=length, mode="linear")
        table = resized.squeeze(0).t()
    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    q_coords = torch.arange(q_size, device=table.device)[:, None] * q_scale
    k_coords = torch.arange(k_size, device=table.device)[None, :] * k_scale
    offsets = q_coords - k_coords + (k_size - 1) * k_scale
    return table[offsets.long()]


def relative_position_bias(
    q: torch.Tensor,
    table_h: torch.Tensor,
    table_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> torch.Tensor:
    """Additive attention bias of decomposed relative positions (MViTv2).

    The logit of query ``(i, j)`` and key ``(m, n)`` gains ``q[i, j] . Rh[i, m] + q[i, j] . Rw[j, n]``
    where ``Rh`` and ``Rw`` are the relative embeddings of the two axes.

    Args:
        q: Unscaled queries ``(B, heads, q_h * q_w, C)``.
        table_h: Row-offset table ``(Lh, C)``.
        table_w: Column-offset table ``(Lw, C)``.
        q_size: Query grid ``(q_h, q_w)``.
        k_size: Key grid ``(k_h, k_w)``.

    Returns:
        ``(B, heads, q_h * q_w, k_h * k_w)``, to be added to the attention logits.
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    emb_h = relative_embeddings(q_h, k_h, table_h)  # (q_h, k_h, C)
    emb_w = relative_embeddings(q_w, k_w, table_w)  # (q_w, k_w, C)
    grid_q = q.reshape(*q.shape[:2], q_h, q_w, q.shape[-1])
    bias_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, emb_h)  # (B, heads, q_h, q_w, k_h)
    bias_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, emb_w)  # (B, heads, q_h, q_w, k_w)
    bias = bias_h[..., :, None] + bias_w[..., None, :]  # (B, heads, q_h, q_w, k_h, k_w)
    return bias.reshape(*q.shape[:2], q_h * q_w, k_h * k_w)
