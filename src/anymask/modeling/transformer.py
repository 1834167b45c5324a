"""Two-way transformer of SAM's mask decoder.

Prompt tokens and image tokens update each other: in every block the tokens attend to themselves,
then to the image, go through an MLP, and finally the image attends back to the tokens. A last
token-to-image attention closes the stack.

Folded cross-attention (``TwoWayTransformer(fold=True)``, the default; exact algebra, float32 rounding only):
there are a handful of prompt tokens (T ~ 7) and thousands of image tokens (N = h * w, 4096 for a 64x64
grid), so every cross-attention is evaluated through the token side and the ``N x C`` image tokens are never
projected. Per head ``h`` with ``Wq_h, Wk_h, Wv_h`` the ``d x C`` rows of the projections and ``Wo_h`` the
``C x d`` columns of the output projection:

- token-to-image (queries: tokens ``q``, keys ``K``, values ``X`` image): the logits ``(q Wq_h^T + bq_h)
  (K Wk_h^T + bk_h)^T`` are ``G_h K^T`` with ``G_h = (q Wq_h^T + bq_h) Wk_h`` (``T x C``) up to a constant per
  row, which softmax ignores; the output ``A_h (X Wv_h^T + bv_h) = (A_h X) Wv_h^T + bv_h`` since the rows of
  ``A_h`` sum to one. Cost ``2 N C H T`` instead of ``2 N C D`` (D = C / 2 = 128 > H T = 56).
- image-to-token (queries: image ``Q``, keys ``k``, values ``v`` tokens): the logits are ``Q M_h + c_h`` with
  ``M_h = Wq_h^T (k Wk_h^T + bk_h)^T`` and ``c_h = bq_h (k Wk_h^T + bk_h)^T``, and the output
  ``sum_h A_h ((v Wv_h^T + bv_h) Wo_h^T) + bo`` is one product ``A U`` of the ``N x H T`` attention with
  ``U`` (``H T x C``, ``bo / H`` added to its rows). Cost ``2 N C H T`` instead of ``2 N C D``, and the
  residual add is fused into the product.

Both cost less than the projections while ``T < C / (downsample_rate * H)`` (16 for SAM); with more tokens
(long click sequences) the plain formulation is used. When the image side is shared by a batch of prompts (the
first block without mask prompts) the first token-to-image attention projects it once instead, if that is
cheaper (3 prompts or more). ``fold=False`` runs the plain formulation everywhere (kept for benchmarks and
tests).

Prepared image side (:meth:`TwoWayTransformer.prepare`, exact): without a mask prompt the first block's image
side depends on the image alone, so its three projections of the image tokens (keys and values of the
token-to-image attention, queries of the image-to-token attention; ``N x C -> N x D`` each) can be computed
once per image and reused by every prompt and every call. With them the first block's token-to-image attention
costs ``2 N D T`` and the logits of its image-to-token attention ``N D T`` (instead of ``2 N C H T`` each
folded): one click's decoder does about 16 % fewer multiply-adds, a long click sequence about 20 %.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock

__all__ = ["Attention", "ImageUpdate", "PreparedImage", "TwoWayAttentionBlock", "TwoWayTransformer",
           "layer_norm_with_stats", "softmax_planes"]


def softmax_planes(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x.softmax(dim)`` for a short axis ``dim`` before long ones, as passes over whole planes.

    The image-to-token attentions normalise each image token's logits over the T ~ 7 prompt tokens. Laid out
    with the image tokens last, that is a maximum, an exponential, a sum and a division across T planes of N
    values each, every pass a vectorised loop over N; onnxruntime's ``Softmax`` runs row by row along the last
    axis instead, N short rows of T values, several times slower. Same values up to float32 rounding (the
    maximum is subtracted first, as softmax does).
    """
    shifted = x - x.amax(dim=dim, keepdim=True)
    exp = shifted.exp()
    return exp / exp.sum(dim=dim, keepdim=True)


