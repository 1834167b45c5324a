"""Drive a real ``anymask serve`` process: start it, click in its page in Chromium, load it with many clients.

Shared by ``tests/test_server_live.py`` (checks) and ``benchmarks/server_benchmark.py`` (figures). Traffic goes
to 127.0.0.1 only. The browser is the system's Chromium (``/usr/bin/chromium``), driven by Playwright with
``executable_path``: nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str | None:
    """The system's Chromium, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory (``VmRSS``) or its peak (``VmHWM``) of a process, in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found for pid {pid}")


@contextmanager
def running_server(*options: str, timeout: float = 300) -> Iterator[tuple[str, subprocess.Popen]]:
    """``anymask serve`` on a free loopback port with ``options``; yields (base URL, process)."""
    import httpx

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "anymask", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", *options]
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with code {process.returncode}")
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer /health in time")
            time.sleep(0.3)
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------------------------------------ browser


def open_page(browser: Any, base: str, image: Path, query: str = "") -> Any:
    """A new page on the server with ``image`` uploaded and ready to click."""
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page.goto(f"{base}/{query}")
    page.wait_for_selector("body[data-ready='1']", timeout=120_000)
    page.set_input_files("#file", str(image))
    page.wait_for_selector("body[data-image-ready='1']", timeout=120_000)
    return page


def click_image(page: Any, x: float, y: float, *, button: str = "left", width: int, height: int) -> dict:
    """Click image pixel (x, y) and wait until the page has drawn the resulting mask; its timing record."""
    count = page.evaluate("window.anymaskPage.timings.length")
    box = page.locator("#ui").bounding_box()
    page.mouse.click(box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (y + 0.5) * box["height"] / height,
                     button=button)
    page.wait_for_function(f"window.anymaskPage.timings.length > {count}", timeout=120_000)
    return page.evaluate("window.anymaskPage.timings[window.anymaskPage.timings.length - 1]")


def canvas_mask(page: Any) -> "Any":
    """The mask drawn on the page's mask canvas, ``(H, W)`` bool."""
    from anymask.masks import decode_rle

    rle = page.evaluate("window.anymaskPage.canvasMaskRLE()")
    return decode_rle(rle)


def timed_clicks(page: Any, points: list[tuple[float, float]], width: int, height: int) -> list[dict]:
    """Click each point in turn, adding foreground points to the current prompt; each click's timing record
    (``ms`` from the click event to the mask drawn, ``decoded``: whether it ran the decoder; a first click
    on a fresh image may reuse the decode of the hover that preceded it)."""
    return [click_image(page, x, y, width=width, height=height) for x, y in points]


# --------------------------------------------------------------------------------------------------- load


def run_load(base: str, image: bytes, variants: list[bytes], clients: int = 50, seconds: float = 10,
             pid: int | None = None, seed: int = 0) -> dict[str, Any]:
    """``clients`` concurrent clients for ``seconds``: mostly one-point /segment calls on ``image``, some
    embedding downloads and uploads of ``variants`` (each then segmented); the server's RSS sampled meanwhile.

    Returns counts, failures (with reasons), latency percentiles per kind and RSS figures (MB).
    """
    import httpx
    import numpy as np

    rng = random.Random(seed)
    latencies: dict[str, list[float]] = {"segment": [], "embedding": [], "upload": []}
    failures: list[str] = []
    rss: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set() and pid is not None:
            try:
                rss.append(rss_mb(pid))
            except (OSError, RuntimeError):
                return
            stop.wait(0.2)

    async def client(http: httpx.AsyncClient, main_id: str, size: tuple[int, int], deadline: float) -> None:
        height, width = size
        while time.monotonic() < deadline:
            roll = rng.random()
            try:
                if roll < 0.03:
                    data = rng.choice(variants)
                    t = time.perf_counter()
                    r = await http.post("/v1/images", content=data, headers={"content-type": "image/png"})
                    latencies["upload"].append(time.perf_counter() - t)
                    if r.status_code != 201:
                        failures.append(f"upload {r.status_code} {r.text[:200]}")
                        continue
                    target = r.json()["id"]
                    info = r.json()
                    height, width = info["height"], info["width"]
                elif roll < 0.08:
                    t = time.perf_counter()
                    r = await http.get(f"/v1/images/{main_id}/embedding", params={"dtype": "float16"})
                    latencies["embedding"].append(time.perf_counter() - t)
                    if r.status_code != 200 or len(r.content) != 256 * 64 * 64 * 2:
                        failures.append(f"embedding {r.status_code}")
                    continue
                else:
                    target, (height, width) = main_id, size
                point = [rng.uniform(0, width - 1), rng.uniform(0, height - 1)]
                t = time.perf_counter()
                r = await http.post(f"/v1/images/{target}/segment", json={"points": [point], "labels": [1]})
                latencies["segment"].append(time.perf_counter() - t)
                if r.status_code != 200 or len(r.json()["masks"]) != 3:
                    failures.append(f"segment {r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    async def main() -> float:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as http:
            r = await http.post("/v1/images", content=image, headers={"content-type": "image/png"})
            r.raise_for_status()
            info = r.json()
            start = time.monotonic()
            await asyncio.gather(*(client(http, info["id"], (info["height"], info["width"]), start + seconds)
                                   for _ in range(clients)))
            return time.monotonic() - start

    rss_before = rss_mb(pid) if pid is not None else None
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result: dict[str, float] = {}

    def loop() -> None:  # its own thread: the caller's thread may run an event loop (Playwright's)
        result["wall"] = asyncio.run(main())

    try:
        worker = threading.Thread(target=loop)
        worker.start()
        worker.join()
        if "wall" not in result:
            raise RuntimeError("the load test's client loop failed (see the traceback above)")
        wall = result["wall"]
    finally:
        stop.set()
        sampler.join()

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)) * 1000, 1) if values else None

    total = sum(len(v) for v in latencies.values())
    return {
        "clients": clients, "seconds": round(wall, 1), "requests": total, "failures": len(failures),
        "failure_examples": failures[:5], "requests_per_s": round(total / wall, 1),
        "latency_ms": {k: {"n": len(v), "p50": pct(v, 50), "p95": pct(v, 95), "max": pct(v, 100)}
                       for k, v in latencies.items()},
        "rss_before_mb": round(rss_before, 1) if rss_before else None,
        "rss_max_sampled_mb": round(max(rss), 1) if rss else None,
        "rss_peak_mb": round(rss_mb(pid, "VmHWM"), 1) if pid is not None else None,
    }
