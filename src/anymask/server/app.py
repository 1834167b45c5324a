"""The FastAPI application: :func:`create_app` builds the HTTP API and serves the page.

Endpoints (OpenAPI schema at ``/docs`` and ``/openapi.json``; see ``docs/web.md``)::

    GET  /                               the page
    GET  /health                         liveness, model, cache figures
    GET  /v1/models                      the loaded model; whether the page can decode in the browser
    GET  /v1/models/{name}/decoder.onnx  the decoder graph (?mask_input=false: without mask input)
    GET  /v1/models/{name}/decoder_prepare.onnx, .../decoder_prepared.onnx
                                         the two-part decoder the page runs with onnxruntime-web
    POST /v1/images                      upload (raw image body or multipart field "file") -> id; encodes once
    GET  /v1/images/{id}/embedding       the embedding as raw little-endian bytes (?dtype=float32|float16)
    POST /v1/images/{id}/segment         prompts -> masks (COCO RLE), scores, boxes
    POST /v1/images/{id}/everything      every mask (automatic mask generator, small grid by default)

Every error is JSON: ``{"error": {"status", "code", "message", "details"}}``. No file path is ever taken
from a client: images arrive as bytes and are named by a hash of their content.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import mimetypes
from contextlib import asynccontextmanager
from typing import Any, Callable, Sequence

from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import AnymaskError, ImageError, PromptError
from ..modeling import Sam
from . import schemas
from .engine import ImageTooLarge, SegmentEngine, UnknownImage
from .middleware import LimitsAndHeaders
from .static import PageAssets, find_page_assets

logger = logging.getLogger(__name__)

mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")

#: content types an upload may declare (the bytes are checked by decoding them)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff", "image/gif", "image/x-ms-bmp")
ID_PATTERN = r"^[0-9a-f]{24}$"
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse} for code in (400, 404, 413, 415, 422)}


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body = {"error": {"status": status, "code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status)


def _status_of(exc: AnymaskError) -> tuple[int, str]:
    if isinstance(exc, UnknownImage):
        return 404, "unknown_image"
    if isinstance(exc, ImageTooLarge):
        return 413, "image_too_large"
    if isinstance(exc, ImageError):
        return 400, "bad_image"
    if isinstance(exc, PromptError):
        return 422, "bad_prompt"
    return 400, "bad_request"


def create_app(
    model: Sam,
    *,
    backend: str = "auto",
    max_upload_mb: float = 32,
    max_pixels: int = 40_000_000,
    cache_mb: float = 512,
    cors_origins: Sequence[str] = (),
    cross_origin_isolation: bool = True,
    page: PageAssets | None = None,
) -> FastAPI:
    """The application serving ``model``.

    Args:
        model: a network from :func:`anymask.load_model`.
        backend: the server's backend (``"auto"``, ``"torch"``, ``"onnx"``, ``"onnx-int8"``).
        max_upload_mb: largest request body (an upload) in MiB; larger ones get HTTP 413.
        max_pixels: largest image in pixels (decompression bombs are refused before decoding).
        cache_mb: memory for cached embeddings (about 4 MiB + the file per image), least recently used dropped.
        cors_origins: origins allowed to call the API from another site (none by default: CORS off).
        cross_origin_isolation: send COOP/COEP headers so the page's decoder can use wasm threads.
        page: the page's files; default :func:`~anymask.server.static.find_page_assets`.
    """
    engine = SegmentEngine(model, backend=backend, cache_bytes=int(cache_mb * (1 << 20)), max_pixels=max_pixels)
    assets = page or find_page_assets()

    async def work(kind: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function`` on the engine's worker thread for ``kind`` (see SegmentEngine.pools)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(engine.pools[kind], functools.partial(function, *args, **kwargs))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.close()

    app = FastAPI(title="anymask", version=__version__, lifespan=lifespan,
                  description="Promptable image segmentation: upload an image once, then segment it by points, "
                              "boxes and masks. Masks are COCO RLE; coordinates are pixels, (x, y), XYXY boxes.")
    app.state.engine = engine
    app.state.page = assets

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        for item in details:
            item.pop("input", None)  # never echo the (possibly large) input back
        return _error(422, "invalid_request", "the request does not match the schema (see details)", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type",
                 422: "invalid_request"}
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(AnymaskError)
    async def _anymask(request: Request, exc: AnymaskError) -> JSONResponse:
        status, code = _status_of(exc)
        return _error(status, code, str(exc))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "internal server error (see the server's log)")

    # ------------------------------------------------------------------------------------------ service

    @app.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness: the model, the backend and the embedding cache's figures."""
        return {"status": "ok", "version": __version__, "model": engine.name, "backend": engine.backend,
                "cache": engine.cache.stats(), "browser_decoding": assets.browser_decoding}

    @app.get("/v1/models", response_model=schemas.ModelsResponse, tags=["models"])
    def models() -> dict[str, Any]:
        """The model this server runs, and whether the page can decode prompts in the browser."""
        info = {"name": engine.name, "image_size": model.spec.image_size,
                "mask_threshold": float(model.mask_threshold), "backend": engine.backend,
                "decoder_url": f"/v1/models/{engine.name}/decoder.onnx",
                "decoder_prepare_url": f"/v1/models/{engine.name}/decoder_prepare.onnx",
                "decoder_prepared_url": f"/v1/models/{engine.name}/decoder_prepared.onnx"}
        return {"default": engine.name, "models": [info], "browser_decoding": assets.browser_decoding}

    @app.get("/v1/models/{name}/decoder.onnx", tags=["models"], responses={404: ERROR_RESPONSES[404]},
             response_class=FileResponse)
    async def decoder_graph(name: str, mask_input: bool = Query(
            True, description="false: the graph without the mask_input and has_mask_input inputs (what the "
                              "page runs: it sends no mask prompt; no mask-downscaling convolutions)"),
    ) -> FileResponse:
        """The low-resolution decoder graph of the loaded model (see ``docs/web.md`` for its inputs)."""
        if name != engine.name:
            raise StarletteHTTPException(404, f"model {name!r} is not loaded; this server runs {engine.name!r}")
        path = await work("encode", engine.decoder_graph, mask_input)
        return FileResponse(path, media_type="application/octet-stream",
                            headers={"Cache-Control": "private, max-age=3600"})

    async def prepared_graph(name: str, part: str) -> FileResponse:
        if name != engine.name:
            raise StarletteHTTPException(404, f"model {name!r} is not loaded; this server runs {engine.name!r}")
        path = await work("encode", engine.prepared_decoder_graph, part)
        return FileResponse(path, media_type="application/octet-stream",
                            headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/v1/models/{name}/decoder_prepare.onnx", tags=["models"], responses={404: ERROR_RESPONSES[404]},
             response_class=FileResponse)
    async def decoder_prepare_graph(name: str) -> FileResponse:
        """First part of the page's decoder: the image side, run once per image (see ``docs/web.md``)."""
        return await prepared_graph(name, "prepare")

    @app.get("/v1/models/{name}/decoder_prepared.onnx", tags=["models"], responses={404: ERROR_RESPONSES[404]},
             response_class=FileResponse)
    async def decoder_prepared_graph(name: str) -> FileResponse:
        """Second part of the page's decoder: prompts -> masks with the prepared image side (``docs/web.md``)."""
        return await prepared_graph(name, "decode")

    # ------------------------------------------------------------------------------------------- images

    upload_body = {"requestBody": {"required": True, "content": {
        **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES[:4]},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
    }}}

    @app.post("/v1/images", response_model=schemas.ImageInfo, status_code=201, tags=["images"],
              openapi_extra=upload_body, responses=ERROR_RESPONSES)
    async def upload(request: Request) -> JSONResponse:
        """Upload an image (a raw ``image/*`` body, or multipart field ``file``); its embedding is computed once.

        Uploading the same file again answers from the cache (``cached: true``).
        """
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=1)
            part = form.get("file")
            if part is None or isinstance(part, str):
                raise StarletteHTTPException(422, "multipart upload needs a file field named 'file'")
            part_type = (part.content_type or "").split(";")[0].strip().lower()
            if part_type not in IMAGE_TYPES and part_type != "application/octet-stream":
                raise StarletteHTTPException(415, f"file content type {part_type!r} is not an image type "
                                                  f"({', '.join(IMAGE_TYPES)})")
            data = await part.read()
            await form.close()
        elif content_type in IMAGE_TYPES:
            data = await request.body()
        else:
            raise StarletteHTTPException(415, f"content type {content_type or 'none'!r}: send an image "
                                              f"({', '.join(IMAGE_TYPES)}) or multipart/form-data")
        if not data:
            raise ImageError("the upload is empty")
        entry, cached = await work("encode", engine.add_image, data)
        emb = entry.embedding
        info = {"id": entry.image_id, "width": emb.original_size[1], "height": emb.original_size[0],
                "model": emb.model, "input_size": list(emb.input_size), "cached": cached,
                "encode_ms": round(entry.encode_ms, 2),
                "embedding": {"url": f"/v1/images/{entry.image_id}/embedding",
                              "shape": list(emb.features.shape), "dtype": "float32"}}
        return JSONResponse(info, status_code=201)

    ImageId = PathParam(pattern=ID_PATTERN, description="the id returned by POST /v1/images")

    @app.get("/v1/images/{image_id}/embedding", tags=["images"], responses=ERROR_RESPONSES,
             response_class=Response)
    async def embedding(image_id: str = ImageId,
                        dtype: str = Query("float32", pattern="^(float32|float16)$",
                                           description="float32, or float16 (half the bytes)")) -> Response:
        """The image embedding as raw little-endian bytes; shape and dtype in the ``X-Embedding-*`` headers."""
        entry = engine.get(image_id)
        emb = entry.embedding
        data = emb.features.astype("<f2" if dtype == "float16" else "<f4").tobytes()
        headers = {"X-Embedding-Shape": ",".join(map(str, emb.features.shape)), "X-Embedding-Dtype": dtype,
                   "X-Image-Size": f"{emb.original_size[0]},{emb.original_size[1]}",
                   "X-Input-Size": f"{emb.input_size[0]},{emb.input_size[1]}", "X-Model": emb.model,
                   "Cache-Control": "private, max-age=3600"}
        return Response(data, media_type="application/octet-stream", headers=headers)

    @app.post("/v1/images/{image_id}/segment", response_model=schemas.SegmentResponse, tags=["images"],
              responses=ERROR_RESPONSES)
    async def segment(body: schemas.SegmentRequest, image_id: str = ImageId) -> dict[str, Any]:
        """Masks for points (1 foreground, 0 background), a box or boxes, and/or a mask input."""
        if body.box is not None and body.boxes is not None:
            raise PromptError("give box or boxes, not both")
        boxes = body.boxes if body.boxes is not None else body.box
        entry, records, ms = await work("decode", engine.segment, image_id, points=body.points, labels=body.labels, boxes=boxes,
                                            mask_input=body.mask_input, multimask=body.multimask,
                                            return_logits=body.return_logits)
        height, width = entry.embedding.original_size
        return {"id": image_id, "width": width, "height": height, "masks": records, "decode_ms": round(ms, 3)}

    @app.post("/v1/images/{image_id}/everything", response_model=schemas.EverythingResponse, tags=["images"],
              responses=ERROR_RESPONSES)
    async def everything(body: schemas.EverythingRequest | None = None, image_id: str = ImageId) -> dict[str, Any]:
        """Every mask in the image (SAM's automatic mask generator; seconds to a minute on a CPU)."""
        options = (body or schemas.EverythingRequest()).model_dump()
        entry, masks, ms = await work("everything", engine.everything, image_id, **options)
        height, width = entry.embedding.original_size
        return {"id": image_id, "width": width, "height": height, "masks": masks, "elapsed_ms": round(ms, 1)}

    # --------------------------------------------------------------------------------------------- page

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        if assets.directory is None:
            return Response(assets.missing_page(), media_type="text/html")
        return FileResponse(assets.directory / "index.html", headers={"Cache-Control": "no-cache"})

    if assets.directory is not None:
        app.mount("/static", StaticFiles(directory=assets.directory), name="static")

    app.add_middleware(LimitsAndHeaders, max_body=int(max_upload_mb * (1 << 20)),
                       isolation=cross_origin_isolation)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["content-type"], expose_headers=["X-Embedding-Shape", "X-Embedding-Dtype",
                                                                           "X-Image-Size", "X-Input-Size"])
    return app


__all__ = ["create_app", "ID_PATTERN", "IMAGE_TYPES"]
