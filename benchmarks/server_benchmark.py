"""Server and page figures: /segment latency, the page's click-to-mask time in Chromium, a 50-client load test.

    flock /tmp/anymask-bench.lock python benchmarks/server_benchmark.py     # writes benchmarks/results/server.{json,md}

Starts ``anymask serve`` (MobileSAM, onnx backend) on 127.0.0.1 and measures, on the astronaut photo:

* ``/segment`` over HTTP, one request at a time: median wall time of one point and of one box (3 masks and
  1 mask as COCO RLE), and the server's own decode time (``decode_ms``);
* the page in headless Chromium (the system's, via Playwright): click-to-mask time, from the click event to
  the mask drawn on the canvas, over 20 clicks on the astronaut's face after a first one (each adds a
  foreground point: the prompts have 2 to 21 points, and each click runs a decoder): decoding in the browser
  (onnxruntime-web, ``?decode=browser``) with cross-origin isolation (2 wasm threads) and without
  (``--no-isolation``: one thread), decoding on the server (``?decode=server``), and the page's automatic
  choice (no ``?decode``: it measures both on its first prompts, see ``web/choice.js``); with per-step medians
  (``run``: onnxruntime-web's ``session.run``, ``request``: the /segment round trip, ``mask``: upsampling or
  RLE decoding of the shown mask, ``draw``: the canvas);
* load: 50 concurrent clients for 30 s (one-point /segment calls, some embedding downloads and uploads),
  failures, latency percentiles and the server's peak RSS.

Targets (issue 6): page click-to-mask <= 50 ms median, server /segment <= 60 ms median for one point, zero
failed requests under load.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
from collections import Counter
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "src"))

from benchmarks.server_harness import (  # noqa: E402
    chromium_path,
    click_image,
    open_page,
    run_load,
    running_server,
    timed_clicks,
)

IMAGE = REPO_ROOT / "examples" / "astronaut.png"
CLICK = (250, 150)
CLICKS = [(230 + 8 * (i % 5), 120 + 10 * (i // 5)) for i in range(20)]
BOX = [150, 60, 300, 210]


def segment_latency(base: str, repeats: int) -> dict:
    import httpx

    with httpx.Client(base_url=base, timeout=300) as http:
        image_id = http.post("/v1/images", content=IMAGE.read_bytes(), headers={"content-type": "image/png"}).json()["id"]
        out = {}
        for name, body in (("point", {"points": [list(CLICK)]}), ("box", {"box": BOX, "multimask": False})):
            http.post(f"/v1/images/{image_id}/segment", json=body)  # warm-up
            wall, server = [], []
            for i in range(repeats):
                point_body = dict(body)
                if name == "point":
                    point_body["points"] = [[CLICK[0] + i % 7, CLICK[1]]]
                t = time.perf_counter()
                r = http.post(f"/v1/images/{image_id}/segment", json=point_body)
                wall.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
                server.append(r.json()["decode_ms"])
            out[name] = {"median_ms": round(statistics.median(wall), 1), "decode_median_ms": round(statistics.median(server), 1),
                         "p95_ms": round(float(np.percentile(wall, 95)), 1), "n": repeats}
    return out


def page_clicks(base: str, browser, query: str = "") -> dict:
    """20 timed clicks in the page (after a first click, which may reuse its hover's decode): the click-to-mask
    medians, the per-step medians (``run``: onnxruntime-web's session.run; ``request``: the /segment round trip;
    ``mask``: upsampling / RLE decoding of the shown mask; ``draw``: the canvas) and the page's decoder choice."""
    page = open_page(browser, base, IMAGE, query=query)
    try:
        click_image(page, *CLICK, width=512, height=512)
        records = [r for r in timed_clicks(page, CLICKS, 512, 512) if r["decoded"]]
        times = [r["ms"] for r in records]
        steps = sorted({k for r in records for k in r["steps"]})
        return {"decoder": page.evaluate("document.body.dataset.decoder"),
                "decoders_used": dict(Counter(r["decoder"] for r in records)),
                "choice": page.evaluate("window.anymaskPage.choice()"),
                "threads": page.evaluate("(window.anymaskPage.page.choice.decoders.browser || {}).threads || null"),
                # the browser decoder's once-per-image part (decoder_prepare.onnx), run when the image opened
                "browser_prepare_ms": page.evaluate(
                    "((window.anymaskPage.page.choice.decoders.browser || {}).image || {}).prepare_ms || null"),
                "cross_origin_isolated": page.evaluate("self.crossOriginIsolated"),
                "median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1),
                "max_ms": round(max(times), 1), "n": len(times),
                "step_medians_ms": {k: round(statistics.median(r["steps"][k] for r in records if k in r["steps"]), 1)
                                    for k in steps}}
    finally:
        page.close()


def variants() -> list[bytes]:
    photo = np.array(Image.open(IMAGE))
    out = []
    for i in range(8):
        buffer = io.BytesIO()
        Image.fromarray(photo[i * 16:i * 16 + 384, (7 - i) * 16:(7 - i) * 16 + 384]).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


#: (results key, label) of the page rows, in table order
PAGE_ROWS = (
    ("browser_isolated", "page click-to-mask, decoder in the browser, 2 wasm threads (?decode=browser, COOP/COEP)"),
    ("browser_single_thread", "page click-to-mask, decoder in the browser, 1 thread (?decode=browser, --no-isolation)"),
    ("server_decoding", "page click-to-mask, server decoding (?decode=server)"),
    ("automatic", "page click-to-mask, the page's automatic choice (no ?decode)"),
)
#: the per-step medians shown in the table (all are in the JSON)
SHOWN_STEPS = ("run", "request", "server_decode", "mask", "draw")


def markdown(result: dict) -> str:
    seg, load = result["segment"], result["load"]
    lines = [
        "# Server and page benchmark (issue 6)", "",
        f"Machine: {result['machine']}. MobileSAM, server backend onnx, astronaut photo (512x512). "
        f"Load average (1 min) before {result['load_before']}, after {result['load_after']} "
        f"(2 cores shared with other jobs; {result['conditions']}).", "",
        f"Command: `{result['command']}`", "",
        "| measure | median (ms) | other | target |", "|---|---|---|---|",
        f"| server `/segment`, one point (3 masks, HTTP round trip) | {seg['point']['median_ms']} | "
        f"decode {seg['point']['decode_median_ms']} ms, p95 {seg['point']['p95_ms']} ms, n={seg['point']['n']} | <= 60 |",
        f"| server `/segment`, one box (1 mask) | {seg['box']['median_ms']} | decode {seg['box']['decode_median_ms']} ms, "
        f"p95 {seg['box']['p95_ms']} ms | |",
    ]
    for key, label in PAGE_ROWS:
        page = result["page"].get(key)
        if page:
            steps = ", ".join(f"{k} {v}" for k, v in page["step_medians_ms"].items() if k in SHOWN_STEPS)
            choice = page["choice"]
            how = (f"chose the {choice['kind']} (probes: browser {choice['browser_ms']} ms, server "
                   f"{choice['server_ms']} ms); " if key == "automatic" else "")
            used = ", ".join(f"{k} {v}" for k, v in page["decoders_used"].items())
            if page.get("browser_prepare_ms") and key != "server_decoding":
                used += f" (browser: once per image, {round(page['browser_prepare_ms'], 1)} ms to prepare)"
            lines.append(f"| {label} | {page['median_ms']} | {how}clicks decoded by: {used}; steps: {steps}; "
                         f"min {page['min_ms']} / max {page['max_ms']}, n={page['n']} | <= 50 |")
    lines += [
        "", f"Load: {load['clients']} concurrent clients for {result['load_seconds']} s (ran {load['seconds']} s "
        "until the last answers came): "
        f"{load['requests']} requests ({load['requests_per_s']}/s), **{load['failures']} failed**; "
        f"server RSS {load['rss_before_mb']} MB before, peak {load['rss_peak_mb']} MB (cache limit "
        f"{result['cache_mb']} MB).", "",
        "| request | n | p50 (ms) | p95 (ms) | max (ms) |", "|---|---|---|---|---|",
    ]
    for kind, v in load["latency_ms"].items():
        lines.append(f"| {kind} | {v['n']} | {v['p50']} | {v['p95']} | {v['max']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="/segment requests per kind (default 30)")
    parser.add_argument("--load-seconds", type=float, default=30, help="load test duration (default 30)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent load-test clients (default 50)")
    parser.add_argument("--cache-mb", type=int, default=64, help="the server's --cache-mb (default 64)")
    parser.add_argument("--conditions", default="run under `flock /tmp/anymask-bench.lock`",
                        help="how the machine was shared during the run, written into the results")
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "results" / "server"),
                        help="output path without suffix (default benchmarks/results/server)")
    args = parser.parse_args()
    from anymask.fileio import atomic_write_text

    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
              "command": "flock /tmp/anymask-bench.lock python benchmarks/server_benchmark.py",
              "load_before": round(os.getloadavg()[0], 2), "cache_mb": args.cache_mb,
              "load_seconds": args.load_seconds, "conditions": args.conditions, "page": {}}
    browser_path = chromium_path()
    from playwright.sync_api import sync_playwright

    with running_server("--backend", "onnx", "--cache-mb", str(args.cache_mb)) as (base, process):
        result["segment"] = segment_latency(base, args.repeats)
        print("segment", result["segment"], flush=True)
        if browser_path:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=browser_path)
                result["page"]["browser_isolated"] = page_clicks(base, browser, "?decode=browser")
                print("page", result["page"], flush=True)
                result["page"]["server_decoding"] = page_clicks(base, browser, "?decode=server")
                result["page"]["automatic"] = page_clicks(base, browser)
                browser.close()
        result["load"] = run_load(base, IMAGE.read_bytes(), variants(), clients=args.clients,
                                  seconds=args.load_seconds, pid=process.pid)
        print("load", result["load"], flush=True)
    if browser_path:
        with running_server("--backend", "onnx", "--no-isolation") as (base, _), sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path)
            result["page"]["browser_single_thread"] = page_clicks(base, browser, "?decode=browser")
            browser.close()
    result["load_after"] = round(os.getloadavg()[0], 2)
    table = markdown(result)
    print(table)
    atomic_write_text(Path(args.output).with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    atomic_write_text(Path(args.output).with_suffix(".md"), table)


if __name__ == "__main__":
    main()
