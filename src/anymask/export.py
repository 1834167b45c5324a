"""ONNX graphs of a SAM-family model: an encoder graph and decoder graphs, plus a JSON that describes them.

Graphs (all float32 unless ``quantize="int8"``; see ``docs/onnx.md`` for the full contract):

``encoder.onnx``
    ``image`` ``(h, w, 3)`` uint8 RGB, *already resized* so that its longer side is the model's input size
    (1024 for SAM / MobileSAM; resize with PIL bilinear, or OpenCV area for LiteMedSAM, exactly as
    :meth:`anymask.Predictor.preprocess` does) -> ``image_embeddings`` ``(1, 256, 64, 64)``. Normalisation and
    zero padding to the square input happen inside the graph. The resize stays outside: PIL's bilinear filter
    (an antialiasing filter when shrinking) has no exact ONNX equivalent. The runtime also exports, per input
    shape, encoders that pad only to a multiple of the encoder's stride (``pad_to_square=False``, see
    :mod:`anymask.predictor`): ``(h, w, 3)`` fixed -> ``(1, 256, ceil(h / 16), ceil(w / 16))``.
``decoder.onnx``
    SAM's ONNX decoder contract, extended: ``image_embeddings``, ``point_coords`` ``(B, N, 2)`` (x, y) pixels
    of the *original* image, ``point_labels`` ``(B, N)`` (1 foreground, 0 background, 2 / 3 box top-left /
    bottom-right corner, -1 padding), ``mask_input`` ``(B, 1, 256, 256)``, ``has_mask_input`` ``(B,)``,
    ``orig_im_size`` ``(2,)`` int64 (H, W), ``multimask`` ``(1,)`` int64 (1: the 3 alternatives, 0: the
    single mask) -> ``masks`` ``(B, C, H, W)`` logits, ``iou_predictions`` ``(B, C)``, ``low_res_masks``
    ``(B, C, 256, 256)``. Any B, N, H and W. The embedding grid may also be smaller than ``64 x 64`` (an image
    encoded without padding): ``image_embeddings`` ``(1, 256, gh, gw)``, ``mask_input`` and ``low_res_masks``
    ``(..., 4 gh, 4 gw)``; the positional encoding is the top-left ``gh x gw`` part of the full grid's.

The runtime (:mod:`anymask.runtime`) uses lighter decoder graphs (``full_res=False``): they return all four
mask tokens at low resolution, and have a variant without mask input whose image side is shared by the batch.
For prompts without a mask input it splits that variant in two (:func:`export_prepared_decoder`):
``decoder_prepare.onnx`` runs once per image (``image_embeddings`` -> the first block's image side,
:class:`~anymask.modeling.transformer.PreparedImage`) and ``decoder_prepared.onnx`` decodes prompts with it
(same results, about 16 % fewer multiply-adds per prompt).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .errors import ModelError
from .fileio import atomic_write_text
from .modeling import Sam
from .runtime import PREDICTOR_GRAPHS

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17


class EncoderGraph(nn.Module):
    """Resized uint8 image ``(h, w, 3)`` -> image embedding ``(1, C, 64, 64)`` (normalise, pad, encode).

    With ``pad_to_square=False`` the image is padded only to a multiple of the encoder's stride and the
    embedding is ``(1, C, ceil(h / stride), ceil(w / stride))``; such a graph is exported for one input shape.
    """

    def __init__(self, model: Sam, pad_to_square: bool = True, pad_multiple: int | None = None) -> None:
        super().__init__()
        spec = model.spec
        self.encoder = model.image_encoder
        self.size = spec.image_size
        self.pad_to_square = pad_to_square
        self.multiple = pad_multiple or spec.image_size // model.prompt_encoder.image_embedding_size[0]
        self.min_max = spec.normalization == "min_max"
        self.register_buffer("mean", torch.tensor(spec.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.pixel_std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(2, 0, 1).unsqueeze(0).float()
        if self.min_max:
            low, high = x.min(), x.max()
            x = (x - low) / torch.clamp(high - low, min=1e-8)
        else:
            x = (x - self.mean) / self.std
        h, w = x.shape[-2], x.shape[-1]
        if self.pad_to_square:
            x = F.pad(x, (0, self.size - w, 0, self.size - h))
        else:  # static shape: these are Python ints when exported for one shape
            pad_w, pad_h = (min(-int(side) % self.multiple, self.size - int(side)) for side in (w, h))
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.encoder(x)


class DecoderGraph(nn.Module):
    """Prompts in original-image pixels -> mask logits and IoU predictions (see the module docstring).

    Args:
        model: the network.
        full_res: upsample the selected masks to ``orig_im_size`` and select by the ``multimask`` input (the
            exported, user-facing graph); else return all mask tokens at low resolution (the runtime's graph).
        mask_input: take ``mask_input`` / ``has_mask_input``; without, the image side is shared by the batch.
    """

    def __init__(self, model: Sam, full_res: bool = True, mask_input: bool = True) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.size = model.spec.image_size
        self.full_res = full_res
        self.mask_input = mask_input
        self.register_buffer("image_pe", model.prompt_encoder.get_dense_pe().detach().clone())

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        embedding = pe.pe_layer.forward_with_coords(coords + 0.5, pe.input_image_size)
        kind = labels.unsqueeze(-1)
        embedding = torch.where(kind == -1, pe.not_a_point_embed.weight, embedding)
        for index in range(pe.num_point_embeddings):
            embedding = torch.where(kind == index, embedding + pe.point_embeddings[index].weight, embedding)
        return embedding

    def _resized_size(self, orig_im_size: torch.Tensor) -> torch.Tensor:
        """``(h, w)`` int64 of the image resized to the model's input size (SAM's rounding)."""
        size = orig_im_size.to(torch.float32)
        scale = self.size / torch.max(size)
        return torch.clamp(torch.floor(size * scale + 0.5), min=1).to(torch.int64)

    def forward(self, image_embeddings, point_coords, point_labels, mask_input=None, has_mask_input=None,
                orig_im_size=None, multimask=None):
        resized = self._resized_size(orig_im_size)
        scale = resized.to(torch.float32) / orig_im_size.to(torch.float32)  # (sy, sx)
        coords = point_coords * torch.stack([scale[1], scale[0]])
        sparse = self._embed_points(coords, point_labels.to(torch.int64))
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        if self.mask_input:
            flag = has_mask_input.reshape(-1, 1, 1, 1)
            dense = flag * self.prompt_encoder.mask_downscaling(mask_input) + (1 - flag) * no_mask
        else:
            dense = no_mask
        # the grid may be smaller than the full one (an unpadded image): its cells keep their training positions
        image_pe = self.image_pe[:, :, : image_embeddings.shape[2], : image_embeddings.shape[3]]
        low_res, iou = self.mask_decoder.predict_masks(image_embeddings, image_pe, sparse, dense)
        if not self.full_res:
            return low_res, iou
        start = multimask.reshape(()).to(torch.int64)
        stop = 1 + 3 * start
        low_res, iou = low_res[:, start:stop], iou[:, start:stop]
        factor = float(self.size // self.prompt_encoder.mask_input_size[0])
        masks = F.interpolate(low_res, scale_factor=factor, mode="bilinear", align_corners=False)
        masks = masks[..., : resized[0], : resized[1]]
        masks = F.interpolate(masks, (orig_im_size[0], orig_im_size[1]), mode="bilinear", align_corners=False)
        return masks, iou, low_res


PREPARED_NAMES = ["keys", "key_pe", "block_keys", "block_values", "block_queries", "upscale_base_0", "upscale_base_1"]


class DecoderPrepareGraph(nn.Module):
    """``image_embeddings`` ``(1, C, gh, gw)`` -> the decoder's prepared image side for prompts without a mask
    input: the :data:`PREPARED_NAMES` tensors, ``(1, gh * gw, C)`` and, split into heads, ``(1, H, gh * gw, D / H)``."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.register_buffer("image_pe", model.prompt_encoder.get_dense_pe().detach().clone())

    def forward(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image_pe = self.image_pe[:, :, : image_embeddings.shape[2], : image_embeddings.shape[3]]
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return tuple(self.mask_decoder.prepare(image_embeddings, image_pe, no_mask))


class PreparedDecoderGraph(DecoderGraph):
    """The runtime's decoder without mask input, given :class:`DecoderPrepareGraph`'s outputs (low-res logits of
    all mask tokens, as ``DecoderGraph(full_res=False, mask_input=False)``). ``image_embeddings`` is read only
    for its grid size.

    Exported with an ``upscale_grid`` ``(2,)`` int64 ``(rows, cols)`` input as well (the cropped decoder), it
    returns the mask logits of the first ``rows x cols`` grid cells only, ``(B, 4, 4 rows, 4 cols)``: the same
    values as that corner of the whole grid's (see :func:`~anymask.modeling.mask_upscaling.upscaled_mask_logits`).
    The automatic mask generator asks for the cells that cover the image and skips the square padding's."""

    def __init__(self, model: Sam) -> None:
        super().__init__(model, full_res=False, mask_input=False)

    def forward(self, image_embeddings, point_coords, point_labels, orig_im_size, keys, key_pe, block_keys,
                block_values, block_queries, upscale_base_0, upscale_base_1, upscale_grid=None):
        from .modeling.transformer import PreparedImage

        resized = self._resized_size(orig_im_size)
        scale = resized.to(torch.float32) / orig_im_size.to(torch.float32)  # (sy, sx)
        coords = point_coords * torch.stack([scale[1], scale[0]])
        sparse = self._embed_points(coords, point_labels.to(torch.int64))
        prepared = PreparedImage(keys, key_pe, block_keys, block_values, block_queries, upscale_base_0, upscale_base_1)
        return self.mask_decoder.predict_masks(image_embeddings, None, sparse, None, prepared=prepared,
                                               upscale_grid=upscale_grid)


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_axes: dict, opset: int) -> None:
    """Trace ``module`` to ``path`` (written atomically) with the TorchScript-based exporter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), args, tmp, input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
                              do_constant_folding=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_encoder(model: Sam, path: str | os.PathLike, opset: int = DEFAULT_OPSET,
                   shape: tuple[int, int] | None = None, pad_multiple: int | None = None) -> Path:
    """Write the encoder graph (input ``image`` ``(h, w, 3)`` uint8, output ``image_embeddings``).

    Without ``shape`` the graph pads to the square input and takes any resized image; with ``shape = (h, w)``
    it takes only images of that shape and pads them to a multiple of ``pad_multiple`` px only (default: the
    encoder's stride).
    """
    path = Path(path)
    size = model.spec.image_size
    if shape is None:
        dummy = torch.randint(0, 256, (size * 3 // 4, size, 3), dtype=torch.uint8)
        _export(EncoderGraph(model), (dummy,), path, ["image"], ["image_embeddings"],
                {"image": {0: "height", 1: "width"}}, opset)
    else:
        dummy = torch.randint(0, 256, (int(shape[0]), int(shape[1]), 3), dtype=torch.uint8)
        _export(EncoderGraph(model, pad_to_square=False, pad_multiple=pad_multiple), (dummy,), path, ["image"],
                ["image_embeddings"], {}, opset)
    return path


def export_decoder(model: Sam, path: str | os.PathLike, full_res: bool = True, mask_input: bool = True,
                   opset: int = DEFAULT_OPSET) -> Path:
    """Write a decoder graph (see :class:`DecoderGraph` for ``full_res`` and ``mask_input``)."""
    path = Path(path)
    grid = model.prompt_encoder.image_embedding_size
    low = model.prompt_encoder.mask_input_size
    embed = torch.randn(1, model.prompt_encoder.embed_dim, *grid)
    coords = torch.randint(0, 600, (2, 3, 2)).float()
    labels = torch.tensor([[1, 0, -1], [2, 3, 1]], dtype=torch.float32)
    args: list = [embed, coords, labels]
    names = ["image_embeddings", "point_coords", "point_labels"]
    axes: dict = {"image_embeddings": {2: "grid_height", 3: "grid_width"},
                  "point_coords": {0: "batch", 1: "num_points"}, "point_labels": {0: "batch", 1: "num_points"}}
    low_axes = {0: "batch", 2: "low_res_height", 3: "low_res_width"}
    if mask_input:
        args += [torch.randn(2, 1, *low), torch.tensor([1.0, 0.0])]
        names += ["mask_input", "has_mask_input"]
        axes.update({"mask_input": low_axes, "has_mask_input": {0: "batch"}})
    else:
        args += [None, None]
    args.append(torch.tensor([480, 640], dtype=torch.int64))
    names.append("orig_im_size")
    if full_res:
        args.append(torch.tensor([1], dtype=torch.int64))
        names.append("multimask")
        outputs = ["masks", "iou_predictions", "low_res_masks"]
        axes.update({"masks": {0: "batch", 1: "num_masks", 2: "height", 3: "width"},
                     "iou_predictions": {0: "batch", 1: "num_masks"}, "low_res_masks": {**low_axes, 1: "num_masks"}})
    else:
        outputs = ["low_res_masks", "iou_predictions"]
        axes.update({"low_res_masks": low_axes, "iou_predictions": {0: "batch"}})
    graph = DecoderGraph(model, full_res=full_res, mask_input=mask_input)
    kwargs_order = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input",
                    "orig_im_size", "multimask"]
    values = dict(zip(kwargs_order, args))
    call_args = tuple(values.get(name) for name in kwargs_order[: len(args)])
    _export(graph, call_args, path, names, outputs, axes, opset)
    return path


def export_prepared_decoder(model: Sam, prepare_path: str | os.PathLike, decoder_path: str | os.PathLike,
                            opset: int = DEFAULT_OPSET, cropped_path: str | os.PathLike | None = None
                            ) -> tuple[Path, Path]:
    """Write the runtime's two-part decoder for prompts without a mask input (see the module docstring).

    ``prepare_path``: ``image_embeddings`` -> :data:`PREPARED_NAMES`. ``decoder_path``: ``image_embeddings``,
    ``point_coords``, ``point_labels``, ``orig_im_size`` and the prepared tensors -> ``low_res_masks``
    ``(B, 4, 4 gh, 4 gw)``, ``iou_predictions`` ``(B, 4)``. ``cropped_path`` (optional): the same decoder with an
    ``upscale_grid`` input as well (see :class:`PreparedDecoderGraph`).
    """
    prepare_path, decoder_path = Path(prepare_path), Path(decoder_path)
    grid = model.prompt_encoder.image_embedding_size
    embed = torch.randn(1, model.prompt_encoder.embed_dim, *grid)
    # keys, key_pe (1, N, C); block_values split into heads (1, H, N, d); block_keys, block_queries (1, H, d, N);
    # upscale_base_0, upscale_base_1 (1, N, 2 C1)
    axis = {"keys": 1, "key_pe": 1, "block_keys": 3, "block_values": 2, "block_queries": 3, "upscale_base_0": 1,
            "upscale_base_1": 1}
    token_axes = {name: {axis[name]: "num_tokens"} for name in PREPARED_NAMES}
    prepare = DecoderPrepareGraph(model)
    _export(prepare, (embed,), prepare_path, ["image_embeddings"], PREPARED_NAMES,
            {"image_embeddings": {2: "grid_height", 3: "grid_width"}, **token_axes}, opset)
    with torch.no_grad():
        prepared = prepare(embed)
    coords = torch.randint(0, 600, (2, 3, 2)).float()
    labels = torch.tensor([[1, 0, -1], [2, 3, 1]], dtype=torch.float32)
    size = torch.tensor([480, 640], dtype=torch.int64)
    names = ["image_embeddings", "point_coords", "point_labels", "orig_im_size", *PREPARED_NAMES]
    axes = {"image_embeddings": {2: "grid_height", 3: "grid_width"},
            "point_coords": {0: "batch", 1: "num_points"}, "point_labels": {0: "batch", 1: "num_points"},
            **token_axes,
            "low_res_masks": {0: "batch", 2: "low_res_height", 3: "low_res_width"}, "iou_predictions": {0: "batch"}}
    _export(PreparedDecoderGraph(model), (embed, coords, labels, size, *prepared), decoder_path, names,
            ["low_res_masks", "iou_predictions"], axes, opset)
    if cropped_path is not None:
        axes["low_res_masks"] = {0: "batch", 2: "low_res_rows", 3: "low_res_cols"}
        _export(PreparedDecoderGraph(model), (embed, coords, labels, size, *prepared, torch.tensor([40, 50])),
                Path(cropped_path), [*names, "upscale_grid"], ["low_res_masks", "iou_predictions"], axes, opset)
    return prepare_path, decoder_path


def quantize_int8(source: str | os.PathLike, target: str | os.PathLike, per_channel: bool = True,
                  only: list[str] | None = None) -> Path:
    """Dynamic int8 quantisation of the weight MatMuls of ``source``, written to ``target``.

    ``per_channel``: one scale per output channel (onnxruntime-web 1.30's ``MatMulIntegerToFloat`` rejects these:
    pass False for graphs that run in the browser). ``only``: quantise just the MatMul nodes of these names.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source))
    constants = {i.name for i in graph.graph.initializer}
    constants |= {o for n in graph.graph.node if n.op_type == "Constant" for o in n.output}
    exclude = [n.name for n in graph.graph.node
               if n.op_type in ("MatMul", "Gemm", "Conv") and n.input[1] not in constants]
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        quantize_dynamic(str(source), tmp, weight_type=QuantType.QInt8, per_channel=per_channel,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude,
                         nodes_to_quantize=[n for n in only if n not in exclude] if only is not None else None)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def upscaling_matmuls(source: str | os.PathLike) -> list[str]:
    """Names of the mask upscaling's weight MatMuls in a decoder graph (a :class:`ModelError` if not found).

    The upscaling (two 2x2 transposed convolutions as matrix products over every pixel, each split into its two
    kernel rows, see :mod:`anymask.modeling.mask_upscaling`) is about 40% of a decoder call's arithmetic: one
    product per kernel row of the first convolution, one per path ``(i1, i2)`` of the second. Their weights are
    plain 2-D matrices at the graph's top level: six. In a decoder with the image side prepared the first
    convolution's product is factored (:class:`~anymask.modeling.mask_upscaling.FactoredTokens`): its products
    with weights are over a few dozen rows, not the pixels, and only the second convolution's four are returned.
    """
    import onnx

    graph = onnx.load(str(source))
    weights = {i.name: tuple(i.dims) for i in graph.graph.initializer}
    candidates = [n for n in graph.graph.node
                  if n.op_type == "MatMul" and n.name.count("/") == 1 and len(weights.get(n.input[1], ())) == 2
                  and weights[n.input[1]][0] >= 64]
    widest = max((weights[n.input[1]][0] for n in candidates), default=0)
    first = [n.name for n in candidates if weights[n.input[1]][0] == widest]  # C rows
    second = [n.name for n in candidates if weights[n.input[1]][0] < widest]  # C / 4 rows
    if len(second) != 4 or len(first) < 2:
        raise ModelError(f"expected the mask upscaling's weight MatMuls in {source}, found "
                         f"{[n.name for n in candidates]}")
    return first + second if len(first) == 2 else second


