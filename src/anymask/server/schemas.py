"""Request and response bodies of the HTTP API (pydantic models; they make the OpenAPI schema at ``/docs``).

Coordinates are pixels of the original image: points ``(x, y)`` (x = column), boxes XYXY, bboxes COCO XYWH.
Masks travel as COCO compressed RLE (``{"size": [H, W], "counts": str}``, column-major, as pycocotools).
Unknown fields are errors (HTTP 422), so a misspelt option is never silently ignored.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Point = Annotated[list[float], Field(min_length=2, max_length=2, description="(x, y) pixels")]
Box = Annotated[list[float], Field(min_length=4, max_length=4, description="XYXY pixels")]

#: prompts in one request at most (points per prompt, boxes per request)
MAX_POINTS = 64
MAX_BOXES = 64


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RLE(BaseModel):
    """COCO compressed run-length encoding of one mask."""

    size: list[int] = Field(description="[H, W]")
    counts: str = Field(description="pycocotools' compressed counts string")


class EmbeddingInfo(BaseModel):
    url: str = Field(description="where GET returns the embedding as raw little-endian bytes")
    shape: list[int]
    dtype: str


class ImageInfo(BaseModel):
    """The answer to an upload: the image's id and what the server computed for it."""

    id: str = Field(description="the image's id in later requests (a hash of the model and the file)")
    width: int
    height: int
    model: str
    input_size: list[int] = Field(description="[h, w] after resizing the longer side to the model's input size")
    cached: bool = Field(description="the embedding was already in the cache (the same file was uploaded)")
    encode_ms: float = Field(description="time the image encoder took, milliseconds")
    embedding: EmbeddingInfo


class SegmentRequest(_Strict):
    """Prompts for ``POST /v1/images/{id}/segment`` (at least one of points, box, boxes, mask_input)."""

    points: list[Point] | None = Field(None, max_length=MAX_POINTS, description="clicks, (x, y) pixels")
    labels: list[int] | None = Field(None, max_length=MAX_POINTS,
                                     description="1 foreground, 0 background per point; default all 1")
    box: Box | None = Field(None, description="one XYXY box")
    boxes: list[Box] | None = Field(None, min_length=1, max_length=MAX_BOXES,
                                    description="several XYXY boxes: one prompt each, sharing the points")
    mask_input: str | None = Field(None, description="base64 of 256x256 float32 little-endian low-res logits "
                                                     "(low_res_logits of an earlier answer)")
    multimask: bool = Field(True, description="3 candidate masks per prompt (ambiguous clicks) instead of 1")
    return_logits: bool = Field(False, description="add each mask's low-res logits (base64 float32 256x256)")


class MaskResult(BaseModel):
    prompt: int = Field(description="which prompt (box) the mask answers; 0 without boxes")
    index: int = Field(description="candidate index within the prompt")
    score: float = Field(description="the model's predicted IoU")
    area: int = Field(description="pixels in the mask")
    bbox: list[int] = Field(description="COCO XYWH of the mask's pixel extent (w = x1 - x0 + 1)")
    segmentation: RLE
    low_res_logits: str | None = Field(None, description="base64 float32 (256, 256), with return_logits")


class SegmentResponse(BaseModel):
    id: str
    width: int
    height: int
    masks: list[MaskResult] = Field(description="by prompt, then candidate; the best candidate has the top score")
    decode_ms: float


class EverythingRequest(_Strict):
    """Options of the automatic mask generator (SAM's meanings; a small grid by default: it runs on a CPU)."""

    points_per_side: int = Field(16, ge=1, le=64, description="grid of N x N clicks (SAM's default is 32)")
    points_per_batch: int = Field(64, ge=1, le=256)
    pred_iou_thresh: float = Field(0.88, ge=0, le=1)
    stability_score_thresh: float = Field(0.95, ge=0, le=1)
    stability_score_offset: float = Field(1.0, ge=0, le=10)
    box_nms_thresh: float = Field(0.7, gt=0, le=1)
    crop_n_layers: int = Field(0, ge=0, le=1)
    min_mask_region_area: int = Field(0, ge=0, le=100_000)
    skip_covered_points: bool = False


class EverythingMask(BaseModel):
    segmentation: RLE
    area: int
    bbox: list[float] = Field(description="XYWH, as SAM's generator reports it")
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]


class EverythingResponse(BaseModel):
    id: str
    width: int
    height: int
    masks: list[EverythingMask]
    elapsed_ms: float


class ModelInfo(BaseModel):
    name: str
    image_size: int
    mask_threshold: float
    backend: str = Field(description="how the server runs the model: torch, onnx or onnx-int8")
    decoder_url: str = Field(description="the decoder ONNX graph (low resolution, all four mask tokens)")
    decoder_prepare_url: str = Field(description="the page's decoder, part 1: the image side, once per image")
    decoder_prepared_url: str = Field(description="the page's decoder, part 2: prompts with the prepared image side")


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelInfo]
    browser_decoding: bool = Field(description="the page's onnxruntime-web files are installed")


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    details: list | None = None


class ErrorResponse(BaseModel):
    """Every error answer: ``{"error": {"status", "code", "message", "details"}}``."""

    error: ErrorBody
