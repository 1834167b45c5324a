"""TinyViT image encoder, as distilled from SAM's ViT by MobileSAM and LiteMedSAM.

Four stages: a convolutional stage of MBConv blocks, then three stages of windowed-attention
blocks (each with a depthwise "local" convolution between attention and MLP). Stages are joined by
patch-merging convolutions; the last merge keeps the resolution (stride 1) so that a 1024 px input
ends at a 64x64 grid, like SAM's ViT. A convolutional neck maps to the 256-channel SAM embedding.

``patch_stride`` selects the stem: 4 (two 3x3 stride-2 convolutions, MobileSAM, 1024 px input) or
1 (two 1x1 stride-1 convolutions, LiteMedSAM, 256 px input). Module and parameter names match the
released checkpoints so that their state dicts load with strict key matching.

Memory: the convolutional part (stem and first stage) works at the highest resolution: at 1024 px each
of its expanded MBConv tensors is ``256 x 256 x 256`` float32, 64 MB, and it held most of the encoder's
peak memory. It only mixes neighbouring rows (3x3 convolutions), so :class:`TinyViT` computes it in
horizontal stripes with a halo of rows wide enough that every output row sees exactly the inputs it sees
in one pass; the MLPs of the second stage (``128 x 128`` tokens, hidden width 512: 32 MB per tensor) run
over stripes of rows too (they act on each token alone). ``stripe_rows`` sets the stripes; the result is
the same up to float32 rounding (tested), and the encoder is no slower (smaller working sets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d

__all__ = ["TinyViT"]

# Patch merges into these widths keep the resolution (MobileSAM's rule; they are the last widths of
# the TinyViT-5M/11M/21M configurations).
_FULL_RESOLUTION_MERGE_DIMS = (320, 448, 576)


class Conv2d_BN(nn.Sequential):  # noqa: N801 - TinyViT's name for this layer
    """Bias-free convolution ``c`` then batch normalisation ``bn``.

    ``(B, C_in, H, W) -> (B, C_out, H', W')``; eval mode uses the checkpoint's running statistics.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)


