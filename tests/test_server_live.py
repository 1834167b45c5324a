"""A real ``anymask serve`` process on 127.0.0.1: the page in headless Chromium, and a bounded load test.

The browser is the system's Chromium driven by Playwright (``executable_path``); the tests skip when there is
none. The server runs the real MobileSAM model; the page loads the astronaut photo.
"""

from __future__ import annotations

import io
import json
import statistics

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from benchmarks.server_harness import (  # noqa: E402
    canvas_mask,
    chromium_path,
    click_image,
    open_page,
    run_load,
    running_server,
    timed_clicks,
)
from anymask.masks import decode_rle, iou  # noqa: E402
from anymask.server.static import find_page_assets  # noqa: E402

CACHE_MB = 32  # about 6 images: the load test's uploads evict each other
CLICK = (250, 150)  # the astronaut's face
INSIDE = [(230 + 8 * (i % 5), 120 + 10 * (i // 5)) for i in range(20)]  # 20 foreground clicks on the face


@pytest.fixture(scope="module")
def server():
    with running_server("--backend", "onnx", "--cache-mb", str(CACHE_MB)) as (base, process):
        yield base, process


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path)
        yield b
        b.close()


def _api_mask(base: str, image: bytes, point) -> np.ndarray:
    info = httpx.post(f"{base}/v1/images", content=image, headers={"content-type": "image/png"}, timeout=300).json()
    masks = httpx.post(f"{base}/v1/images/{info['id']}/segment", json={"points": [list(point)]}, timeout=300)
    best = max(masks.json()["masks"], key=lambda m: m["score"])
    return decode_rle(best["segmentation"])


def test_page_click_draws_the_apis_mask_and_downloads_it(server, browser, example_image_path, tmp_path):
    base, _ = server
    expected = _api_mask(base, example_image_path.read_bytes(), CLICK)
    want = "browser" if find_page_assets().browser_decoding else "server"
    page = open_page(browser, base, example_image_path, query=f"?decode={want}")
    try:
        assert page.evaluate("document.body.dataset.decoder") == want
        assert page.evaluate("window.anymaskPage.choice()")["mode"] == "forced"
        assert page.evaluate("self.crossOriginIsolated") is True
        click_image(page, *CLICK, width=512, height=512)
        drawn = canvas_mask(page)
        assert drawn.shape == (512, 512) and drawn[CLICK[1], CLICK[0]]
        assert iou(drawn, expected) >= 0.95
        with page.expect_download() as download_info:
            page.click("#download-mask")
        path = tmp_path / "mask.png"
        download_info.value.save_as(path)
        downloaded = np.array(Image.open(path).convert("L")) > 127
        assert iou(downloaded, expected) >= 0.95 and iou(downloaded, drawn) == 1.0
        # the cut-out: the photo's pixels inside the mask's box, transparent outside the mask
        with page.expect_download() as download_info:
            page.click("#download-cutout")
        download_info.value.save_as(tmp_path / "cutout.png")
        cutout = np.array(Image.open(tmp_path / "cutout.png"))
        ys, xs = np.nonzero(drawn)
        inside = drawn[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert cutout.shape == (*inside.shape, 4) and np.array_equal(cutout[..., 3] > 0, inside)
        photo = np.array(Image.open(example_image_path).convert("RGB"))[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert np.abs(cutout[..., :3][inside].astype(int) - photo[inside]).max() <= 2
        # keep the object (K) and download the COCO JSON: its RLE is the drawn mask
        page.locator("#ui").focus()
        page.keyboard.press("k")
        with page.expect_download() as download_info:
            page.click("#download-coco")
        download_info.value.save_as(tmp_path / "coco.json")
        coco = json.loads((tmp_path / "coco.json").read_text())
        (annotation,) = coco["annotations"]
        assert coco["images"][0]["width"] == 512 and annotation["area"] == int(drawn.sum())
        counts = annotation["segmentation"]["counts"]  # uncompressed COCO RLE: column-major runs, 0s first
        decoded = np.repeat(np.arange(len(counts)) % 2, counts).reshape(512, 512).T.astype(bool)
        assert annotation["segmentation"]["size"] == [512, 512] and np.array_equal(decoded, drawn)
        # 20 more clicks, each decoded: the click-to-mask time (event to mask drawn), reported
        records = timed_clicks(page, INSIDE, 512, 512)
        assert all(r["decoded"] and r["decoder"] == want for r in records)
        times = [r["ms"] for r in records]
        print(f"\npage click-to-mask ({want} decoding): median {statistics.median(times):.1f} ms over "
              f"{len(times)} clicks")
    finally:
        page.close()


def test_page_measures_both_decoders_and_keeps_the_faster(server, browser, example_image_path):
    base, _ = server
    expected = _api_mask(base, example_image_path.read_bytes(), CLICK)
    page = open_page(browser, base, example_image_path)  # no ?decode: the page chooses
    try:
        choice = page.evaluate("window.anymaskPage.choice()")
        if not find_page_assets().browser_decoding:  # nothing to choose from: the server decodes
            assert choice["kind"] == "server" and not choice["probing"]
            return
        assert choice["mode"] == "auto" and choice["probing"] and choice["probes"] == 0
        assert page.evaluate("document.body.dataset.choice") == "probing"
        # the first prompts (the hover before a click counts) are decoded by both decoders, then one is kept
        records = []
        for x, y in INSIDE[:6]:
            records.append(click_image(page, x, y, width=512, height=512))
            if not page.evaluate("window.anymaskPage.choice()")["probing"]:
                break
        page.wait_for_function("document.body.dataset.choice === 'auto'")
        choice = page.evaluate("window.anymaskPage.choice()")
        assert choice["probes"] == 3 and choice["browser_ms"] > 0 and choice["server_ms"] > 0
        faster = "browser" if choice["browser_ms"] <= choice["server_ms"] else "server"
        assert choice["kind"] == faster == page.evaluate("document.body.dataset.decoder")
        badge = page.text_content("#decoder")
        assert f"decoding in the {faster}" in badge and "faster here" in badge
        assert {r["decoder"] for r in records if r["decoded"]} <= {"browser", "server"}
        # from now on every click is decoded by the chosen one only, and the mask is still the API's
        page.keyboard.press("r")
        page.wait_for_function("window.anymaskPage.page.mask === null")
        record = click_image(page, *CLICK, width=512, height=512)
        assert record["decoder"] == faster and page.evaluate("window.anymaskPage.choice()")["probes"] == 3
        assert iou(canvas_mask(page), expected) >= 0.99
        print(f"\nthe page chose the {faster}: probes browser {choice['browser_ms']} ms, "
              f"server {choice['server_ms']} ms")
    finally:
        page.close()


def test_page_falls_back_to_server_decoding(server, browser, example_image_path):
    base, _ = server
    expected = _api_mask(base, example_image_path.read_bytes(), CLICK)
    page = open_page(browser, base, example_image_path, query="?decode=server")
    try:
        assert page.evaluate("document.body.dataset.decoder") == "server"
        record = click_image(page, *CLICK, width=512, height=512)
        assert record["decoder"] == "server"
        assert iou(canvas_mask(page), expected) >= 0.99
        page.keyboard.press("u")  # undo: back to no prompt, no mask
        page.wait_for_function("window.anymaskPage.page.mask === null")
        # keyboard only: move the cursor onto the face from the centre, Enter adds a foreground point
        page.locator("#ui").focus()
        for _ in range(21):  # steps of 1 % of 512 px: (256, 256) -> (256, 148.48)
            page.keyboard.press("ArrowUp")
        count = page.evaluate("window.anymaskPage.timings.length")
        page.keyboard.press("Enter")
        page.wait_for_function(f"window.anymaskPage.timings.length > {count}")
        (point,) = page.evaluate("window.anymaskPage.page.points")
        assert point["label"] == 1 and point["x"] == 256 and abs(point["y"] - (256 - 21 * 5.12)) < 1e-6
        assert iou(canvas_mask(page), expected) >= 0.9
    finally:
        page.close()


def test_load_fifty_clients_no_failures_bounded_memory(server, example_image_path):
    base, process = server
    photo = np.array(Image.open(example_image_path))
    variants = []
    for i in range(8):  # real-photo crops: uploads that encode anew and push each other out of the cache
        crop = photo[i * 16:i * 16 + 384, (7 - i) * 16:(7 - i) * 16 + 384]
        buffer = io.BytesIO()
        Image.fromarray(crop).save(buffer, format="PNG")
        variants.append(buffer.getvalue())
    stats = run_load(base, example_image_path.read_bytes(), variants, clients=50, seconds=8, pid=process.pid)
    print(f"\nload: {stats}")
    assert stats["failures"] == 0, stats["failure_examples"]
    assert stats["latency_ms"]["segment"]["n"] > 50
    cache = httpx.get(f"{base}/health").json()["cache"]
    assert cache["bytes"] <= CACHE_MB << 20
    # memory stays bounded (RSS sampled every 0.2 s): the model, the sessions and a full cache, no growth per request
    assert stats["rss_max_sampled_mb"] < stats["rss_before_mb"] + CACHE_MB + 400, stats
