"""``anymask export``: ONNX graphs of a model (encoder and decoder) and a JSON describing them."""

from __future__ import annotations

import argparse
import logging

from .common import add_model_arguments, load_model_from_args

logger = logging.getLogger("anymask")


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the command and its options."""
    cmd = commands.add_parser(
        "export",
        parents=[common],
        help="export a model to ONNX (encoder and decoder graphs)",
        description="Write DIR/encoder.onnx (input: the RGB image as uint8 (h, w, 3), already resized so that its "
        "longer side is the model's input size; normalisation and padding are inside), DIR/decoder.onnx (points "
        "with labels incl. box corners, a batch of prompts, mask input, multimask switch and the original image "
        "size as inputs; masks at that size as outputs), DIR/model.json describing both, and the low-resolution decoder "
        "graphs that anymask.onnx_predictor.OnnxPredictor runs without torch (decoder_prepare.onnx, "
        "decoder_low_res_prepared.onnx, decoder_low_res.onnx). See docs/onnx.md.",
    )
    cmd.add_argument("model", help="model name: mobile_sam (alias vit_t), vit_b, vit_l, vit_h, lite_medsam")
    cmd.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write the graphs to")
    cmd.add_argument("--quantize", choices=("int8",), default=None,
                     help="int8: quantise the encoder's weight MatMuls (dynamic int8, per channel); default: float32")
    cmd.add_argument("--opset", type=int, default=None, metavar="N",
                     help="ONNX opset version (default: 17; 16 or newer)")
    add_model_arguments(cmd, model=False)


def run(args: argparse.Namespace) -> int:
    from ..errors import ModelError
    from ..export import DEFAULT_OPSET, export_model
    from ..runtime import onnxruntime_available

    opset = args.opset or DEFAULT_OPSET
    if opset < 16:
        raise ModelError(f"--opset {opset} is too old: the graphs need opset 16 or newer")
    if args.quantize and not onnxruntime_available():
        raise ModelError("--quantize needs the onnxruntime and onnx packages")
    model = load_model_from_args(args)
    paths = export_model(model, args.output, quantize=args.quantize, opset=opset)
    for path in paths.values():
        print(path)
    return 0