class PreparedImage(NamedTuple):
    """The image side of the first two-way block, computed once per image (:meth:`TwoWayTransformer.prepare`).

    Valid only for prompts without a mask input (the dense prompt embedding is then the same for every prompt).

    Attributes:
        keys: ``(1, N, C)`` image tokens: image embedding plus the dense prompt embedding, rows in ``h x w``
            order.
        key_pe: ``(1, N, C)`` their positional encoding.
        block_keys: ``(1, H, d, N)`` keys of the first token-to-image attention (projected ``keys + key_pe``),
            split into the ``H`` heads of ``d = D / H`` channels, scaled by ``1 / sqrt(d)`` and stored transposed:
            the right operand of the attention's logits as it reads them (splitting, transposing and scaling them
            on every call cost passes over ``N x D`` floats per call).
        block_values: ``(1, H, N, d)`` its values (projected ``keys``).
        block_queries: ``(1, H, d, N)`` queries of the first image-to-token attention (projected
            ``keys + key_pe``), split into heads and stored transposed: the right operand of that attention's
            logits, laid out prompt tokens first (see :meth:`Attention.image_to_token_projected`).
        upscale_base_0, upscale_base_1: ``(1, N, 2 C1)`` the image's part of the mask upscaling's first product,
            one per kernel row (:func:`~anymask.modeling.mask_upscaling.upscaling_bases`; set by
            :meth:`~anymask.modeling.mask_decoder.MaskDecoder.prepare`), or None.
    """

    keys: torch.Tensor
    key_pe: torch.Tensor
    block_keys: torch.Tensor
    block_values: torch.Tensor
    block_queries: torch.Tensor
    upscale_base_0: torch.Tensor | None = None
    upscale_base_1: torch.Tensor | None = None


class ImageUpdate(NamedTuple):
    """How one two-way block updated the image tokens, recorded for a folded image-to-token attention:
    ``norm4(residual + attention @ values)``, with the LayerNorm's row statistics.

    Attributes:
        attention: ``(B, H T, N)`` attention weights of the image tokens over the heads' prompt tokens,
            transposed (the layout they are computed in).
        values: ``(B, H T, C)`` the folded values (output projection applied, ``bo / H`` on every row).
        mean: ``(B, N, 1)`` mean of each row of ``residual + attention @ values``.
        rstd: ``(B, N, 1)`` its ``1 / sqrt(var + eps)``.
    """

    attention: torch.Tensor
    values: torch.Tensor
    mean: torch.Tensor
    rstd: torch.Tensor


class _LayerNormWithStats(torch.autograd.Function):
    """``native_layer_norm`` over the last axis, exported as one ONNX ``LayerNormalization`` with its optional
    ``Mean`` and ``InvStdDev`` outputs (the TorchScript exporter would otherwise spell it out in ten nodes)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):  # noqa: ARG004
        return torch.native_layer_norm(x, [x.shape[-1]], weight, bias, eps)

    @staticmethod
    def symbolic(g, x, weight, bias, eps):
        return g.op("LayerNormalization", x, weight, bias, axis_i=-1, epsilon_f=eps, outputs=3)


def layer_norm_with_stats(norm: nn.LayerNorm, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``norm(x)`` and each row's mean and ``1 / sqrt(var + eps)``, ``(..., 1)`` (computed by the same kernel)."""
    return _LayerNormWithStats.apply(x, norm.weight, norm.bias, norm.eps)