class PatchEmbed(nn.Module):
    """Stem: ``(B, in_chans, H, W) -> (B, embed_dim, H / stride, W / stride)``.

    ``stride`` 4 uses two 3x3 stride-2 convolutions; ``stride`` 1 uses two 1x1 convolutions.
    """

    def __init__(self, in_chans: int, embed_dim: int, stride: int) -> None:
        super().__init__()
        if stride == 4:
            kernel, step, pad = 3, 2, 1
        elif stride == 1:
            kernel, step, pad = 1, 1, 0
        else:
            raise ValueError(f"patch_stride must be 4 or 1, got {stride}")
        half = embed_dim // 2
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, half, kernel, step, pad),
            nn.GELU(),
            Conv2d_BN(half, embed_dim, kernel, step, pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block (expand 1x1, depthwise 3x3, project 1x1) on ``(B, C, H, W)``."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2d_BN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        y = self.conv3(y)
        return self.act3(x + y)


class PatchMerging(nn.Module):
    """Change width (and usually halve resolution): ``(B, C, H, W) -> (B, C_out, H / s, W / s)``."""

    def __init__(self, dim: int, out_dim: int, stride: int = 2) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = Conv2d_BN(dim, out_dim)
        self.conv2 = Conv2d_BN(out_dim, out_dim, kernel_size=3, stride=stride, padding=1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class ConvLayer(nn.Module):
    """Convolutional stage: MBConv blocks, then an optional patch merge. ``(B, C, H, W)`` in and out."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class Mlp(nn.Module):
    """Pre-norm MLP ``fc2(gelu(fc1(norm(x))))`` over the last dimension."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Pre-norm multi-head attention inside one window, with a learned bias per relative offset.

    Windows hold ``N = window * window`` tokens. The bias of a (query, key) pair depends on their
    absolute row and column distance ``(|dy|, |dx|)``, one learned value per head and distance in
    ``attention_biases`` ``(heads, window * window)``; ``attention_bias_idxs`` ``(N, N)`` (not saved
    in checkpoints) maps each pair to its distance.

    Args:
        dim: Token width ``C``.
        key_dim: Width of each head's queries and keys.
        num_heads: Number of heads.
        attn_ratio: Width of each head's values, relative to ``key_dim``.
        resolution: Window size ``(h, w)``.
    """

    def __init__(
        self,
        dim: int,
        key_dim: int,
        num_heads: int,
        attn_ratio: float = 1.0,
        resolution: tuple[int, int] = (7, 7),
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = int(attn_ratio * key_dim)
        self.scale = key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        # Per head, the projection yields [query | key | value] side by side.
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.value_dim))
        self.proj = nn.Linear(num_heads * self.value_dim, dim)

        rows, cols = resolution
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, rows * cols))
        ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        distance_index = (ys[:, None] - ys[None, :]).abs() * cols + (xs[:, None] - xs[None, :]).abs()
        self.register_buffer("attention_bias_idxs", distance_index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C) -> (B, N, C)``; ``B`` counts windows."""
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=3)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, N, d)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise local convolution, then MLP, on ``(B, H, W, C)`` tokens.

    The grid is zero-padded to a multiple of the window before attention; padded positions are
    normalised and attended to as keys like real tokens, as in the original model.
    """

    def __init__(
        self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.window_size = window_size
        #: run the MLP over stripes of this many rows when the grid has more than twice as many (None: never)
        self.mlp_stripe_rows: int | None = None
        self.attn = Attention(dim, dim // num_heads, num_heads, resolution=(window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2d_BN(
            dim, dim, kernel_size=local_conv_size, padding=local_conv_size // 2, groups=dim
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C) -> (B, H, W, C)``."""
        batch, height, width, channels = x.shape
        win = self.window_size
        pad_h, pad_w = -height % win, -width % win
        y = F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if pad_h or pad_w else x
        rows, cols = (height + pad_h) // win, (width + pad_w) // win
        # (B, H', W', C) -> (B * rows * cols, win * win, C)
        y = y.view(batch, rows, win, cols, win, channels).transpose(2, 3)
        y = self.attn(y.reshape(batch * rows * cols, win * win, channels))
        y = y.view(batch, rows, cols, win, win, channels).transpose(2, 3)
        y = y.reshape(batch, rows * win, cols * win, channels)[:, :height, :width]
        x = x + y

        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        rows = self.mlp_stripe_rows
        if rows and height > 2 * rows:  # per token: in stripes of rows, to bound the hidden activations
            # explicit sizes: traced for ONNX, a split by size alone assumes equal parts when the height is symbolic
            count, rest = divmod(int(height), rows)
            sizes = [rows] * count + ([rest] if rest else [])
            return torch.cat([part + self.mlp(part) for part in x.split(sizes, dim=1)], dim=1)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """Attention stage: TinyViT blocks, then an optional patch merge. ``(B, C, H, W)`` in and out."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio, local_conv_size) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT backbone with SAM neck: ``(B, in_chans, H, W) -> (B, out_chans, H / 16, W / 16)``.

    With ``patch_stride=4`` (MobileSAM, 1024 px input) the grid shrinks 4x in the stem and 2x in
    the first two merges; with ``patch_stride=1`` (LiteMedSAM, 256 px input) only the merges shrink
    it, giving ``H / 4``. Either way the official models produce ``(B, 256, 64, 64)``.

    Args:
        img_size: Input side the model was built for (recorded only; shapes follow the input).
        in_chans: Channels of the input image.
        embed_dims: Width of each of the four stages.
        depths: Number of blocks in each stage.
        num_heads: Attention heads of each stage (the first, convolutional, stage ignores it).
        window_sizes: Attention window side of each stage (the first stage ignores it).
        mlp_ratio: Hidden width of the attention blocks' MLPs, relative to the stage width.
        mbconv_expand_ratio: Hidden width of the MBConv blocks, relative to the stage width.
        local_conv_size: Kernel of the depthwise convolution inside attention blocks.
        patch_stride: Stem stride, 4 or 1 (see above).
        out_chans: Channels of the output embedding.
        stripe_rows: Compute the convolutional stem and first stage this many output rows at a time
            (output of the first stage: ``H / 8`` rows for ``patch_stride=4``), and the MLPs of blocks whose
            grid has more than twice as many rows in stripes of as many rows, to bound the memory; ``None``
            or 0 computes everything in one pass. The attribute may be changed later.
        num_classes: Size of the ImageNet classifier head (``norm_head``, ``head``) that some
            checkpoints carry; it is never used and is created only so that such checkpoints load
            with strict keys. 0 (default) leaves it out. MobileSAM's checkpoint needs 1000.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: tuple[int, ...] | list[int] = (64, 128, 160, 320),
        depths: tuple[int, ...] | list[int] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] | list[int] = (2, 4, 5, 10),
        window_sizes: tuple[int, ...] | list[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        patch_stride: int = 4,
        out_chans: int = 256,
        num_classes: int = 0,
        stripe_rows: int | None = 32,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], patch_stride)

        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            downsample = None
            if i + 1 < len(embed_dims):
                out_dim = embed_dims[i + 1]
                stride = 1 if out_dim in _FULL_RESOLUTION_MERGE_DIMS else 2
                downsample = PatchMerging(dim, out_dim, stride)
            layer: nn.Module
            if i == 0:
                layer = ConvLayer(dim, depth, mbconv_expand_ratio, downsample)
            else:
                layer = BasicLayer(
                    dim, depth, num_heads[i], window_sizes[i], mlp_ratio, local_conv_size, downsample
                )
            self.layers.append(layer)

        self.norm_head: nn.Module | None = None
        self.head: nn.Module | None = None
        if num_classes > 0:
            self.norm_head = nn.LayerNorm(embed_dims[-1])
            self.head = nn.Linear(embed_dims[-1], num_classes)

        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.stripe_rows = stripe_rows

    @property
    def stripe_rows(self) -> int | None:
        """Rows per stripe of the high-resolution parts (see the class docstring); ``None``: one pass."""
        return self._stripe_rows

    @stripe_rows.setter
    def stripe_rows(self, rows: int | None) -> None:
        self._stripe_rows = rows
        for layer in self.layers[1:]:
            for block in layer.blocks:
                block.mlp_stripe_rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, out_chans, h, w)``; ``h = w = 64`` for the official models."""
        x = self.convolutional_stage(x)
        for layer in self.layers[1:]:
            x = layer(x)
        return self.neck(x)

    def convolutional_stage(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and first stage, ``(B, in_chans, H, W) -> (B, embed_dims[1], h1, w1)``, in stripes of rows.

        Every operation in this part is per pixel except the 3x3 convolutions, each of which reads one row
        above and below. A stripe of output rows ``[u0, u1)`` is computed from input rows
        ``[s (u0 - halo), s (u1 + halo))`` (``s`` the part's stride): the zero padding at a stripe's cut
        corrupts only the halo rows, which are dropped, so the kept rows are those of one pass.
        """
        rows = self.stripe_rows
        stride, halo = self._stem_stride_and_halo()
        height = int(x.shape[-2])  # a constant when traced for ONNX (the stripes are laid out for one height)
        out_rows = -(-height // stride)
        if not rows or out_rows <= rows + halo:
            return self.layers[0](self.patch_embed(x))
        stripes = []
        for start in range(0, out_rows, rows):
            stop = min(start + rows, out_rows)
            first = max(start - halo, 0)
            part = x[:, :, first * stride : min((stop + halo) * stride, height)]
            stripes.append(self.layers[0](self.patch_embed(part))[:, :, start - first : stop - first])
        return torch.cat(stripes, dim=2)

    def _stem_stride_and_halo(self) -> tuple[int, int]:
        """Stride of stem + first stage, and the halo (in its output rows) that keeps stripes exact.

        Rows corrupted at a stripe's top edge, at the stem's output resolution: 1 with 3x3 stride-2 stem
        convolutions (their zero padding reaches the first row), 0 with 1x1 ones; each MBConv's depthwise
        3x3 convolution corrupts one row more; the merge's stride-2 3x3 convolution then reads rows
        ``2j - 1 .. 2j + 1``, so its output row ``j`` is clean for ``2 j - 1 >= corrupted``. The bottom edge
        corrupts fewer rows (stride-2 convolutions over an even number of rows never read its padding).
        """
        stage = self.layers[0]
        stem_kernel = self.patch_embed.seq[0].c.kernel_size[0]
        stem_stride = self.patch_embed.seq[0].c.stride[0] * self.patch_embed.seq[2].c.stride[0]
        merge_stride = stage.downsample.conv2.c.stride[0] if stage.downsample is not None else 1
        corrupted = (1 if stem_kernel > 1 else 0) + len(stage.blocks)
        if merge_stride == 1:
            halo = corrupted + 1  # the merge's 3x3 convolution reads one row more
        else:
            halo = (corrupted + 2) // 2  # smallest j with 2 j - 1 >= corrupted
        return stem_stride * merge_stride, halo
