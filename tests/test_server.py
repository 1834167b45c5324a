"""The HTTP API (anymask.server) in-process, with the real MobileSAM model and the astronaut photo.

Every endpoint and every error answer; results checked against the Predictor and the decoder graph the page
runs. The browser page and the load test are in test_server_live.py.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from anymask.masks import decode_rle, iou  # noqa: E402
from anymask.predictor import ImageEmbedding  # noqa: E402
from anymask.server import create_app  # noqa: E402
from anymask.server.cache import CachedImage, EmbeddingCache  # noqa: E402
from anymask.server.static import PACKAGE_STATIC, SOURCE_WEB, VENDOR_FILES, find_page_assets  # noqa: E402

POINT = [250, 150]  # on the astronaut's helmet/face


@pytest.fixture(scope="module")
def client(mobile_sam):
    app = create_app(mobile_sam, backend="onnx")
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def image_bytes(example_image_path) -> bytes:
    return example_image_path.read_bytes()


@pytest.fixture(scope="module")
def image_id(client, image_bytes) -> str:
    r = client.post("/v1/images", content=image_bytes, headers={"content-type": "image/png"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["status"] == status and body["code"] == code and body["message"]
    return body


# --------------------------------------------------------------------------------------------- endpoints


def test_health_models_docs_and_headers(client):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model"] == "mobile_sam" and body["backend"] == "onnx"
    assert body["cache"]["max_bytes"] == 512 << 20
    # cross-origin isolation (wasm threads in the page) and nosniff on every answer; CORS off by default
    assert r.headers["cross-origin-opener-policy"] == "same-origin"
    assert r.headers["cross-origin-embedder-policy"] == "require-corp"
    assert r.headers["x-content-type-options"] == "nosniff"
    r = client.get("/v1/models", headers={"origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    model = r.json()["models"][0]
    assert model["name"] == "mobile_sam" and model["image_size"] == 1024
    assert model["decoder_url"] == "/v1/models/mobile_sam/decoder.onnx"
    schema = client.get("/openapi.json").json()
    for path in ("/v1/images", "/v1/images/{image_id}/segment", "/v1/images/{image_id}/embedding",
                 "/v1/images/{image_id}/everything", "/v1/models", "/health"):
        assert path in schema["paths"], path
    assert client.get("/docs").status_code == 200


def test_upload_raw_and_multipart_give_one_cached_image(client, image_bytes, image_id):
    r = client.post("/v1/images", files={"file": ("photo.png", image_bytes, "image/png")})
    assert r.status_code == 201
    info = r.json()
    assert info["id"] == image_id and info["cached"] is True
    assert (info["width"], info["height"]) == (512, 512) and info["input_size"] == [1024, 1024]
    assert info["embedding"] == {"url": f"/v1/images/{image_id}/embedding", "shape": [1, 256, 64, 64],
                                 "dtype": "float32"}


def test_embedding_is_the_predictors(client, image_id, predictor):
    r = client.get(f"/v1/images/{image_id}/embedding")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-embedding-shape"] == "1,256,64,64" and r.headers["x-image-size"] == "512,512"
    features = np.frombuffer(r.content, dtype="<f4").reshape(1, 256, 64, 64)
    reference = predictor.embedding.features  # the torch encoder; the server runs onnxruntime
    assert np.abs(features - reference).max() < 1e-2 * np.abs(reference).max()
    half = client.get(f"/v1/images/{image_id}/embedding", params={"dtype": "float16"})
    assert half.headers["x-embedding-dtype"] == "float16" and len(half.content) == len(r.content) // 2
    np.testing.assert_allclose(np.frombuffer(half.content, "<f2").reshape(features.shape), features,
                               rtol=1e-3, atol=1e-3)


def test_segment_one_point_matches_the_predictor(client, image_id, predictor):
    r = client.post(f"/v1/images/{image_id}/segment", json={"points": [POINT], "labels": [1]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["masks"]) == 3 and body["decode_ms"] > 0
    masks, scores, _ = predictor.predict(points=[POINT], labels=[1])
    for record, mask, score in zip(body["masks"], masks, scores):
        got = decode_rle(record["segmentation"])
        assert iou(got, mask) >= 0.99
        assert record["score"] == pytest.approx(float(score), abs=0.01)
        assert record["area"] == int(got.sum()) and record["prompt"] == 0
        ys, xs = np.nonzero(got)
        assert record["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_segment_boxes_and_mask_input(client, image_id, predictor):
    box = [150, 60, 300, 210]
    r = client.post(f"/v1/images/{image_id}/segment", json={"box": box, "multimask": False})
    (record,) = r.json()["masks"]
    mask, _, _ = predictor.predict(box=box, multimask=False)
    assert iou(decode_rle(record["segmentation"]), mask[0]) >= 0.99
    r = client.post(f"/v1/images/{image_id}/segment",
                    json={"boxes": [box, [0, 0, 511, 511]], "points": [POINT], "multimask": False})
    assert [m["prompt"] for m in r.json()["masks"]] == [0, 1]
    # low-res logits come back as base64 float32 and go in again as a mask input
    r = client.post(f"/v1/images/{image_id}/segment",
                    json={"points": [POINT], "multimask": False, "return_logits": True})
    logits = r.json()["masks"][0]["low_res_logits"]
    assert len(base64.b64decode(logits)) == 256 * 256 * 4
    r = client.post(f"/v1/images/{image_id}/segment",
                    json={"points": [POINT, [260, 300]], "labels": [1, 0], "mask_input": logits, "multimask": False})
    assert r.status_code == 200 and r.json()["masks"][0]["area"] > 0


def test_the_served_decoder_graph_is_the_servers_decoder(client, image_id):
    import onnxruntime as ort

    graph = client.get("/v1/models/mobile_sam/decoder.onnx")
    assert graph.status_code == 200 and len(graph.content) > 1_000_000
    features = np.frombuffer(client.get(f"/v1/images/{image_id}/embedding").content, "<f4").reshape(1, 256, 64, 64)
    session = ort.InferenceSession(graph.content, providers=["CPUExecutionProvider"])
    low, scores = session.run(None, {
        "image_embeddings": features, "point_coords": np.array([[POINT, [0, 0]]], np.float32),
        "point_labels": np.array([[1, -1]], np.float32), "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32), "orig_im_size": np.array([512, 512], np.int64)})
    assert low.shape == (1, 4, 256, 256) and scores.shape == (1, 4)
    api = client.post(f"/v1/images/{image_id}/segment", json={"points": [POINT]}).json()["masks"]
    np.testing.assert_allclose(scores[0, 1:], [m["score"] for m in api], atol=1e-3)
    assert client.get("/v1/models/vit_h/decoder.onnx").status_code == 404
    # the page's graph: no mask input, the same outputs
    page_graph = client.get("/v1/models/mobile_sam/decoder.onnx?mask_input=false")
    assert page_graph.status_code == 200 and page_graph.content != graph.content
    page_session = ort.InferenceSession(page_graph.content, providers=["CPUExecutionProvider"])
    assert {i.name for i in page_session.get_inputs()} == {"image_embeddings", "point_coords", "point_labels",
                                                           "orig_im_size"}
    page_low, page_scores = page_session.run(None, {
        "image_embeddings": features, "point_coords": np.array([[POINT, [0, 0]]], np.float32),
        "point_labels": np.array([[1, -1]], np.float32), "orig_im_size": np.array([512, 512], np.int64)})
    np.testing.assert_allclose(page_scores, scores, atol=1e-4)
    assert np.mean((page_low > 0) == (low > 0)) > 0.999
    assert client.get("/v1/models/mobile_sam/decoder.onnx?mask_input=maybe").status_code == 422


def test_the_pages_two_part_decoder_gives_the_servers_masks(client, image_id):
    """``decoder_prepare.onnx`` (once per image) + ``decoder_prepared.onnx`` (per prompt): the API's scores and
    masks, as the page runs them."""
    import onnxruntime as ort

    model = client.get("/v1/models").json()["models"][0]
    graphs = {part: client.get(model[f"decoder_{part}_url"]) for part in ("prepare", "prepared")}
    assert all(g.status_code == 200 for g in graphs.values())
    prepare, decode = (ort.InferenceSession(graphs[p].content, providers=["CPUExecutionProvider"])
                       for p in ("prepare", "prepared"))
    features = np.frombuffer(client.get(f"/v1/images/{image_id}/embedding").content, "<f4").reshape(1, 256, 64, 64)
    prepared = dict(zip([o.name for o in prepare.get_outputs()], prepare.run(None, {"image_embeddings": features})))
    assert set(prepared) == {"keys", "key_pe", "block_keys", "block_values", "block_queries", "upscale_base_0",
                             "upscale_base_1"}
    low, scores = decode.run(None, {
        "image_embeddings": features, "point_coords": np.array([[POINT, [0, 0]]], np.float32),
        "point_labels": np.array([[1, -1]], np.float32), "orig_im_size": np.array([512, 512], np.int64), **prepared})
    api = client.post(f"/v1/images/{image_id}/segment", json={"points": [POINT], "return_logits": True}).json()
    np.testing.assert_allclose(scores[0, 1:], [m["score"] for m in api["masks"]], atol=1e-4)
    for index, mask in enumerate(api["masks"]):
        logits = np.frombuffer(base64.b64decode(mask["low_res_logits"]), "<f4").reshape(256, 256)
        assert np.mean((low[0, index + 1] > 0) == (logits > 0)) > 0.999
    assert client.get("/v1/models/vit_h/decoder_prepared.onnx").status_code == 404


def test_everything_with_a_small_grid(client, image_id):
    r = client.post(f"/v1/images/{image_id}/everything", json={"points_per_side": 4})
    assert r.status_code == 200, r.text
    masks = r.json()["masks"]
    assert masks and all(decode_rle(m["segmentation"]).sum() == m["area"] for m in masks)
    assert masks == sorted(masks, key=lambda m: -m["predicted_iou"]) or len(masks) >= 1
    _error(client.post(f"/v1/images/{image_id}/everything", json={"points_per_side": 0}), 422, "invalid_request")
    _error(client.post(f"/v1/images/{image_id}/everything", json={"grid": 4}), 422, "invalid_request")


def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and "app.js" in r.text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/../../pyproject.toml").status_code == 404
    assert client.get("/static/%2e%2e/%2e%2e/app.py").status_code == 404
    # a built page (web/build.py) must be the sources' copy: rebuild after editing web/
    if (PACKAGE_STATIC / "index.html").is_file() and SOURCE_WEB.is_dir():
        for source in SOURCE_WEB.iterdir():
            if source.suffix in (".html", ".js", ".css"):
                built = PACKAGE_STATIC / source.name
                assert built.is_file() and built.read_bytes() == source.read_bytes(), f"run python web/build.py: {built}"
    assets = find_page_assets()
    if assets.browser_decoding:
        assert client.get(f"/static/{VENDOR_FILES[2]}").headers["content-type"] == "application/wasm"


# ------------------------------------------------------------------------------------------------ errors


def test_prompt_and_schema_errors(client, image_id):
    url = f"/v1/images/{image_id}/segment"
    _error(client.post(url, json={"points": [[2500, 150]]}), 422, "bad_prompt")
    _error(client.post(url, json={"points": [POINT], "labels": [1, 0]}), 422, "bad_prompt")
    _error(client.post(url, json={"points": [POINT], "labels": [7]}), 422, "bad_prompt")
    _error(client.post(url, json={"box": [300, 300, 100, 100]}), 422, "bad_prompt")
    _error(client.post(url, json={}), 422, "bad_prompt")
    _error(client.post(url, json={"box": [1, 1, 9, 9], "boxes": [[1, 1, 9, 9]]}), 422, "bad_prompt")
    _error(client.post(url, json={"points": [POINT], "mask_input": "not base64!"}), 422, "bad_prompt")
    _error(client.post(url, json={"points": [POINT], "mask_input": base64.b64encode(b"1234").decode()}),
           422, "bad_prompt")
    body = _error(client.post(url, json={"pointz": [POINT]}), 422, "invalid_request")
    assert body["details"][0]["loc"] == ["body", "pointz"]
    _error(client.post(url, json={"points": [[1, 2, 3]]}), 422, "invalid_request")
    _error(client.post(url, content=b"{not json", headers={"content-type": "application/json"}),
           422, "invalid_request")


def test_unknown_ids_routes_and_methods(client):
    _error(client.post(f"/v1/images/{'0' * 24}/segment", json={"points": [POINT]}), 404, "unknown_image")
    _error(client.get(f"/v1/images/{'0' * 24}/embedding"), 404, "unknown_image")
    _error(client.get("/v1/images/..%2f..%2fetc%2fpasswd/embedding"), 404, "not_found")
    _error(client.get("/v1/images/not-an-id/embedding"), 422, "invalid_request")
    _error(client.get("/v1/nothing"), 404, "not_found")
    _error(client.delete("/v1/models"), 405, "method_not_allowed")


def test_upload_errors(client):
    _error(client.post("/v1/images", content=b"hello", headers={"content-type": "text/plain"}),
           415, "unsupported_media_type")
    _error(client.post("/v1/images", content=b"", headers={"content-type": "image/png"}), 400, "bad_image")
    _error(client.post("/v1/images", content=b"not an image at all", headers={"content-type": "image/png"}),
           400, "bad_image")
    _error(client.post("/v1/images", files={"file": ("a.txt", b"hello", "text/plain")}), 415,
           "unsupported_media_type")
    _error(client.post("/v1/images", files={"other": ("a.png", b"x", "image/png")}), 422, "invalid_request")
    # a decompression bomb: a PNG header announcing 100000 x 100000 pixels is refused before decoding
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    _error(client.post("/v1/images", content=bomb, headers={"content-type": "image/png"}), 413, "image_too_large")


def test_limits_cache_eviction_and_cors(mobile_sam, image_bytes):
    """A small server: 1 MiB bodies, 100000 pixels, a 6 MiB cache (one image), CORS for one origin."""
    app = create_app(mobile_sam, backend="onnx", max_upload_mb=1, max_pixels=100_000, cache_mb=6,
                     cors_origins=["http://localhost:3000"])
    photo = np.array(Image.open(io.BytesIO(image_bytes)))
    with TestClient(app) as c:
        crop_a, crop_b = _png(photo[:300, :300]), _png(photo[200:500, 200:500])
        _error(c.post("/v1/images", content=_png(photo), headers={"content-type": "image/png"}),
               413, "image_too_large")
        big = b"\0" * (2 << 20)
        _error(c.post("/v1/images", content=big, headers={"content-type": "image/png"}), 413, "request_too_large")
        chunked = c.post("/v1/images", content=iter([big[:1 << 20], big[1 << 20:]]),
                         headers={"content-type": "image/png"})
        _error(chunked, 413, "request_too_large")
        first = c.post("/v1/images", content=crop_a, headers={"content-type": "image/png"}).json()["id"]
        second = c.post("/v1/images", content=crop_b, headers={"content-type": "image/png"}).json()["id"]
        assert c.get(f"/v1/images/{second}/embedding").status_code == 200
        _error(c.get(f"/v1/images/{first}/embedding"), 404, "unknown_image")  # evicted: the cache holds one
        cache = c.get("/health").json()["cache"]
        assert cache["entries"] == 1 and cache["bytes"] <= cache["max_bytes"] and cache["evictions"] == 1
        r = c.get("/v1/models", headers={"origin": "http://localhost:3000"})
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "access-control-allow-origin" not in c.get("/v1/models", headers={"origin": "http://x.test"}).headers


def test_embedding_cache_is_lru_bounded_by_bytes():
    def entry(name: str, extra: int) -> CachedImage:
        features = np.zeros((1, 256, 64, 64), np.float32)  # 4 MiB
        return CachedImage(name, ImageEmbedding(features, (10, 10), (1024, 1024), "mobile_sam"), b"x" * extra, 1.0)

    cache = EmbeddingCache(max_bytes=10 << 20)
    for name in "abc":
        assert cache.put(entry(name, 1000))
        assert cache.nbytes <= cache.max_bytes
    assert "a" not in cache and "b" in cache and "c" in cache  # 2 fit; the oldest went
    cache.get("b")  # b is now the most recent: d evicts c
    cache.put(entry("d", 1000))
    assert "b" in cache and "c" not in cache and len(cache) == 2 and cache.evictions == 2
    assert not cache.put(entry("huge", 11 << 20)) and "huge" not in cache
    with pytest.raises(ValueError):
        EmbeddingCache(0)


def test_serve_help_and_bad_options(capsys):
    from anymask.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    for option in ("--host", "--port", "--model", "--backend", "--max-upload-mb", "--max-pixels", "--cache-mb",
                   "--cors-origin", "--no-isolation", "--checkpoint"):
        assert option in text
    assert main(["serve", "--cache-mb", "0"]) != 0
    assert "--cache-mb must be positive" in capsys.readouterr().err