def quantize_upscaling_int8(source: str | os.PathLike, target: str | os.PathLike,
                            per_channel: bool = True) -> Path:
    """Dynamic int8 quantisation of only the mask upscaling's weight MatMuls (both transposed convolutions) of a
    decoder graph.

    The transformer's matrix products stay float32: quantising them too moved mask logits by up to 6.6 (masks down
    to IoU 0.89 against float32), the upscaling alone by up to 2.9 (IoU >= 0.97).
    """
    return quantize_int8(source, target, per_channel=per_channel, only=upscaling_matmuls(source))


def describe(model: Sam, quantize: str | None, opset: int) -> dict:
    """The JSON description of the exported graphs (inputs, outputs, conventions)."""
    spec = model.spec
    return {
        "model": spec.name, "anymask_version": __version__, "opset": opset, "quantize": quantize,
        "image_size": spec.image_size, "resize": spec.resize, "normalization": spec.normalization,
        "mask_threshold": float(model.mask_threshold),
        "low_res_size": [int(side) for side in model.prompt_encoder.mask_input_size],
        # for anymask.onnx_predictor.OnnxPredictor: role -> file (low-res decoders, see the module docstring)
        "runtime_graphs": dict(PREDICTOR_GRAPHS),
        "encoder": {
            "file": "encoder.onnx",
            "inputs": {"image": {"dtype": "uint8", "shape": ["height", "width", 3],
                                 "meaning": f"RGB resized so that max(height, width) == {spec.image_size} "
                                            f"({spec.resize} resize); normalised and padded inside"}},
            "outputs": {"image_embeddings": {"dtype": "float32", "shape": [1, 256, 64, 64]}},
        },
        "decoder": {
            "file": "decoder.onnx",
            "inputs": {
                "image_embeddings": {"dtype": "float32", "shape": [1, 256, "grid_height", "grid_width"],
                                     "meaning": "64 x 64 from encoder.onnx; smaller grids (unpadded images) "
                                                "are accepted too"},
                "point_coords": {"dtype": "float32", "shape": ["batch", "num_points", 2],
                                 "meaning": "(x, y) pixels of the original image"},
                "point_labels": {"dtype": "float32", "shape": ["batch", "num_points"],
                                 "meaning": "1 foreground, 0 background, 2 box top-left, 3 box bottom-right, "
                                            "-1 padding (add one padding point when there is no box)"},
                "mask_input": {"dtype": "float32", "shape": ["batch", 1, "4 grid_height", "4 grid_width"],
                               "meaning": "low_res_masks of an earlier call"},
                "has_mask_input": {"dtype": "float32", "shape": ["batch"], "meaning": "1 to use mask_input"},
                "orig_im_size": {"dtype": "int64", "shape": [2], "meaning": "(height, width) of the original"},
                "multimask": {"dtype": "int64", "shape": [1], "meaning": "1: 3 alternatives, 0: one mask"},
            },
            "outputs": {
                "masks": {"dtype": "float32", "shape": ["batch", "num_masks", "height", "width"],
                          "meaning": "logits at the original size; mask = logits > mask_threshold"},
                "iou_predictions": {"dtype": "float32", "shape": ["batch", "num_masks"]},
                "low_res_masks": {"dtype": "float32",
                                  "shape": ["batch", "num_masks", "4 grid_height", "4 grid_width"]},
            },
        },
    }


