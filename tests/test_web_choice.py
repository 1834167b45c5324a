"""The page's choice of decoder (``web/choice.js``), run in Node: medians, the pick, probing order, forcing.

The page measures both decoders on its first prompts after an image loads and keeps the faster one; these
tests drive that logic with given times (the end-to-end check in a real browser is in test_server_live.py).
Skips without ``node`` (it builds the page's onnxruntime-web with npm, so a machine that builds has it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

CHOICE_JS = Path(__file__).resolve().parents[1] / "web" / "choice.js"


def run_node(script: str) -> object:
    """Run an ES module that imports choice.js as ``c`` and prints JSON; the parsed output."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    source = f"import * as c from {json.dumps(CHOICE_JS.as_uri())};\n{script}"
    done = subprocess.run([node, "--input-type=module", "-e", source], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_median_and_pick_faster():
    out = run_node("""
        console.log(JSON.stringify({
          odd: c.median([30, 10, 20]), even: c.median([4, 1, 3, 2]),
          early: c.pickFaster({browser: [10, 10], server: [50, 50, 50]}),
          server: c.pickFaster({browser: [120, 95, 130], server: [45, 300, 40]}),
          browser: c.pickFaster({browser: [20, 25, 500], server: [45, 40, 44]}),
          tie: c.pickFaster({browser: [40, 40, 40], server: [40, 40, 40]}),
          two: c.pickFaster({browser: [9, 9], server: [1, 1]}, 2),
        }));""")
    # an outlier (a first, cold run) does not decide: the median does
    assert out == {"odd": 20, "even": 2.5, "early": None, "server": "server", "browser": "browser",
                   "tie": "browser", "two": "server"}


def test_probing_alternates_then_keeps_the_faster_and_restarts_per_image():
    out = run_node("""
        const d = {browser: {kind: 'browser'}, server: {kind: 'server'}};
        const choice = new c.DecoderChoice(d);
        const log = [];
        const times = [[130, 45], [110, 50], [120, 41]];
        for (const [b, s] of times) {
          log.push({probing: choice.probing, order: choice.order(), current: choice.current.kind});
          choice.record({browser: b, server: s});
        }
        const decided = choice.summary();
        const current = choice.current.kind;
        choice.reset();
        console.log(JSON.stringify({log, decided, current, after_reset: choice.summary()}));""")
    assert [entry["order"] for entry in out["log"]] == [["browser", "server"], ["server", "browser"],
                                                        ["browser", "server"]]
    assert all(entry["probing"] for entry in out["log"])
    assert out["decided"] == {"mode": "auto", "kind": "server", "probing": False, "browser_ms": 120,
                              "server_ms": 45, "probes": 3}
    assert out["current"] == "server"
    assert out["after_reset"]["probing"] is True and out["after_reset"]["probes"] == 0


def test_forced_missing_and_failed_browser():
    out = run_node("""
        const both = () => ({browser: {kind: 'browser'}, server: {kind: 'server'}});
        const forcedBrowser = new c.DecoderChoice(both(), {forced: 'browser'});
        const forcedServer = new c.DecoderChoice(both(), {forced: 'server'});
        const noBrowser = new c.DecoderChoice({browser: null, server: {kind: 'server'}});
        const forcedMissing = new c.DecoderChoice({browser: null, server: {kind: 'server'}}, {forced: 'browser'});
        const failing = new c.DecoderChoice(both());
        failing.record({browser: 10, server: 50});
        failing.dropBrowser();
        failing.reset();
        console.log(JSON.stringify([forcedBrowser, forcedServer, noBrowser, forcedMissing, failing].map(
          (x) => ({...x.summary(), current: x.current.kind}))));""")
    forced_browser, forced_server, no_browser, forced_missing, failing = out
    assert forced_browser == {"mode": "forced", "kind": "browser", "probing": False, "browser_ms": None,
                              "server_ms": None, "probes": 0, "current": "browser"}
    assert forced_server["mode"] == "forced" and forced_server["current"] == "server"
    # without a browser decoder (no onnxruntime-web, or it failed) the server decodes, without probing
    assert no_browser["mode"] == "auto" and not no_browser["probing"] and no_browser["current"] == "server"
    assert forced_missing["mode"] == "auto" and forced_missing["current"] == "server"
    assert not failing["probing"] and failing["current"] == "server"
