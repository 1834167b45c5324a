"""Prompt encoder of SAM: points, boxes and low-resolution masks to decoder inputs.

Points and box corners become *sparse* tokens: a random-Fourier positional encoding of their
location plus a learned embedding of their kind (background point, foreground point, top-left or
bottom-right corner, padding). A mask prompt becomes a *dense* embedding on the image-embedding grid;
without one, a learned "no mask" vector is broadcast over the grid.

Coordinates are pixels of the model input (the resized and padded image), ``(x, y)`` order.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d

__all__ = ["PositionEmbeddingRandom", "PromptEncoder"]


class PromptEncoder(nn.Module):
    """Encode point, box and mask prompts for :class:`~anymask.modeling.MaskDecoder`.

    Args:
        embed_dim: Width ``C`` of the prompt embeddings (256 in SAM).
        image_embedding_size: ``(h, w)`` of the image embedding grid (64x64 in SAM).
        input_image_size: ``(H, W)`` of the model input in pixels (1024x1024 in SAM, 256x256 in
            LiteMedSAM); point coordinates are normalised by it.
        mask_in_chans: Hidden channels of the mask-downscaling convolutions (16 in SAM).
        activation: Activation class used when downscaling masks.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        # Kinds of sparse token: 0 background point, 1 foreground point, 2 / 3 box corners.
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

        # Masks come at 4x the embedding resolution and are brought down by two stride-2 convs.
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        hidden = mask_in_chans // 4
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, hidden, kernel_size=2, stride=2),
            LayerNorm2d(hidden),
            activation(),
            nn.Conv2d(hidden, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Positional encoding of every cell of the image embedding grid: ``(1, C, h, w)``.

        ``grid`` ``(h, w)`` (default: the full ``image_embedding_size``) selects the top-left ``h x w`` cells of
        the full grid, as for an embedding of an image that was not padded to the square input: each cell keeps
        the position it had in training (the encoding is sliced, not recomputed for ``h x w``).
        """
        pe = self.pe_layer(self.image_embedding_size).unsqueeze(0)
        if grid is None or tuple(grid) == self.image_embedding_size:
            return pe
        return pe[:, :, : grid[0], : grid[1]]

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """``(B, N, 2)`` points and ``(B, N)`` labels -> ``(B, N (+1 if pad), C)`` tokens.

        Label 1 is foreground, 0 background, -1 padding (its positional encoding is dropped). With
        ``pad`` a padding token is appended, which the decoder expects when no box is given.
        """
        points = points + 0.5  # pixel index -> pixel centre
        if pad:
            batch = points.shape[0]
            points = torch.cat([points, points.new_zeros(batch, 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(batch, 1)], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        kind = labels.unsqueeze(-1)
        embedding = torch.where(kind == -1, self.not_a_point_embed.weight, embedding)
        embedding = torch.where(kind == 0, embedding + self.point_embeddings[0].weight, embedding)
        embedding = torch.where(kind == 1, embedding + self.point_embeddings[1].weight, embedding)
        return embedding

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """``(B, 4)`` XYXY boxes -> ``(B, 2, C)`` tokens, top-left corner first."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)  # pixel index -> pixel centre
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_kinds = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return embedding + corner_kinds

    def _embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 4h, 4w)`` mask logits -> ``(B, C, h, w)``."""
        return self.mask_downscaling(masks)

    @staticmethod
    def _batch_size(
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        grid: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed a batch of ``B`` prompts; every given input must have the same ``B``.

        Args:
            points: Coordinates ``(B, N, 2)`` in input pixels and labels ``(B, N)``, or None.
            boxes: XYXY boxes ``(B, 4)`` in input pixels, or None.
            masks: Mask logits ``(B, 1, 4h, 4w)`` (256x256 in SAM), or None.
            grid: ``(h, w)`` of the image embedding (default ``image_embedding_size``); smaller for an image
                encoded without padding to the square input (see :meth:`get_dense_pe`).

        Returns:
            Sparse embeddings ``(B, N_tokens, C)``: point tokens (plus one padding token when no
            box is given), then two box-corner tokens when a box is given.
            Dense embeddings ``(B, C, h, w)``.
        """
        batch = self._batch_size(points, boxes, masks)
        weight = self.point_embeddings[0].weight
        sparse = [torch.empty((batch, 0, self.embed_dim), device=weight.device, dtype=weight.dtype)]
        if points is not None:
            coords, labels = points
            sparse.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse_embeddings = torch.cat(sparse, dim=1)

        if masks is not None:
            dense_embeddings = self._embed_masks(masks)
        else:
            h, w = grid or self.image_embedding_size
            dense_embeddings = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
        return sparse_embeddings, dense_embeddings


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier-feature positional encoding of 2-D coordinates.

    Coordinates in ``[0, 1]`` are mapped to ``[-1, 1]``, projected by a fixed Gaussian matrix
    ``(2, F)`` and encoded as ``[sin, cos]`` of ``2 pi`` times the projection: ``2F`` features.

    Args:
        num_pos_feats: Number of random frequencies ``F``.
        scale: Standard deviation of the frequencies (1 when None or not positive).
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` coordinates in ``[0, 1]`` -> ``(..., 2F)`` features."""
        projected = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        projected = projected * (2 * math.pi)
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an ``(h, w)`` grid: ``(2F, h, w)``."""
        h, w = size
        matrix = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=matrix.device, dtype=matrix.dtype) + 0.5) / h
        xs = (torch.arange(w, device=matrix.device, dtype=matrix.dtype) + 0.5) / w
        grid = torch.stack(
            [xs.unsqueeze(0).expand(h, w), ys.unsqueeze(1).expand(h, w)], dim=-1
        )  # (h, w, 2) as (x, y)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """``(B, N, 2)`` ``(x, y)`` pixel coordinates in an ``(H, W)`` image -> ``(B, N, 2F)``."""
        height, width = image_size
        normalised = coords / torch.tensor([width, height], dtype=coords.dtype, device=coords.device)
        return self._pe_encoding(normalised.to(self.positional_encoding_gaussian_matrix.dtype))
