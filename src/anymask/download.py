"""HTTP(S) and file:// downloads with timeouts, credentials, a progress bar and verification on the fly.

Used by :mod:`anymask.weights` and :mod:`anymask.package_index`. A source that cannot deliver raises
:class:`SourceFailed` with a one-line reason; the caller records it and tries its next source.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import logging
import socket
import ssl
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CHUNK_SIZE", "Client", "SourceFailed", "copy_verified", "download_to", "redact", "remove_stale_temps", "short",
]

logger = logging.getLogger(__name__)

#: seconds to wait for a connection to be made
CONNECT_TIMEOUT = 15.0
#: seconds a connection may stay silent once the transfer has started
READ_TIMEOUT = 60.0
#: bytes read or written at a time
CHUNK_SIZE = 1 << 20
#: a leftover temporary file older than this (seconds) is removed before a new download
STALE_TEMP_AGE = 24 * 3600.0
#: suffixes of the temporary files that downloads write (see :func:`anymask.fileio.atomic_write`)
TEMP_SUFFIXES = (".tmp", ".part")
#: what reading a response, or a member of an archive, raises when the data is cut short or damaged
_READ_ERRORS = (OSError, EOFError, zlib.error, http.client.HTTPException, tarfile.TarError, zipfile.BadZipFile)


class SourceFailed(Exception):
    """One source could not deliver the file; the message says why (one line). Not an OSError."""


def short(sha: str) -> str:
    """The first 16 hex digits of a sha256, for messages."""
    return sha[:16] + "..."


def _without_credentials(parts: urllib.parse.SplitResult) -> urllib.parse.SplitResult:
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host)


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url
    clean = _without_credentials(parts)
    return urllib.parse.urlunsplit(clean._replace(netloc=f"{parts.username}:***@{clean.netloc}"))


def _user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"anymask/{version('anymask')}"
    except Exception:
        return "anymask"


class Client:
    """A small urllib client with pip's cert and proxy settings and per-host Basic credentials.

    Args:
        cert: a CA bundle to trust instead of the default store (pip's ``cert`` setting).
        proxy: a proxy URL for http and https (pip's ``proxy`` setting); the usual ``*_proxy``
            variables apply when None.
    """

    def __init__(self, cert: str | None = None, proxy: str | None = None) -> None:
        handlers: list[urllib.request.BaseHandler] = []
        if cert:
            try:
                handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cert)))
            except (OSError, ssl.SSLError) as exc:
                logger.debug("cannot use the CA bundle %s: %s", cert, exc)
        if proxy:
            handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
        self._opener = urllib.request.build_opener(*handlers)
        self._auth: dict[str, str] = {}
        self._user_agent = _user_agent()

    def add_credentials(self, url: str) -> str:
        """Remember the credentials in ``url`` for its host; return the url without them."""
        parts = urllib.parse.urlsplit(url)
        if parts.username is None:
            return url
        clean = _without_credentials(parts)
        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._auth[clean.netloc] = f"Basic {token}"
        return urllib.parse.urlunsplit(clean)

    def open(self, url: str, accept: str | None = None) -> Any:
        """Open ``url`` (http, https or file) and return the response.

        Raises:
            SourceFailed: HTTP error, no connection, or no answer within :data:`CONNECT_TIMEOUT`.
        """
        url = self.add_credentials(url)
        request = urllib.request.Request(url, headers={"User-Agent": self._user_agent})
        if accept:
            request.add_header("Accept", accept)
        header = self._auth.get(urllib.parse.urlsplit(url).netloc)
        if header:
            request.add_unredirected_header("Authorization", header)
        try:
            response = self._opener.open(request, timeout=CONNECT_TIMEOUT)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise SourceFailed(f"HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, OSError) and reason.strerror:
                reason = reason.strerror
            raise SourceFailed(f"cannot connect: {reason}") from None
        except (socket.timeout, TimeoutError):
            raise SourceFailed(f"no answer within {CONNECT_TIMEOUT:.0f} s") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise SourceFailed(f"cannot open: {exc}") from None
        with contextlib.suppress(AttributeError, OSError):  # reads may stay silent longer than a connect
            response.fp.raw._sock.settimeout(READ_TIMEOUT)
        return response


def copy_verified(
    source: IO[bytes],
    target: IO[bytes],
    *,
    size: int | None,
    sha256: str | None,
    desc: str,
    progress: bool,
    what: str = "",
) -> None:
    """Copy ``source`` to ``target`` in chunks, hashing on the way, and check the result.

    Args:
        size: the exact number of bytes expected (more is cut off at once); None when unknown.
        sha256: the expected lowercase hex sha256; None when unknown (a warning is logged).
        desc: label of the progress bar, shown only when ``progress`` and stderr is a terminal.
        what: prefix of the failure messages (``"archive "``).

    Raises:
        SourceFailed: reading failed or stalled, or the size or sha256 differs from the expected one.
    """
    from tqdm import tqdm

    try:
        show = progress and sys.stderr.isatty()
    except (AttributeError, ValueError):
        show = False
    digest = hashlib.sha256()
    count = 0
    bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not show, leave=False)
    with bar:
        while True:
            try:
                chunk = source.read(CHUNK_SIZE)
            except (socket.timeout, TimeoutError):
                raise SourceFailed(f"transfer stalled for {READ_TIMEOUT:.0f} s after {count:,} bytes") from None
            except _READ_ERRORS as exc:
                raise SourceFailed(f"read failed after {count:,} bytes: {exc or type(exc).__name__}") from None
            if not chunk:
                break
            count += len(chunk)
            if size is not None and count > size:
                raise SourceFailed(f"more data than the expected {size:,} bytes")
            digest.update(chunk)
            target.write(chunk)
            bar.update(len(chunk))
    if size is not None and count != size:
        raise SourceFailed(f"{what}size mismatch: got {count:,} bytes, expected {size:,}")
    if sha256 is None:
        logger.warning("no sha256 known for %s; relying on the checkpoint's own hash", desc)
    elif digest.hexdigest() != sha256:
        raise SourceFailed(f"{what}sha256 mismatch: got {short(digest.hexdigest())}, expected {short(sha256)}")


def download_to(
    client: Client,
    url: str,
    target: IO[bytes],
    *,
    size: int | None,
    sha256: str | None,
    desc: str,
    progress: bool,
    what: str = "",
) -> None:
    """Download ``url`` into the open file ``target`` and verify it (see :func:`copy_verified`).

    Raises:
        SourceFailed: the server cannot be reached, announces another size, or sends other bytes.
    """
    logger.info("downloading %s from %s", desc, redact(url))
    with contextlib.closing(client.open(url)) as response:
        length = (getattr(response, "headers", None) or {}).get("Content-Length")
        if size is not None and length is not None and length.strip().isdigit() and int(length) != size:
            raise SourceFailed(f"server offers {int(length):,} bytes, expected {size:,}")
        copy_verified(response, target, size=size, sha256=sha256, desc=desc, progress=progress, what=what)


def remove_stale_temps(folder: Path) -> None:
    """Remove temporary files that an interrupted download left in ``folder`` long ago."""
    now = time.time()
    with contextlib.suppress(OSError):
        for item in folder.iterdir():
            if item.name.startswith(".") and item.name.endswith(TEMP_SUFFIXES):
                with contextlib.suppress(OSError):
                    if now - item.stat().st_mtime > STALE_TEMP_AGE:
                        item.unlink()
                        logger.debug("removed stale temporary file %s", item)
