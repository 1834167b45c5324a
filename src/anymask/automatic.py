"""Segment everything: :class:`AutomaticMaskGenerator`, SAM's automatic mask generator made fast on a CPU.

A grid of single-click prompts is decoded over the image (and optionally over crops of it); candidate masks
are kept when the model's predicted IoU and the mask's stability are high, then duplicates are removed by
box NMS. Parameters and their meanings are those of ``segment_anything.SamAutomaticMaskGenerator``.

What makes it fast without changing what it finds:

* candidates are filtered on predicted IoU and on a *low-resolution* stability score first (the decoder's
  ``(256, 256)`` logits); only survivors (and those within ``stability_prefilter_margin`` of the cut-off) are
  upsampled, where the stability score is computed again at full resolution, exactly as SAM does, to decide;
* each decode chunk is filtered and its survivors decided at once, upsampling goes in chunks and masks are kept
  as COCO RLE, so memory is bounded by the chunk sizes, not by the number of prompts;
* NMS is vectorised per kept box (memory grows with the candidates, not their square); RLE encoding goes through
  pycocotools.

One option changes results and is off by default: ``skip_covered_points`` decodes the grid coarse-to-fine and
skips grid points that already lie inside a mask accepted with predicted IoU >= ``skip_iou_thresh``.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from .amg_utils import (
    box_nms,
    build_all_layer_point_grids,
    coarse_to_fine_order,
    decode_rle_bytes,
    encode_rles,
    generate_crop_boxes,
    is_box_near_crop_edge,
    masks_to_boxes_torch,
    release_free_memory,
    rle_from_window,
    upscale_window,
    rle_to_uncompressed,
)
from .errors import ModelError, PromptError
from .images import load_image
from .masks import remove_small_regions, stability_score
from .predictor import Predictor
from .runtime import DECODER_PRECISIONS

logger = logging.getLogger(__name__)

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
TIMING_KEYS = ("encoder", "decoder", "filter", "upsample", "rle", "nms", "postprocess")


def _check_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PromptError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v > high or v < low or (low_open and v == low):
        bracket = "(" if low_open else "["
        raise PromptError(f"{name} must lie in {bracket}{low:g}, {high:g}], got {value!r}")
    return v


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise PromptError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class AutomaticMaskGenerator:
    """Masks for every object in an image from a grid of click prompts (SAM's "segment everything").

    Example::

        generator = AutomaticMaskGenerator(load_model("mobile_sam"))
        records = generator.generate("photo.jpg")
        # records[i]["segmentation"]: (H, W) bool; "bbox": XYWH; "predicted_iou", "stability_score", ...
    """

    #: upsample each candidate only in its mask's window when the model input is the image itself (same
    #: results; False forces the full resize, for tests and comparisons)
    _window_upsampling = True

    def __init__(
        self,
        model: Any,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        *,
        stability_prefilter_margin: float = 0.05,
        skip_covered_points: bool = False,
        skip_iou_thresh: float = 0.95,
        upsample_chunk: int = 8,
        decode_chunk: int = 4,
        precision: str = "fp32",
    ) -> None:
        """Args (SAM's, same meanings and defaults):
        model: a network from :func:`anymask.load_model` or a :class:`~anymask.Predictor`.
        points_per_side: the grid has ``points_per_side ** 2`` click prompts over the image (or crop);
            give ``None`` to use ``point_grids`` instead (exactly one of the two).
        points_per_batch: prompts processed together (SAM's batch; with ``skip_covered_points`` the points to skip
            are updated after each batch). Memory is bounded by ``decode_chunk`` and ``upsample_chunk`` within it,
            not by this or by the number of prompts.
        pred_iou_thresh: keep masks whose predicted IoU is above this, in ``[0, 1]`` (0 = no filter).
        stability_score_thresh: keep masks whose stability score (IoU of the mask thresholded at
            ``+offset`` and ``-offset`` logits) is at least this, in ``[0, 1]`` (0 = no filter).
        stability_score_offset: the logit offset of the stability score, >= 0.
        box_nms_thresh: box IoU above which the lower-scored of two masks is dropped, in ``(0, 1]``.
        crop_n_layers: extra layers of image crops; layer ``i`` has ``(2 ** i) ** 2`` crops (0 = whole image).
        crop_nms_thresh: box IoU for removing duplicates between crops (smaller crops win), in ``(0, 1]``.
        crop_overlap_ratio: overlap of neighbouring crops in the first crop layer, as a share of the image's
            short side, in ``[0, 1)``.
        crop_n_points_downscale_factor: layer ``i`` uses ``points_per_side / factor ** i`` points a side.
        point_grids: one ``(N, 2)`` array of ``(x, y)`` points normalised to ``[0, 1]`` per layer.
        min_mask_region_area: if > 0, **holes and islands inside each mask** smaller than this many pixels
            are removed (filled / erased), as SAM does; it does *not* drop whole masks smaller than the
            area. Masks that changed are then de-duplicated again by NMS.
        output_mode: ``"binary_mask"`` (``(H, W)`` bool arrays), ``"uncompressed_rle"``
            (``{"size", "counts": [runs]}``, column-major) or ``"coco_rle"`` (``{"size", "counts": str}``).
        stability_prefilter_margin: candidates whose low-resolution stability is below
            ``stability_score_thresh - margin`` are dropped without upsampling; the others are decided at full
            resolution as in SAM. Larger is closer to SAM and slower.
        skip_covered_points: decode the grid coarse-to-fine and skip grid points inside the finest mask accepted
            for an earlier prompt when its predicted IoU >= ``skip_iou_thresh`` (faster; **changes results**,
            off by default).
        skip_iou_thresh: see ``skip_covered_points``.
        upsample_chunk: candidate masks upsampled to full resolution at a time (bounds memory).
        decode_chunk: prompts given to the mask decoder at once. The decoder's activations grow with it
            (its upscaling alone holds ``32 x 256 x 256`` floats, 8 MB, per prompt), so it bounds the peak memory;
            a batch of ``points_per_batch`` prompts is decoded in such chunks, each filtered and decided at once.
        precision: ``"fp32"`` (exact), or ``"int8"``: the decoder's mask upscaling in int8 (onnx backends only;
            faster, **changes results** slightly, see docs/everything.md for the measured agreement).

        Raises:
            PromptError: a parameter is out of range.
        """
        self._configure(
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            point_grids=point_grids,
            min_mask_region_area=min_mask_region_area,
            output_mode=output_mode,
            stability_prefilter_margin=stability_prefilter_margin,
            skip_covered_points=skip_covered_points,
            skip_iou_thresh=skip_iou_thresh,
            upsample_chunk=upsample_chunk,
            decode_chunk=decode_chunk,
            precision=precision,
        )
        self.predictor = model if isinstance(model, Predictor) else Predictor(model)
        if self.precision != "fp32" and self.predictor.backend == "torch":
            raise ModelError(f"precision={self.precision!r} needs an onnx backend; the predictor's is 'torch'")
        #: counts and seconds per stage of the last :meth:`generate` call
        self.last_stats: dict[str, Any] = {}

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """Validate generator options (the keyword arguments of ``__init__`` without ``model``) with no model.

        Raises:
            PromptError: an option is out of range.
        """
        params = inspect.signature(cls.__init__).parameters
        unknown = sorted(set(options) - set(params) - {"self", "model"})
        if unknown:
            raise TypeError(f"unknown generator options: {', '.join(unknown)}")
        values = {name: options.get(name, p.default) for name, p in params.items() if name not in ("self", "model")}
        cls.__new__(cls)._configure(**values)

    def _configure(
        self,
        *,
        points_per_side: Any,
        points_per_batch: Any,
        pred_iou_thresh: Any,
        stability_score_thresh: Any,
        stability_score_offset: Any,
        box_nms_thresh: Any,
        crop_n_layers: Any,
        crop_nms_thresh: Any,
        crop_overlap_ratio: Any,
        crop_n_points_downscale_factor: Any,
        point_grids: Any,
        min_mask_region_area: Any,
        output_mode: Any,
        stability_prefilter_margin: Any,
        skip_covered_points: Any,
        skip_iou_thresh: Any,
        upsample_chunk: Any,
        decode_chunk: Any,
        precision: Any,
    ) -> None:
        """Validate every option (no defaults here: they live in ``__init__``'s signature) and store it."""
        if (points_per_side is None) == (point_grids is None):
            raise PromptError("give exactly one of points_per_side and point_grids")
        self.crop_n_layers = _check_int("crop_n_layers", crop_n_layers, 0)
        self.crop_n_points_downscale_factor = _check_int(
            "crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1)
        if points_per_side is not None:
            _check_int("points_per_side", points_per_side, 1)
            if int(points_per_side / self.crop_n_points_downscale_factor**self.crop_n_layers) < 1:
                raise PromptError("points_per_side / crop_n_points_downscale_factor ** crop_n_layers must be >= 1")
            self.point_grids = build_all_layer_point_grids(
                int(points_per_side), self.crop_n_layers, self.crop_n_points_downscale_factor)
        else:
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]  # type: ignore[union-attr]
            if len(grids) != self.crop_n_layers + 1:
                raise PromptError(f"point_grids needs one grid per layer ({self.crop_n_layers + 1}), got {len(grids)}")
            for g in grids:
                if g.ndim != 2 or g.shape[1] != 2 or len(g) == 0 or not np.all((g >= 0) & (g <= 1)):
                    raise PromptError("each point grid must be a non-empty (N, 2) array of values in [0, 1]")
            self.point_grids = grids
        self.points_per_batch = _check_int("points_per_batch", points_per_batch, 1)
        self.pred_iou_thresh = _check_range("pred_iou_thresh", pred_iou_thresh, 0, 1)
        self.stability_score_thresh = _check_range("stability_score_thresh", stability_score_thresh, 0, 1)
        self.stability_score_offset = _check_range("stability_score_offset", stability_score_offset, 0, math.inf)
        self.box_nms_thresh = _check_range("box_nms_thresh", box_nms_thresh, 0, 1, low_open=True)
        self.crop_nms_thresh = _check_range("crop_nms_thresh", crop_nms_thresh, 0, 1, low_open=True)
        self.crop_overlap_ratio = _check_range("crop_overlap_ratio", crop_overlap_ratio, 0, 1)
        if self.crop_overlap_ratio >= 1:
            raise PromptError(f"crop_overlap_ratio must be below 1, got {crop_overlap_ratio!r}")
        self.min_mask_region_area = _check_int("min_mask_region_area", min_mask_region_area, 0)
        if output_mode not in OUTPUT_MODES:
            raise PromptError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        self.output_mode = output_mode
        self.stability_prefilter_margin = _check_range("stability_prefilter_margin", stability_prefilter_margin, 0, 1)
        self.skip_covered_points = bool(skip_covered_points)
        self.skip_iou_thresh = _check_range("skip_iou_thresh", skip_iou_thresh, 0, 1)
        self.upsample_chunk = _check_int("upsample_chunk", upsample_chunk, 1)
        self.decode_chunk = _check_int("decode_chunk", decode_chunk, 1)
        if precision not in DECODER_PRECISIONS:
            raise PromptError(f"precision must be one of {', '.join(DECODER_PRECISIONS)}, got {precision!r}")
        self.precision = precision

    # -------------------------------------------------------------------------------------------- public

    @torch.inference_mode()
    def generate(self, image: Any) -> list[dict[str, Any]]:
        """Find every mask in ``image``.

        Args:
            image: a file path, ``PIL.Image`` or ``(H, W, 3)`` uint8 RGB array.

        Returns:
            One record per mask, by decreasing score (SAM's keys and conventions):
            ``segmentation`` (per ``output_mode``), ``area`` (int pixels), ``bbox`` (XYWH from the inclusive
            pixel box, ``w = x1 - x0`` as in SAM), ``predicted_iou``, ``point_coords`` (``[[x, y]]`` pixels of
            the click that made it), ``stability_score``, ``crop_box`` (XYWH of the crop it came from).
        """
        rgb = load_image(image)
        orig_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        self.last_stats = {"timings": dict.fromkeys(TIMING_KEYS, 0.0), "prompts": 0, "skipped": 0,
                           "candidates": 0, "upsampled": 0}
        start = time.perf_counter()
        crop_boxes, layers = generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        parts = [self._process_crop(rgb, box, layer, orig_size) for box, layer in zip(crop_boxes, layers)]
        data = {k: [v for p in parts for v in p[k]] if k == "rles" else np.concatenate([p[k] for p in parts])
                for k in parts[0]}
        t = time.perf_counter()
        if len(crop_boxes) > 1 and len(data["rles"]):
            cb = data["crop_boxes"].astype(np.float64)
            keep = box_nms(data["boxes"], 1.0 / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])), self.crop_nms_thresh)
            data = _take(data, keep)
        self._tick("nms", t)
        t = time.perf_counter()
        if self.min_mask_region_area > 0 and len(data["rles"]):
            data = self._remove_small_regions(data, max(self.box_nms_thresh, self.crop_nms_thresh))
        self._tick("postprocess", t)
        records = self._records(data)
        self.last_stats["masks"] = len(records)
        self.last_stats["total"] = time.perf_counter() - start
        release_free_memory()
        return records

    # ------------------------------------------------------------------------------------------ pipeline

    def _tick(self, key: str, since: float) -> float:
        now = time.perf_counter()
        self.last_stats["timings"][key] += now - since
        return now

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int, orig_size: tuple[int, int]) -> dict:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        release_free_memory()  # the encoder's activations then start from the live memory, not a high-water mark
        t = time.perf_counter()
        # SAM's square padding whatever the predictor's own setting: the grid and filters assume 256 x 256 logits
        self.predictor.set_image(crop, pad_to_square=True)
        self._tick("encoder", t)
        points = self.point_grids[layer] * np.array(crop.shape[:2])[None, ::-1]
        order = coarse_to_fine_order(len(points)) if self.skip_covered_points else np.arange(len(points))
        pending = np.ones(len(points), dtype=bool)
        batches = []
        position = 0
        while position < len(order):
            chosen = []
            while position < len(order) and len(chosen) < self.points_per_batch:
                if pending[order[position]]:
                    chosen.append(order[position])
                position += 1
            if not chosen:
                break
            pending[chosen] = False
            probe = order[position:][pending[order[position:]]] if self.skip_covered_points else None
            batch, covered = self._process_batch(points[chosen], crop_box, orig_size, points[probe] if probe is not None else None)
            if probe is not None and covered is not None and covered.any():
                pending[probe[covered]] = False
                self.last_stats["skipped"] += int(covered.sum())
            batches.append(batch)
        data = {k: [v for b in batches for v in b[k]] if k == "rles" else np.concatenate([b[k] for b in batches])
                for k in batches[0]}
        self.predictor.reset_image()
        t = time.perf_counter()
        keep = box_nms(data["boxes"], data["iou"], self.box_nms_thresh)
        data = _take(data, keep)
        data["boxes"] = data["boxes"] + np.array([x0, y0, x0, y0])
        data["points"] = data["points"] + np.array([x0, y0])
        data["crop_boxes"] = np.tile(np.array(crop_box, dtype=np.int64), (len(keep), 1))
        self._tick("nms", t)
        return data

    def _process_batch(self, points: np.ndarray, crop_box: list[int], orig_size: tuple[int, int],
                       probe: np.ndarray | None) -> tuple[dict, np.ndarray | None]:
        """Decode ``(B, 2)`` points (crop pixels); return the kept candidates and which ``probe`` points they cover."""
        predictor, stats = self.predictor, self.last_stats
        threshold = float(predictor.model.mask_threshold)
        rles: list = []
        out_idx, boxes, stabs = [], [], []
        cover_rows: list[np.ndarray] = []
        areas: list[np.ndarray] = []
        orig_h, orig_w = orig_size
        cx0, cy0, cx1, cy1 = crop_box
        pad = (cx0, orig_w - cx1, cy0, orig_h - cy1)
        direct = self._window_upsampling and (
            tuple(predictor.embedding.input_size) == tuple(predictor.embedding.original_size))
        t = time.perf_counter()

        def upsample(low: np.ndarray, idx: np.ndarray) -> None:
            """Decide on ``(K, 256, 256)`` surviving logits (candidates ``idx`` of the batch) at full resolution."""
            nonlocal t
            low_t = torch.from_numpy(low)
            for s in range(0, len(idx), self.upsample_chunk):
                part = idx[s:s + self.upsample_chunk]
                if direct:  # one resize, only where each mask can reach; RLE from that window (same masks)
                    self._direct_chunk(low[s:s + self.upsample_chunk], part, threshold, crop_box, orig_size, probe,
                                       rles, out_idx, boxes, stabs, cover_rows, areas)
                    t = self._tick("rle", t)
                    continue
                full = predictor.upscale(low_t[s:s + self.upsample_chunk][:, None])[:, 0]  # (n, h_crop, w_crop)
                stab = stability_score(full, threshold, self.stability_score_offset)
                ok = (stab >= self.stability_score_thresh).numpy() if self.stability_score_thresh > 0 else np.ones(len(part), bool)
                masks = full[torch.from_numpy(ok)] > threshold
                del full
                box = masks_to_boxes_torch(masks).numpy()
                edge_ok = ~is_box_near_crop_edge(box, crop_box, [0, 0, orig_w, orig_h])
                masks, box = masks[torch.from_numpy(edge_ok)], box[edge_ok]
                t = self._tick("upsample", t)
                if probe is not None and len(masks):
                    px = np.clip(probe[:, 0].astype(np.int64), 0, masks.shape[2] - 1)
                    py = np.clip(probe[:, 1].astype(np.int64), 0, masks.shape[1] - 1)
                    cover_rows.append(masks[:, py, px].numpy())
                    areas.append(masks.sum(dim=(1, 2)).numpy())
                if any(pad):
                    masks = F.pad(masks, pad, value=False)
                rles.extend(encode_rles(masks.numpy()))
                out_idx.append(part[ok][edge_ok])
                boxes.append(box)
                stabs.append(stab.numpy()[ok][edge_ok])
                t = self._tick("rle", t)

        # Decode in chunks; filter each chunk at once (predicted IoU, then low-resolution stability) and decide on
        # its survivors straight away: the batch never holds its candidates' logits (64 prompts x 3 masks: 50 MB,
        # and as much again for each copy the filters made), only one chunk's.
        # the low-res logits' part that covers the image (the rest is the square padding)
        h, w = predictor.embedding.input_size
        scale = predictor.low_res_size[1] / predictor.spec.image_size
        lh, lw = math.ceil(h * scale), math.ceil(w * scale)
        all_scores = []
        n_out = 0
        offset = 0
        for chunk in np.array_split(points, math.ceil(len(points) / self.decode_chunk)):
            # image_only: the logits of the square padding's grid cells are never read (same records)
            low, scores = predictor.predict_low_res(points=chunk[:, None, :], labels=np.ones((len(chunk), 1), np.int64),
                                                    precision=self.precision, image_only=True)
            t = self._tick("decoder", t)
            n_out = low.shape[1]
            low_t = torch.from_numpy(low).flatten(0, 1)  # (n * 3, 256, 256)
            iou = scores.reshape(-1)
            keep = iou > self.pred_iou_thresh if self.pred_iou_thresh > 0 else np.ones(len(iou), dtype=bool)
            if self.stability_score_thresh > 0:
                idx = np.flatnonzero(keep)
                low_stab = stability_score(low_t[idx, :lh, :lw], threshold, self.stability_score_offset).numpy()
                keep[idx[low_stab < self.stability_score_thresh - self.stability_prefilter_margin]] = False
            idx = np.flatnonzero(keep)
            survivors = low_t[idx].numpy()  # (K, 256, 256), a copy: the chunk's logits are freed
            del low, low_t
            t = self._tick("filter", t)
            stats["upsampled"] += len(idx)
            upsample(survivors, offset + idx)
            all_scores.append(scores)
            offset += len(iou)
        stats["prompts"] += len(points)
        iou = np.concatenate(all_scores).reshape(-1)
        pts = np.repeat(points, n_out, axis=0)
        stats["candidates"] += len(iou)
        chosen = np.concatenate(out_idx) if out_idx else np.zeros(0, dtype=np.int64)
        batch = {
            "rles": rles,
            "boxes": np.concatenate(boxes) if boxes else np.zeros((0, 4), dtype=np.int64),
            "iou": iou[chosen].astype(np.float64),
            "stability": np.concatenate(stabs).astype(np.float64) if stabs else np.zeros(0),
            "points": pts[chosen],
        }
        if probe is None:
            return batch, None
        return batch, self._covered(chosen // n_out, iou[chosen], cover_rows, areas, len(probe))

    def _direct_chunk(self, low: np.ndarray, part: np.ndarray, threshold: float, crop_box: list[int],
                      orig_size: tuple[int, int], probe: np.ndarray | None, rles: list, out_idx: list, boxes: list,
                      stabs: list, cover_rows: list, areas: list) -> None:
        """:meth:`_process_batch`'s upsampling of ``(n, lh, lw)`` candidates ``part`` when the model input is the
        crop itself: stability, filters and RLE from each mask's window, appended to the given lists."""
        t = time.perf_counter()
        stab, windows, box = self._upsample_direct(low, threshold)
        ok = stab >= self.stability_score_thresh if self.stability_score_thresh > 0 else np.ones(len(part), bool)
        ok &= ~is_box_near_crop_edge(box, crop_box, [0, 0, orig_size[1], orig_size[0]])
        sel = np.flatnonzero(ok)
        t = self._tick("upsample", t)
        h, w = self.predictor.embedding.input_size
        if probe is not None and len(sel):
            px = np.clip(probe[:, 0].astype(np.int64), 0, w - 1)
            py = np.clip(probe[:, 1].astype(np.int64), 0, h - 1)
            rows = np.zeros((len(sel), len(probe)), dtype=bool)
            for row, i in zip(rows, sel):
                window, y0, x0 = windows[i]
                inside = (py >= y0) & (py < y0 + window.shape[0]) & (px >= x0) & (px < x0 + window.shape[1])
                row[inside] = window[py[inside] - y0, px[inside] - x0]
            cover_rows.append(rows)
            areas.append(np.array([np.count_nonzero(windows[i][0]) for i in sel], dtype=np.int64))
        cx0, cy0 = crop_box[0], crop_box[1]
        rles.extend(rle_from_window(windows[i][0], cy0 + windows[i][1], cx0 + windows[i][2], *orig_size) for i in sel)
        out_idx.append(part[sel])
        boxes.append(box[sel])
        stabs.append(stab[sel])

    def _upsample_direct(self, low: np.ndarray, threshold: float) -> tuple[np.ndarray, list, np.ndarray]:
        """Full-resolution stability scores ``(n,)``, masks and XYXY boxes ``(n, 4)`` of ``(n, lh, lw)`` low-res
        logits, when the model input is the image itself (one bilinear resize, no second one).

        Each mask comes as ``(window, y0, x0)``: a bool window of the ``(h, w)`` input frame at row ``y0``, column
        ``x0``, outside which the mask is empty (an empty ``(0, 0)`` window for an empty mask).
        """
        h, w = self.predictor.embedding.input_size
        offset = self.stability_score_offset
        factor = self.predictor.spec.image_size // low.shape[-1]
        stabs = np.zeros(len(low), dtype=np.float32)
        windows: list = [(np.zeros((0, 0), dtype=bool), 0, 0)] * len(low)
        boxes = np.zeros((len(low), 4), dtype=np.int64)
        for i, logits in enumerate(low):
            region = upscale_window(logits, factor, threshold - offset, h, w)
            if region is None:
                continue
            up, y0, x0 = region
            n_low = np.count_nonzero(up > threshold - offset)
            stabs[i] = np.count_nonzero(up > threshold + offset) / n_low if n_low else 0.0
            mask = up > threshold
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if len(rows):
                windows[i] = (mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], y0 + int(rows[0]), x0 + int(cols[0]))
                boxes[i] = (x0 + cols[0], y0 + rows[0], x0 + cols[-1], y0 + rows[-1])
        return stabs, windows, boxes

    def _covered(self, prompt: np.ndarray, iou: np.ndarray, cover_rows: list, areas: list, n_probe: int) -> np.ndarray:
        """Probe points to skip: those inside the *smallest* accepted mask of a prompt, when that mask is confident.

        Using only each prompt's finest accepted mask keeps points that lie in a confident whole object but
        outside the part its prompt found: those points may find other parts.
        """
        covered = np.zeros(n_probe, dtype=bool)
        if not cover_rows:
            return covered
        rows, area = np.concatenate(cover_rows), np.concatenate(areas)
        for p in np.unique(prompt):
            mine = np.flatnonzero(prompt == p)
            finest = mine[np.argmin(area[mine])]
            if iou[finest] >= self.skip_iou_thresh:
                covered |= rows[finest]
        return covered

    def _remove_small_regions(self, data: dict, nms_thresh: float) -> dict:
        """SAM's post-processing: fill small holes, erase small islands in each mask; re-run NMS."""
        new_masks, unchanged = [], []
        for rle in data["rles"]:
            mask = decode_rle_bytes(rle)
            mask, changed_holes = remove_small_regions(mask, self.min_mask_region_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, self.min_mask_region_area, mode="islands")
            new_masks.append(mask)
            unchanged.append(float(not (changed_holes or changed_islands)))
        masks_t = torch.from_numpy(np.stack(new_masks))
        boxes = masks_to_boxes_torch(masks_t).numpy()
        keep = box_nms(boxes, np.array(unchanged), nms_thresh)
        for i in keep:
            if unchanged[i] == 0.0:
                data["rles"][i] = encode_rles(new_masks[i][None])[0]
                data["boxes"][i] = boxes[i]
        return _take(data, keep)

    def _records(self, data: dict) -> list[dict[str, Any]]:
        records = []
        for i, rle in enumerate(data["rles"]):
            if self.output_mode == "coco_rle":
                counts = rle["counts"]
                seg: Any = {"size": [int(v) for v in rle["size"]],
                            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
            elif self.output_mode == "binary_mask":
                seg = decode_rle_bytes(rle)
            else:
                seg = rle_to_uncompressed(rle)
            x0, y0, x1, y1 = (int(v) for v in data["boxes"][i])
            cx0, cy0, cx1, cy1 = (int(v) for v in data["crop_boxes"][i])
            records.append({
                "segmentation": seg,
                "area": int(mask_utils.area(rle)),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "predicted_iou": float(data["iou"][i]),
                "point_coords": [[float(data["points"][i][0]), float(data["points"][i][1])]],
                "stability_score": float(data["stability"][i]),
                "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
            })
        return records


def _take(data: dict, keep: np.ndarray) -> dict:
    """Rows ``keep`` of every field (``rles`` is a list, the others arrays)."""
    return {k: [v[i] for i in keep] if k == "rles" else v[keep] for k, v in data.items()}


__all__ = ["AutomaticMaskGenerator", "OUTPUT_MODES"]
