"""Mask decoder of SAM: image embedding + prompt embeddings -> mask logits and IoU estimates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
from .mask_upscaling import FactoredTokens, upscaled_mask_logits, upscaling_bases
from .transformer import PreparedImage

__all__ = ["MLP", "MaskDecoder"]


class MaskDecoder(nn.Module):
    """Predict masks from an image embedding and a batch of prompts.

    Learned output tokens (one IoU token and ``num_multimask_outputs + 1`` mask tokens) are
    prepended to the prompt tokens and run through the two-way transformer with the image
    embedding. The image embedding is then upscaled 4x, and each mask token is turned by its own
    small MLP (a hypernetwork) into per-pixel weights whose dot product with the upscaled features
    gives that mask's logits. The IoU token predicts the quality of every mask.

    Mask 0 is the single-mask answer; masks ``1..num_multimask_outputs`` are the ambiguity-aware
    alternatives.

    Args:
        transformer_dim: Channel width ``C`` of the transformer (256 in SAM).
        transformer: The two-way transformer, ``(B,C,h,w), (B,C,h,w), (B,T,C) -> (B,T,C), (B,hw,C)``.
        num_multimask_outputs: Number of alternative masks.
        activation: Activation class of the upscaling path.
        iou_head_depth: Number of linear layers of the IoU head.
        iou_head_hidden_dim: Hidden width of the IoU head.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1

        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)

        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        prepared: PreparedImage | None = None,
        upscale_grid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks for ``B`` prompts on one image.

        Args:
            image_embeddings: ``(1, C, h, w)`` from the image encoder (repeated once per prompt).
            image_pe: ``(1, C, h, w)`` dense positional encoding (``PromptEncoder.get_dense_pe``).
            sparse_prompt_embeddings: ``(B, N, C)`` point and box tokens.
            dense_prompt_embeddings: ``(B, C, h, w)`` mask-prompt embedding.
            multimask_output: Return the ``num_multimask_outputs`` alternatives instead of the
                single mask.
            prepared: :meth:`prepare` of this image (prompts without a mask input only: the dense embedding
                must be the one it was prepared with): the first block's image side is not recomputed.
            upscale_grid: see :meth:`predict_masks`.

        Returns:
            Mask logits ``(B, M, 4h, 4w)`` (fewer rows / columns with ``upscale_grid``) and predicted IoU
            ``(B, M)``, with ``M`` 1 or ``num_multimask_outputs``.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, prepared, upscale_grid
        )
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, selected], iou_pred[:, selected]

    def prepare(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt_embeddings: torch.Tensor
    ) -> PreparedImage:
        """What every prompt without a mask input shares on one image (see :class:`PreparedImage`).

        Args:
            image_embeddings: ``(1, C, h, w)`` from the image encoder.
            image_pe: ``(1, C, h, w)`` dense positional encoding.
            dense_prompt_embeddings: ``(1, C, h, w)`` or ``(1, C, 1, 1)``: the no-mask embedding.
        """
        prepared = self.transformer.prepare(image_embeddings + dense_prompt_embeddings[:1], image_pe)
        bases = upscaling_bases(self.output_upscaling, self._update_norms(), prepared.keys)
        return prepared._replace(upscale_base_0=bases[0], upscale_base_1=bases[1])

    def _update_norms(self) -> list[nn.LayerNorm]:
        """The LayerNorms after the image tokens' update in each two-way block (``norm4``)."""
        return [layer.norm4 for layer in self.transformer.layers]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        prepared: PreparedImage | None = None,
        upscale_grid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks ``(B, T_m, 4h, 4w)`` and IoU predictions ``(B, T_m)``.

        With ``prepared`` the image embedding, PE and dense embedding are only read for their shapes.
        ``upscale_grid`` (``(2,)`` int64 ``(rows, cols)``, folded transformer only) computes the logits of the
        first ``rows x cols`` cells of the ``h x w`` grid alone: ``(B, T_m, 4 rows, 4 cols)``, the same values as
        that corner of the whole grid's (see :func:`~anymask.modeling.mask_upscaling.upscaled_mask_logits`). The
        plain formulation ignores it and returns the whole grid.
        """
        num_prompts = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(num_prompts, -1, -1)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)  # (B, T, C)

        # Without mask prompts the dense embedding is one vector broadcast over the grid and the batch (stride
        # 0): the image side then enters the transformer once, shared by every prompt, and only becomes
        # per-prompt where the prompts first update it (saves the first block's image-side projections).
        channels, height, width = image_embeddings.shape[1:]
        # only the output tokens are read after the transformer: its final attention skips the prompt tokens
        outputs = 1 + self.num_mask_tokens
        factored = None
        if prepared is not None:
            record = [] if prepared.upscale_base_0 is not None else None
            tokens_out, src = self.transformer(None, None, tokens, prepared=prepared, num_outputs=outputs,
                                               record=record)
            if record is not None and len(record) == len(self.transformer.layers):  # every block folded
                factored = FactoredTokens((prepared.upscale_base_0, prepared.upscale_base_1), record,
                                          self._update_norms())
        else:
            if dense_prompt_embeddings.shape[0] > 1 and dense_prompt_embeddings.stride(0) == 0:
                dense_prompt_embeddings = dense_prompt_embeddings[:1]
            src = image_embeddings + dense_prompt_embeddings  # (1 or B, C, h, w)
            tokens_out, src = self.transformer(src, image_pe, tokens, num_outputs=outputs)
        batch = num_prompts
        iou_token_out = tokens_out[:, 0, :]
        mask_tokens_out = tokens_out[:, 1 : 1 + self.num_mask_tokens, :]

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # (B, T_m, C / 8)
        if getattr(self.transformer, "fold", False):  # same result, channels-last matrix products
            masks = upscaled_mask_logits(self.output_upscaling, src, height, width, hyper_in, upscale_grid, factored)
        else:
            src = src.expand(batch, -1, -1).transpose(1, 2).reshape(batch, channels, height, width)
            upscaled = self.output_upscaling(src)  # (B, C / 8, 4h, 4w)
            batch, up_channels, up_h, up_w = upscaled.shape
            masks = (hyper_in @ upscaled.reshape(batch, up_channels, up_h * up_w)).reshape(
                batch, -1, up_h, up_w
            )
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them: ``(..., input_dim) -> (..., output_dim)``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip(widths[:-1], widths[1:])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < last:
                x = F.relu(x)
        return x