def export_model(model: Sam, out_dir: str | os.PathLike, quantize: str | None = None,
                 opset: int = DEFAULT_OPSET) -> dict[str, Path]:
    """Write ``encoder.onnx``, ``decoder.onnx``, ``model.json`` and the low-res decoder graphs of
    :class:`~anymask.onnx_predictor.OnnxPredictor` to ``out_dir``; return their paths.

    With ``quantize="int8"`` the encoder's weight MatMuls are quantised (dynamic int8, per channel).
    """
    if quantize not in (None, "int8"):
        raise ModelError(f"quantize must be None or 'int8', not {quantize!r}")
    if getattr(model, "spec", None) is None:
        raise ModelError("the model has no spec: build it with anymask.load_model()")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder = export_encoder(model, out / "encoder.onnx", opset=opset)
    if quantize == "int8":
        quantize_int8(encoder, encoder)
    decoder = export_decoder(model, out / "decoder.onnx", full_res=True, mask_input=True, opset=opset)
    # the graphs of anymask.onnx_predictor.OnnxPredictor (the runtime's own: low-res logits, image side prepared)
    prepare, prepared = export_prepared_decoder(model, out / PREDICTOR_GRAPHS["decoder_prepare"],
                                                out / PREDICTOR_GRAPHS["decoder_prepared"], opset=opset)
    mask_input = export_decoder(model, out / PREDICTOR_GRAPHS["decoder_mask_input"], full_res=False,
                                mask_input=True, opset=opset)
    meta = atomic_write_text(out / "model.json", json.dumps(describe(model, quantize, opset), indent=2) + "\n")
    return {"encoder": encoder, "decoder": decoder, "decoder_prepare": prepare, "decoder_prepared": prepared,
            "decoder_mask_input": mask_input, "json": meta}


__all__ = ["EncoderGraph", "DecoderGraph", "export_encoder", "export_decoder", "export_model", "quantize_int8",
           "quantize_upscaling_int8", "upscaling_matmuls", "describe"]
