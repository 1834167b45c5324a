"""Promptable segmentation of one image: :class:`Predictor` and :class:`ImageEmbedding`.

The image encoder runs once per image (:meth:`Predictor.set_image`) and yields an :class:`ImageEmbedding`;
each prompt is then decoded in milliseconds (:meth:`Predictor.predict`).

Coordinate conventions (all at the API edge, in pixels of the *original* image):

- points are ``(x, y)`` with x the column and y the row, floats allowed, ``0 <= x <= W`` and ``0 <= y <= H``;
- labels are ``1`` (foreground) or ``0`` (background);
- boxes are XYXY ``(x0, y0, x1, y1)`` with ``x0 <= x1`` and ``y0 <= y1``, inside the image;
- masks are ``(..., H, W)`` bool, low-resolution logits ``(..., 256, 256)`` float32 in the frame of the
  resized and padded model input (feed them back as ``mask_input``).

Padding: by default (``pad_to_square=True``, as SAM) the resized image is padded to the model's square input
(1024 x 1024 for MobileSAM) and the embedding is a ``64 x 64`` grid. With ``pad_to_square=False`` it is padded
only to a multiple of the encoder's stride (16 px for MobileSAM): a 16:9 frame resized to 1024 x 576 gives a
``64 x 36`` grid (``(1, 256, 36, 64)`` features) and the encoder and decoder do 44 % less work. The decoder then
sees the top-left cells of the positional-encoding grid (their training positions), and low-resolution logits
are ``(4 gh, 4 gw)`` (144 x 256 for that frame) instead of 256 x 256. Results are close to, not equal to, the
padded mode's (the encoder's attention windows see the image instead of padding near the bottom / right edge);
:attr:`Predictor.low_res_size` says the size of the current image's logits.

This module is the one place that turns original-image pixels into model-input pixels and back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .embedding import ImageEmbedding
from .errors import ModelError, PromptError
from .images import load_image, resize_to_input, resized_shape
from .masks import low_res_extent, upscale_logits
from .models import ModelSpec
from .modeling import Sam
from .prompts import Prompts, check_prompts
from .runtime import DECODE_CHUNK, PADDING_LOGIT, OnnxRunner, onnx_prompt_arrays, resolve_backend

if TYPE_CHECKING:  # pragma: no cover
    from .session import InteractiveSession






def _prompt_slice(prompts: Prompts, start: int, stop: int) -> Prompts:
    """Prompts ``start:stop`` of a batch."""
    def part(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[start:stop]

    return Prompts(part(prompts.points), part(prompts.labels), part(prompts.boxes), part(prompts.mask_input),
                   prompts.batched)


class Predictor:
    """Segment one image at a time from point, box and mask prompts, SAM style.

    Example::

        predictor = Predictor(load_model("mobile_sam"))
        predictor.set_image("photo.jpg")
        masks, scores, logits = predictor.predict(points=[(320, 240)], labels=[1])
        # masks: (3, H, W) bool; scores: (3,); logits: (3, 256, 256)
    """

    def __init__(self, model: Sam, spec: ModelSpec | None = None, backend: str = "auto",
                 pad_to_square: bool = True, pad_multiple: int | None = None) -> None:
        """Args:
        model: a network from :func:`anymask.load_model`.
        spec: its :class:`~anymask.models.ModelSpec`; taken from ``model.spec`` when not given.
        backend: ``"auto"`` (default: the fastest that meets the accuracy bar, ``"onnx"`` when onnxruntime is
            installed and the model is on the CPU), ``"torch"`` (exact float32 PyTorch), ``"onnx"`` (float32
            onnxruntime graphs, exported and cached on first use; masks IoU >= 0.999 against torch) or
            ``"onnx-int8"`` (int8 encoder). See :mod:`anymask.runtime`.
        pad_to_square: pad the resized image to the model's square input (default, SAM's behaviour and the
            reference's results) or only to a multiple of the encoder's stride (faster on non-square images,
            results close to but not equal to the padded ones; see the module docstring). :meth:`set_image`
            can override it per image.
        pad_multiple: without ``pad_to_square``, pad to a multiple of this many pixels (default: the encoder's
            stride, 16 px for MobileSAM; a multiple of it).
        """
        spec = spec or getattr(model, "spec", None)
        if spec is None:
            raise ModelError("the model has no spec: build it with anymask.load_model() or pass spec=")
        self.model = model.eval()
        self.spec: ModelSpec = spec
        if getattr(model, "spec", None) is None:
            model.spec = spec
        #: the backend in use: "torch", "onnx" or "onnx-int8"
        self.backend: str = resolve_backend(backend, model)
        self._runner: OnnxRunner | None = None
        if self.backend != "torch":
            self._runner = OnnxRunner(model, quantize="int8" if self.backend == "onnx-int8" else None)
        self.pad_to_square = bool(pad_to_square)
        stride = self.encoder_stride
        if pad_multiple is not None and (pad_multiple < stride or pad_multiple % stride):
            raise ModelError(f"pad_multiple must be a multiple of the encoder's stride ({stride}), got {pad_multiple}")
        self.pad_multiple: int = pad_multiple or stride
        self._embedding: ImageEmbedding | None = None
        self._features: torch.Tensor | None = None
        # the decoder's first block on this image's side (see :class:`~anymask.modeling.transformer.PreparedImage`):
        # torch tensors, or the onnx runner's arrays; made on the image's first prompt without a mask input
        self._prepared = None

    @property
    def device(self) -> torch.device:
        """Device the model runs on."""
        return self.model.device

    @property
    def encoder_stride(self) -> int:
        """Input pixels per embedding cell (16 for SAM / MobileSAM, 4 for LiteMedSAM)."""
        return self.spec.image_size // self.model.prompt_encoder.image_embedding_size[0]

    def embedding_grid(self, input_size: tuple[int, int], pad_to_square: bool) -> tuple[int, int]:
        """``(gh, gw)`` of the embedding of an image resized to ``input_size = (h, w)``."""
        if pad_to_square:
            return tuple(self.model.prompt_encoder.image_embedding_size)  # type: ignore[return-value]
        stride, multiple = self.encoder_stride, getattr(self, "pad_multiple", self.encoder_stride)
        size = self.spec.image_size  # never past the square input (whose positions the model knows)
        return tuple(min(-(-side // multiple) * multiple, size) // stride for side in input_size)  # type: ignore

    @property
    def low_res_size(self) -> tuple[int, int]:
        """``(lh, lw)`` of the current image's low-resolution logits: ``(256, 256)``, or ``4 x`` the embedding
        grid of an unpadded image (e.g. ``(144, 256)`` for a 16:9 frame). Raises PromptError if no image is set."""
        gh, gw = self.embedding.features.shape[-2:]
        return 4 * int(gh), 4 * int(gw)

    # ---------------------------------------------------------------------------------------------------
    # Image
    # ---------------------------------------------------------------------------------------------------

    def preprocess(self, image: np.ndarray, pad_to_square: bool | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Resize (longest side to the model's size), normalise and pad an RGB image.

        Resizing is bilinear (PIL, as SAM and MobileSAM do) or area-averaging (OpenCV ``INTER_AREA``, as
        LiteMedSAM does), by the model's spec.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            pad_to_square: pad to ``S x S`` (default: the predictor's ``pad_to_square``) or only to a multiple
                of :attr:`encoder_stride`.

        Returns:
            ``(1, 3, S, S)`` float32 tensor (S = ``spec.image_size``, zero padding at the bottom and right;
            ``(1, 3, stride * gh, stride * gw)`` unpadded) and the resized size ``(h, w)`` before padding.
        """
        pad = self.pad_to_square if pad_to_square is None else pad_to_square
        resized = self.resize(image)
        h, w = resized.shape[:2]
        x = torch.from_numpy(resized).to(self.device).permute(2, 0, 1)[None].float()
        if self.spec.normalization == "min_max":
            low, high = x.min(), x.max()
            x = (x - low) / torch.clamp(high - low, min=1e-8)
        else:
            mean = torch.tensor(self.spec.pixel_mean, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(self.spec.pixel_std, device=self.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        gh, gw = self.embedding_grid((h, w), pad)
        stride = self.encoder_stride
        x = F.pad(x, (0, stride * gw - w, 0, stride * gh - h))
        return x, (h, w)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB resized so that its longer side is ``spec.image_size`` (aspect kept), uint8.

        Bilinear (PIL, as SAM and MobileSAM) or area-averaging (OpenCV ``INTER_AREA``, as LiteMedSAM), by the
        model's spec. This is the input of the exported encoder graph.
        """
        return resize_to_input(image, self.spec.image_size, self.spec.resize)

    @torch.inference_mode()
    def set_image(self, image: Any, pad_to_square: bool | None = None) -> ImageEmbedding:
        """Run the image encoder on ``image`` and keep its embedding for :meth:`predict`.

        Args:
            image: a file path, a ``PIL.Image`` or an ``(H, W, 3)`` uint8 RGB array (other layouts are
                converted by the rules of :func:`anymask.images.load_image`).
            pad_to_square: override the predictor's ``pad_to_square`` for this image.

        Returns:
            The :class:`ImageEmbedding` (a copy: changing it does not change this predictor), which can be
            saved and given back with :meth:`set_embedding`.
        """
        rgb = load_image(image)
        pad = self.pad_to_square if pad_to_square is None else bool(pad_to_square)
        # The last image's decoder inputs are dropped before the encoder runs (a failure restores them from the
        # embedding). With the onnx backend they are views of blocks of onnxruntime's arena (the features, and
        # the prepared image side, ~24 MB for MobileSAM): kept, they sat among the encoder's activations and the
        # arena grew around them (the speed benchmark's session: peak RSS about 12 MB lower for each of the two).
        self._prepared = self._features = None
        try:
            if self._runner is not None:
                resized = self.resize(rgb)
                input_size = (int(resized.shape[0]), int(resized.shape[1]))
                multiple = None if self.pad_multiple == self.encoder_stride else self.pad_multiple
                features = torch.from_numpy(self._runner.encode(resized, pad_to_square=pad, pad_multiple=multiple))
            else:
                x, input_size = self.preprocess(rgb, pad)
                features = self.model.image_encoder(x)
            embedding = ImageEmbedding(
                features=features.float().cpu().numpy().copy(),
                original_size=(int(rgb.shape[0]), int(rgb.shape[1])),
                input_size=input_size,
                model=self.spec.name,
            )
        except BaseException:
            if self._embedding is not None:
                self._features = self._features_of(self._embedding)
            raise
        self._embedding, self._features = embedding, features
        return embedding

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Use a previously computed embedding (e.g. from :meth:`ImageEmbedding.load`) without the encoder.

        Raises:
            ModelError: the embedding was made by another model, or its sizes do not fit this model.
        """
        if embedding.model != self.spec.name:
            raise ModelError(f"embedding was made by {embedding.model!r}, this predictor runs {self.spec.name!r}")
        problem = embedding.problem()
        expected_input = resized_shape(*embedding.original_size, self.spec.image_size)
        # any padding from the encoder's stride (smallest grid) up to the square input (full grid) is valid
        smallest, full = self.embedding_grid(expected_input, False), self.embedding_grid(expected_input, True)
        if self.pad_multiple != self.encoder_stride:
            smallest = tuple(-(-side // self.encoder_stride) for side in expected_input)
        grid = tuple(embedding.features.shape[-2:])
        if problem is None and not all(low <= g <= high for g, low, high in zip(grid, smallest, full)):
            problem = f"features grid {grid}, this model gives {smallest} to {full} for this image"
        if problem is None and tuple(embedding.input_size) != expected_input:
            problem = f"input_size {embedding.input_size}, expected {expected_input} for {embedding.original_size}"
        if problem:
            raise ModelError(f"embedding does not fit this predictor: {problem}")
        self._embedding, self._prepared = embedding, None
        self._features = self._features_of(embedding)

    def _features_of(self, embedding: ImageEmbedding) -> torch.Tensor:
        """The embedding's features as the decoder takes them (the model's dtype and device; a copy)."""
        dtype = next(self.model.parameters()).dtype
        return torch.tensor(np.asarray(embedding.features), dtype=dtype, device=self.device)

    @property
    def embedding(self) -> ImageEmbedding:
        """The current image's embedding. Raises :class:`PromptError` if no image is set."""
        if self._embedding is None:
            raise PromptError("no image is set: call set_image() or set_embedding() first")
        return self._embedding

    def reset_image(self) -> None:
        """Forget the current image."""
        self._embedding, self._features, self._prepared = None, None, None

    # ---------------------------------------------------------------------------------------------------
    # Prompts
    # ---------------------------------------------------------------------------------------------------

    def predict(
        self,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for prompts on the current image.

        Args:
            points: ``(N, 2)`` ``(x, y)`` pixels, or ``(B, N, 2)`` for a batch of B prompts. With a batch of
                boxes, ``(N, 2)`` points are shared by every box.
            labels: ``(N,)`` (or ``(B, N)``) values 1 = foreground, 0 = background; default all foreground.
            box: one XYXY box ``(4,)`` or several ``(B, 4)``. Several boxes give one set of masks per box.
            mask_input: low-resolution logits from an earlier call, ``(1, 256, 256)`` / ``(256, 256)``, or
                ``(B, 1, 256, 256)`` for a batch (a 4-D mask input always makes the call a batch); for an image
                encoded without padding, of :attr:`low_res_size` instead of ``256 x 256``.
            multimask: return 3 candidate masks per prompt (best for ambiguous single clicks) instead of 1.
            return_logits: return full-resolution float logits instead of bool masks.

        Returns:
            ``(masks, scores, logits)``. For a single prompt: ``masks (C, H, W)`` bool, ``scores (C,)``
            predicted IoU, ``logits (C, 256, 256)``; for a batch of B prompts (a 2-D ``box``, 3-D
            ``points`` or 4-D ``mask_input``): ``(B, C, H, W)``, ``(B, C)``, ``(B, C, 256, 256)``.
            C is 3 with ``multimask`` else 1.

        Raises:
            PromptError: no image set, no prompt, or malformed / out-of-range prompts.
        """
        prompts = check_prompts(points, labels, box, mask_input, image_size=self.embedding.original_size,
                                low_res_size=self.low_res_size)
        masks, scores, low_res = self._decode(prompts, multimask, return_logits)
        masks_np = masks.float().cpu().numpy() if return_logits else masks.cpu().numpy().astype(bool, copy=False)
        scores_np, low_np = scores.float().cpu().numpy(), low_res.float().cpu().numpy()
        if not prompts.batched:
            return masks_np[0], scores_np[0], low_np[0]
        return masks_np, scores_np, low_np

    def predict_low_res(
        self,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask: bool = True,
        precision: str = "fp32",
        image_only: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode prompts to low-resolution logits only, without upsampling to the image size.

        This is the fast path for code that decides *which* masks it wants before paying for full-resolution
        masks (the automatic mask generator, interactive sessions, video propagation). Arguments are those of
        :meth:`predict`, and:

        - ``precision``: ``"fp32"`` (exact), or ``"int8"`` for the mask upscaling in int8 (onnx backends,
          prompts without ``mask_input``; faster, masks close to but not identical to float32's);
        - ``image_only``: compute the logits only where upsampling them to the image reads them (the cells over
          the resized image, and the low-res row and column after it that bilinear interpolation reads), not
          over the rest of the square padding, which then holds :data:`~anymask.runtime.PADDING_LOGIT`. The
          masks from :meth:`masks_from_low_res` are the same; a non-square image decodes faster (a 4:3 photo
          skips about a quarter of the mask upscaling, a 16:9 frame 40 %). Leave it off for logits that go back
          into the model as ``mask_input`` (the padding's logits are part of that prompt). Prompts without
          ``mask_input``, folded decoder (the default).

        Returns:
            ``(low_res_logits, scores)``, always batch-first: ``(B, C, 256, 256)`` float32 logits in the frame
            of the resized and padded model input, and ``(B, C)`` float32 predicted IoU (B = 1 for a single
            prompt); ``(B, C) + low_res_size`` for an image encoded without padding. Turn logits into masks with
            :meth:`masks_from_low_res`.
        """
        prompts = check_prompts(points, labels, box, mask_input, image_size=self.embedding.original_size,
                                low_res_size=self.low_res_size)
        if precision != "fp32" and (self._runner is None or prompts.mask_input is not None):
            raise ModelError(f"precision {precision!r} needs an onnx backend (this predictor's is {self.backend!r}) "
                             "and prompts without mask_input")
        grid = self.image_cells() if image_only and prompts.mask_input is None else None
        low_res, scores = self._decode_low_res(prompts, multimask, precision, grid)
        return low_res.float().cpu().numpy(), scores.float().cpu().numpy()

    def image_cells(self) -> tuple[int, int]:
        """``(rows, cols)``: the embedding grid cells whose low-res logits the upsampling to the current image
        reads (:meth:`predict_low_res` with ``image_only``).

        Bilinear upsampling with half-pixel centres reads, for the image's last pixel row ``h - 1`` of the model
        input frame, low-res rows ``floor((h - 0.5) / f - 0.5)`` and the one after it (``f`` the upsampling
        factor, 4): the rows up to that one, and the cells (4 x 4 logits each) that hold them, are needed.
        """
        grid = tuple(int(n) for n in self.embedding.features.shape[-2:])
        factor = self.spec.image_size // self.model.prompt_encoder.mask_input_size[0]
        read = low_res_extent(self.low_res_size, factor, self.embedding.input_size)  # low-res rows, columns
        rows, cols = (min(count, -(-n // (low // count))) for n, low, count in zip(read, self.low_res_size, grid))
        return rows, cols

    @torch.inference_mode()
    def masks_from_low_res(self, low_res_logits: Any, return_logits: bool = False) -> np.ndarray:
        """Upsample low-resolution logits ``(..., 256, 256)`` (``(..., lh, lw)``) to the current image: ``(..., H, W)``.

        Returns bool masks (logits above the model's threshold), or float32 logits with ``return_logits``.

        The same resizes as :meth:`upscale` (bilinear, half-pixel centres, no antialiasing), done with OpenCV on
        the CPU one map at a time: logits agree with :meth:`upscale`'s to float rounding (~1e-6) at a fraction
        of the cost for the few masks a caller keeps (a video frame's objects).
        """
        low = np.asarray(low_res_logits, dtype=np.float32)
        lead = low.shape[:-2]
        maps = low.reshape(-1, *low.shape[-2:])
        height, width = self.embedding.original_size
        out = np.empty((len(maps), height, width), dtype=np.float32 if return_logits else bool)
        for i, logits in enumerate(maps):
            full = self._upscale_map(logits)
            out[i] = full if return_logits else full > self.model.mask_threshold
        return out.reshape(*lead, height, width)

    def _upscale_map(self, logits: np.ndarray) -> np.ndarray:
        """One ``(lh, lw)`` float32 low-res map -> ``(H, W)`` logits (OpenCV, as :meth:`upscale`)."""
        factor = self.spec.image_size // self.model.prompt_encoder.mask_input_size[0]
        return upscale_logits(logits, factor, self.embedding.input_size, self.embedding.original_size)

    @torch.inference_mode()
    def _decode_low_res(self, prompts: Prompts, multimask: bool, precision: str = "fp32",
                        upscale_grid: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder on validated prompts: low-res logits ``(B, C, 256, 256)``, scores.

        Large batches are decoded :data:`DECODE_CHUNK` prompts at a time: the decoder holds several
        ``(B, 4096, 256)`` float32 copies of the image side and the upscaled features per prompt, and chunks keep
        the peak memory bounded at no cost in speed (a chunk's matrix products are already large).
        ``upscale_grid``: see :meth:`predict_low_res` (``image_only``) and :meth:`image_cells`.
        """
        batch = len(next(a for a in (prompts.points, prompts.boxes, prompts.mask_input) if a is not None))
        if batch > DECODE_CHUNK:
            parts = [self._decode_low_res(_prompt_slice(prompts, start, start + DECODE_CHUNK), multimask, precision,
                                          upscale_grid) for start in range(0, batch, DECODE_CHUNK)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        if self._runner is not None and (prompts.points is not None or prompts.boxes is not None):
            return self._decode_low_res_onnx(prompts, multimask, precision, upscale_grid)
        device, dtype = self.device, self._features.dtype
        scale = self._scale()
        points_t = boxes_t = masks_t = None
        if prompts.points is not None:
            points_t = (
                torch.as_tensor(prompts.points * scale, dtype=dtype, device=device),
                torch.as_tensor(prompts.labels, dtype=torch.int64, device=device),
            )
        if prompts.boxes is not None:
            boxes_t = torch.as_tensor((prompts.boxes.reshape(-1, 2, 2) * scale).reshape(-1, 4), dtype=dtype,
                                      device=device)
        if prompts.mask_input is not None:
            masks_t = torch.as_tensor(prompts.mask_input, dtype=dtype, device=device)
        grid = tuple(self._features.shape[-2:])
        sparse, dense = self.model.prompt_encoder(points=points_t, boxes=boxes_t, masks=masks_t, grid=grid)
        image_pe = self.model.prompt_encoder.get_dense_pe(grid)
        cells = upscale_grid if masks_t is None else None
        low_res, scores = self.model.mask_decoder(
            image_embeddings=self._features,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            prepared=(self._prepared_image(lambda: self.model.mask_decoder.prepare(self._features, image_pe, dense))
                      if masks_t is None else None),
            upscale_grid=None if cells is None else torch.tensor(cells, dtype=torch.int64),
        )
        full = (4 * grid[0], 4 * grid[1])
        if tuple(low_res.shape[-2:]) != full:  # only the cells of upscale_grid were computed
            low_res = F.pad(low_res, (0, full[1] - low_res.shape[-1], 0, full[0] - low_res.shape[-2]),
                            value=PADDING_LOGIT)
        return low_res, scores

    def _prepared_image(self, make: Callable[[], Any]) -> Any:
        """The decoder's prepared image side for prompts without mask input, made by ``make()`` on the image's
        first such prompt and kept with the embedding; None in the plain formulation (``transformer.fold =
        False``, which keeps SAM's order of operations).

        Preparing costs about 0.81 GFLOP once per image (MobileSAM) and saves about 0.35 GFLOP per prompt (more
        for long ones): it pays from the third prompt on an image. It is done on the first one all the same, so
        that a prompt's result never depends on what was asked before on the image (the two paths agree to
        float32 rounding only).
        """
        if not getattr(self.model.mask_decoder.transformer, "fold", False):
            return None
        if self._prepared is None:
            self._prepared = make()
        return self._prepared

    def _decode_low_res_onnx(self, prompts: Prompts, multimask: bool, precision: str = "fp32",
                             upscale_grid: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_decode_low_res` in onnxruntime: prompts as the decoder graph takes them (original pixels,
        box corners labelled 2 and 3, one padding point labelled -1 when there is no box)."""
        coords, labels = onnx_prompt_arrays(prompts)
        features = self._features.numpy()
        prepared = None
        if prompts.mask_input is None:
            prepared = self._prepared_image(lambda: self._runner.prepare(features))
        low_res, iou = self._runner.decode(
            features, coords, labels, prompts.mask_input, self.embedding.original_size, precision, prepared,
            grid=upscale_grid,
        )
        selected = slice(1, None) if multimask else slice(0, 1)
        # copies: onnxruntime's outputs are views of its arena, and a kept view pins its block there (the other
        # chunks of a batch, the logits a caller keeps for its next click) while later runs grow the arena around it
        return torch.from_numpy(np.array(low_res[:, selected])), torch.from_numpy(np.array(iou[:, selected]))

    @torch.inference_mode()
    def _decode(self, prompts: Prompts, multimask: bool, return_logits: bool):
        """Run prompt encoder + mask decoder on validated prompts (batch-first) and upsample the masks."""
        low_res, scores = self._decode_low_res(prompts, multimask)
        if low_res.device.type == "cpu":
            # OpenCV, one map at a time: the same resizes as upscale() (logits within ~1e-6), 4-5x faster than
            # torch here (3 masks of an 854 x 480 photo: 0.75 against 3.6 ms), one (H, W) float map at a time
            full = self.masks_from_low_res(low_res.float().numpy(), return_logits=return_logits)
            return torch.from_numpy(full), scores, low_res
        if return_logits:
            return self.upscale(low_res), scores, low_res
        # one map at a time: only one (H, W) float map exists at once, the result is bool
        batch, count = low_res.shape[:2]
        masks = torch.empty((batch, count, *self.embedding.original_size), dtype=torch.bool, device=low_res.device)
        for i in range(batch):
            for j in range(count):
                torch.gt(self.upscale(low_res[i : i + 1, j : j + 1])[0, 0], self.model.mask_threshold, out=masks[i, j])
        return masks, scores, low_res

    def _scale(self) -> np.ndarray:
        """Factors ``(sx, sy)`` from original-image pixels to model-input pixels."""
        (height, width), (h, w) = self.embedding.original_size, self.embedding.input_size
        return np.array([w / width, h / height], dtype=np.float64)

    def upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        """Low-res logits ``(B, C, lh, lw)`` -> logits ``(B, C, H, W)`` at the original image size.

        The logits cover the padded model input (``S x S``, or ``stride x`` the embedding grid of an unpadded
        image): they are upsampled to it, cropped to the resized image and resized to the original.
        """
        factor = self.spec.image_size // self.model.prompt_encoder.mask_input_size[0]
        h, w = self.embedding.input_size
        frame = (factor * low_res.shape[-2], factor * low_res.shape[-1])
        x = F.interpolate(low_res, frame, mode="bilinear", align_corners=False)
        x = x[..., :h, :w]
        if (h, w) == tuple(self.embedding.original_size):  # the identity resize (scale 1, half-pixel centres)
            return x
        return F.interpolate(x, self.embedding.original_size, mode="bilinear", align_corners=False)

    def session(self, image: Any = None, **options: Any) -> "InteractiveSession":
        """An :class:`~anymask.session.InteractiveSession` (clicks, box, undo) on the current image.

        Pass the same RGB ``image`` to enable zoom-in refinement; ``options`` go to the session
        (``strategy=``, ``encode_crop=``).
        """
        from .session import InteractiveSession

        return InteractiveSession(self, image, **options)


__all__ = ["Predictor", "ImageEmbedding", "resized_shape"]
