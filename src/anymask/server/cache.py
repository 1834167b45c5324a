"""A thread-safe least-recently-used cache of image embeddings, bounded by bytes.

The server computes an image's embedding once, on upload, and keeps it here under the image's id. Each entry
counts the bytes it holds (the ``(1, 256, 64, 64)`` float32 features, 4 MiB, plus the uploaded file, kept
for "segment everything"); when the total exceeds the limit, the least recently used entries are dropped.
An entry larger than the whole limit is refused.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from ..predictor import ImageEmbedding


@dataclass
class CachedImage:
    """One uploaded image: its embedding and the uploaded file's bytes.

    Attributes:
        image_id: the id given to the client (a hash of the model name and the file's bytes).
        embedding: the encoder's output (``features`` ``(1, 256, 64, 64)`` float32).
        data: the uploaded file, as sent (decoded again only by "segment everything").
        encode_ms: how long the encoder took, in milliseconds.
    """

    image_id: str
    embedding: ImageEmbedding
    data: bytes
    encode_ms: float

    @property
    def nbytes(self) -> int:
        """Bytes this entry holds (features + uploaded file)."""
        return int(self.embedding.features.nbytes) + len(self.data)


class EmbeddingCache:
    """LRU of :class:`CachedImage` by id, holding at most ``max_bytes`` bytes in total.

    Args:
        max_bytes: the limit; must hold at least one entry (4 MiB for SAM-family embeddings).
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, CachedImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        #: entries dropped to make room since the cache was made
        self.evictions = 0

    def get(self, image_id: str) -> CachedImage | None:
        """The entry for ``image_id`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(image_id)
            if entry is not None:
                self._entries.move_to_end(image_id)
            return entry

    def put(self, entry: CachedImage) -> bool:
        """Add (or refresh) an entry, dropping least recently used ones to stay within the limit.

        Returns:
            False when the entry alone is larger than the limit (it is not stored), else True.
        """
        size = entry.nbytes
        if size > self.max_bytes:
            return False
        with self._lock:
            old = self._entries.pop(entry.image_id, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[entry.image_id] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes
                self.evictions += 1
        return True

    def __contains__(self, image_id: str) -> bool:
        with self._lock:
            return image_id in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        with self._lock:
            return self._bytes

    def stats(self) -> dict[str, int]:
        """``entries``, ``bytes``, ``max_bytes`` and ``evictions``, for ``/health``."""
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes, "max_bytes": self.max_bytes,
                    "evictions": self.evictions}


__all__ = ["CachedImage", "EmbeddingCache"]