class TwoWayTransformer(nn.Module):
    """Stack of :class:`TwoWayAttentionBlock` and a final token-to-image attention.

    Args:
        depth: Number of two-way blocks.
        embedding_dim: Width ``C`` of tokens and image embedding.
        num_heads: Attention heads; must divide ``embedding_dim // attention_downsample_rate``.
        mlp_dim: Hidden width of the token MLPs.
        activation: Activation class of the token MLPs.
        attention_downsample_rate: Factor by which cross-attention projects ``C`` down internally.
        fold: Evaluate the cross-attentions through the token side (see the module docstring); the attribute
            of the same name may be changed later (``model.mask_decoder.transformer.fold = False``).
    """

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        fold: bool = True,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.fold = fold
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

    @property
    def formulation(self) -> str:
        """``"folded"`` or ``"plain"``: which evaluation :meth:`forward` uses (part of the ONNX cache key)."""
        return "folded" if self.fold else "plain"

    def prepare(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> PreparedImage:
        """The first block's image side for ``(1, C, h, w)`` image features and their positional encoding.

        ``image_embedding`` must already include the dense prompt embedding (the no-mask embedding): the result
        serves every prompt without a mask input on this image (pass it to :meth:`forward`).
        """
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        k = keys + key_pe
        first = self.layers[0]
        token_to_image, image_to_token = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        return PreparedImage(
            keys=keys,
            key_pe=key_pe,
            block_keys=(token_to_image._split_heads(token_to_image.k_proj(k)).transpose(2, 3)
                        * token_to_image.head_scale).contiguous(),
            block_values=token_to_image._split_heads(token_to_image.v_proj(keys)).contiguous(),
            block_queries=image_to_token._split_heads(image_to_token.q_proj(k)).transpose(2, 3).contiguous(),
        )

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor,
        prepared: PreparedImage | None = None,
        num_outputs: int | None = None,
        record: list[ImageUpdate] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer.

        Args:
            image_embedding: ``(B, C, h, w)`` image features, or ``(1, C, h, w)`` shared by all ``B``
                prompts (cheaper: the first block's image side is then read once for the whole batch).
            image_pe: ``(B, C, h, w)`` or ``(1, C, h, w)`` positional encoding of the image features.
            point_embedding: ``(B, T, C)`` tokens; also used as their positional encoding.
            prepared: :meth:`prepare` of the same ``(1, C, h, w)`` image side (the two tensors above are then
                not read): the first block reuses its projections. Same result up to float32 rounding.
            num_outputs: return only the first ``num_outputs`` tokens (the mask decoder reads its output tokens
                and never the prompt tokens): the final attention then runs for those alone (each query's
                attention is independent of the others', so they are exact), which saves most of it for long
                prompts.
            record: a list to which every block whose image-to-token attention is folded appends its
                :class:`ImageUpdate` (the mask upscaling's first product can then skip the image tokens).

        Returns:
            Updated tokens ``(B, T, C)`` (``(B, num_outputs, C)``) and updated image tokens ``(B, h * w, C)``.
        """
        if prepared is not None:
            keys, key_pe = prepared.keys, prepared.key_pe
        else:
            # (B, h*w, C), rows contiguous: every later product and LayerNorm reads them that way
            keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
            key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        queries = point_embedding
        fold = self.fold and self.final_attn_token_to_image.fold_pays(point_embedding.shape[1])

        for index, layer in enumerate(self.layers):
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe, fold=fold,
                                  prepared=prepared if index == 0 else None, record=record)

        final = self.final_attn_token_to_image
        if num_outputs is not None:
            queries, point_embedding = queries[:, :num_outputs], point_embedding[:, :num_outputs]
            fold = self.fold and final.fold_pays(num_outputs)
        attend = final.token_to_image if fold else final
        attended = attend(q=queries + point_embedding, k=keys + key_pe, v=keys)
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
        fold: bool = False,
        prepared: PreparedImage | None = None,
        record: list[ImageUpdate] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, C)`` tokens and ``(B or 1, N, C)`` image tokens (with their PEs) -> updated pair.

        ``fold`` evaluates the two cross-attentions through the token side (same result, see the module
        docstring); ``prepared`` (first block only, ``keys`` then shared) supplies the image side's
        projections. ``record``: see :meth:`TwoWayTransformer.forward`.
        """
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        token_to_image = self.cross_attn_token_to_image
        if prepared is not None:
            k = None  # the image side's projections are prepared: keys + key_pe is never needed
            attended = token_to_image.attend_projected(q, prepared.block_keys, prepared.block_values)
        else:
            k = keys + key_pe
            # image side shared by a batch (first block, no mask prompts): projecting it once may cost less
            shared = keys.shape[0] == 1 and token_to_image.shared_projection_pays(*queries.shape[:2])
            attended = (token_to_image.token_to_image if fold and not shared else token_to_image)(q=q, k=k, v=keys)
        queries = self.norm2(queries + attended)

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        parts: list[torch.Tensor] | None = [] if record is not None else None
        if prepared is not None:
            updated = self.cross_attn_image_to_token.image_to_token_projected(
                prepared.block_queries, k=q, v=queries, residual=keys, fold=fold, parts=parts)
        elif fold:
            updated = self.cross_attn_image_to_token.image_to_token(q=k, k=q, v=queries, residual=keys, parts=parts)
        else:
            updated = keys + self.cross_attn_image_to_token(q=k, k=q, v=queries)
        if parts:
            keys, mean, rstd = layer_norm_with_stats(self.norm4, updated)
            record.append(ImageUpdate(*parts, mean, rstd))
        else:
            keys = self.norm4(updated)
        return queries, keys


class Attention(nn.Module):
    """Multi-head attention whose projections may narrow the width by ``downsample_rate``.

    :meth:`forward` is the plain formulation; :meth:`token_to_image` and :meth:`image_to_token` compute the
    same attention folded through the short (token) side when the other side is long (image tokens).

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

    @property
    def head_scale(self) -> float:
        """``1 / sqrt(d)``, the logits' scale (``d`` a head's width)."""
        return (self.internal_dim // self.num_heads) ** -0.5

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

    def fold_pays(self, tokens: int) -> bool:
        """Whether folding through ``tokens`` short-side tokens costs fewer FLOPs than projecting the long side."""
        return self.num_heads * tokens < self.internal_dim

    def shared_projection_pays(self, batch: int, tokens: int) -> bool:
        """Whether projecting keys and values shared by ``batch`` prompts of ``tokens`` queries once costs fewer
        FLOPs than :meth:`token_to_image` for each prompt (per key: ``C D + B D T`` against ``B C H T``)."""
        width, internal = self.embedding_dim, self.internal_dim
        return width * internal + batch * internal * tokens < batch * width * self.num_heads * tokens

    def _head_weights(self, linear: nn.Linear) -> torch.Tensor:
        """A projection's weight ``(D, C)`` as ``(heads, d, C)``."""
        return linear.weight.reshape(self.num_heads, self.internal_dim // self.num_heads, -1)

    def attend_projected(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with keys and values already projected and shared by the batch.

        Args:
            q: ``(B, T, C)`` query tokens.
            k: ``(1, H, d, N)`` projected keys (``k_proj`` of the keys), split into heads, scaled by
                :attr:`head_scale` and transposed.
            v: ``(1, H, N, d)`` projected values, split into heads.

        Returns:
            ``(B, T, C)``: the ``B T`` queries of each head attend to the shared keys in one product.
        """
        batch, tokens, _ = q.shape
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        queries = self._split_heads(self.q_proj(q)).transpose(0, 1).reshape(1, heads, batch * tokens, head_dim)
        out = (queries @ k).softmax(dim=-1) @ v  # (1, H, BT, d): softmax(q k^T / sqrt(d)) v
        out = out.reshape(heads, batch, tokens, head_dim).permute(1, 2, 0, 3).reshape(batch, tokens, -1)
        return self.out_proj(out)

    def image_to_token_projected(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor,
                                 fold: bool = True, parts: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``residual + forward(q, k, v)`` with the (many) queries already projected and shared by the batch.

        Args:
            q: ``(1, H, d, N)`` projected queries (``q_proj`` of the image tokens), split into heads, transposed.
            k: ``(B, T, C)`` key tokens.
            v: ``(B, T, C)`` value tokens.
            residual: ``(B, N, C)`` or ``(1, N, C)``, added to the result.
            fold: apply the output projection to the values before the attention (cheaper while ``H T < D``).
            parts: with ``fold``, the attention, transposed, ``(B, H T, N)``, and the folded values ``(B, H T, C)``
                are appended to it (the result is ``residual + attention^T @ values``).

        Returns:
            ``(B, N, C)``, equal to ``residual + forward(q, k, v)`` up to float32 rounding.
        """
        batch, tokens, _ = k.shape
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        keys = self._split_heads(self.k_proj(k)) * self.head_scale  # (B, H, T, d)
        # per head, the batch's B T keys against the N shared queries in one product, laid out (H, B, T, N):
        # the softmax over each prompt's T keys is a reduction across T planes of N values (see softmax_planes)
        logits = keys.transpose(0, 1).reshape(heads, batch * tokens, head_dim) @ q.flatten(0, 1)  # (H, BT, N)
        weights = softmax_planes(logits.reshape(heads, batch, tokens, -1), dim=2)
        if fold:
            values = self._split_heads(self.v_proj(v))  # (B, H, T, d)
            out_weight = self.out_proj.weight.reshape(self.embedding_dim, heads, head_dim).permute(1, 2, 0)
            folded_values = (values @ out_weight + self.out_proj.bias / heads).reshape(batch, heads * tokens, -1)
            weights = weights.transpose(0, 1).reshape(batch, heads * tokens, -1)  # (B, HT, N)
            attention = weights.transpose(1, 2)  # (B, N, HT), transposed inside the product
            if parts is not None:
                parts += [weights, folded_values]
            if residual.shape[0] == batch:
                return torch.baddbmm(residual, attention, folded_values)
            return residual + attention @ folded_values
        values = self._split_heads(self.v_proj(v))  # (B, H, T, d)
        out = (weights.permute(1, 0, 3, 2) @ values).transpose(1, 2).reshape(batch, -1, self.internal_dim)
        return residual + self.out_proj(out)

    def token_to_image(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for few queries and many keys, folded: the keys and values are never projected.

        Args:
            q: ``(B, T, C)`` query tokens.
            k: ``(B, N, C)`` or ``(1, N, C)`` keys (shared by the batch).
            v: values, shaped like ``k``.

        Returns:
            ``(B, T, C)``, equal to ``forward(q, k, v)`` up to float32 rounding.
        """
        batch, tokens, _ = q.shape
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        scaled = self._split_heads(self.q_proj(q)) * self.head_scale  # (B, H, T, d)
        # G_h = q_h Wk_h: logits = G_h k^T (+ q_h . bk_h, constant along each row: softmax drops it)
        folded_keys = (scaled @ self._head_weights(self.k_proj)).reshape(batch, heads * tokens, -1)  # (B, HT, C)
        if k.shape[0] == 1:  # one product for the whole batch (flatten, not k[0]: a free reshape in ONNX too)
            logits = (folded_keys.flatten(0, 1) @ k.flatten(0, 1).t()).reshape(batch, heads * tokens, -1)
        else:
            logits = folded_keys @ k.transpose(1, 2)  # (B, HT, N)
        weights = logits.softmax(dim=-1)
        if v.shape[0] == 1:
            mixed = (weights.flatten(0, 1) @ v.flatten(0, 1)).reshape(batch, heads, tokens, -1)
        else:
            mixed = (weights @ v).reshape(batch, heads, tokens, -1)  # A_h v: (B, H, T, C)
        # (A_h v) Wv_h^T + bv_h: the rows of A_h sum to one
        out = mixed @ self._head_weights(self.v_proj).transpose(1, 2) + self.v_proj.bias.reshape(heads, 1, head_dim)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, self.internal_dim))

    def image_to_token(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor,
        parts: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``residual + forward(q, k, v)`` for many queries and few keys, folded: the queries are never
        projected, and the output projection is applied to the values before the attention.

        Args:
            q: ``(B, N, C)`` or ``(1, N, C)`` queries (shared by the batch).
            k: ``(B, T, C)`` key tokens.
            v: ``(B, T, C)`` value tokens.
            residual: ``(B, N, C)`` or ``(1, N, C)``, added to the result.
            parts: the attention, transposed, ``(B, H T, N)``, and the folded values ``(B, H T, C)`` are appended
                to it (the result is ``residual + attention^T @ values``).

        Returns:
            ``(B, N, C)``, equal to ``residual + forward(q, k, v)`` up to float32 rounding.
        """
        batch, tokens, _ = k.shape
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        keys = self._split_heads(self.k_proj(k)) * self.head_scale  # (B, H, T, d)
        # logits_h = (q Wq_h^T + bq_h) k_h^T = q M_h + c_h
        folded_keys = (keys @ self._head_weights(self.q_proj)).reshape(batch, heads * tokens, -1)  # (B, HT, C)
        offsets = (keys @ self.q_proj.bias.reshape(heads, head_dim, 1)).reshape(batch, heads * tokens, 1)
        # laid out (B, H T, N), tokens first: the softmax over each head's T tokens is a reduction across T planes
        # of N values (see softmax_planes); the attention enters the output product transposed
        logits = torch.matmul(folded_keys, q.transpose(1, 2)) + offsets  # (B, HT, N); q may have batch 1
        weights = softmax_planes(logits.reshape(batch, heads, tokens, -1), dim=2).reshape(batch, heads * tokens, -1)
        attention = weights.transpose(1, 2)  # (B, N, HT)
        # sum_h A_h (v_h Wo_h^T) + bo, with bo / H on every row of U (each A_h's rows sum to one)
        values = self._split_heads(self.v_proj(v))  # (B, H, T, d)
        out_weight = self.out_proj.weight.reshape(self.embedding_dim, heads, head_dim).permute(1, 2, 0)  # (H, d, C)
        folded_values = (values @ out_weight + self.out_proj.bias / heads).reshape(batch, heads * tokens, -1)
        if parts is not None:
            parts += [weights, folded_values]
        if residual.shape[0] == batch:
            return torch.baddbmm(residual, attention, folded_values)
        return residual + attention @ folded_values
