"""A disk cache of encoded text collections, so re-evaluating a model on the same corpus skips encoding.

An entry is keyed by the model (its settings signature and a fingerprint of its weight files), the
encoding call (queries or passages, max length, instruction) and a hash of every text. It is written
atomically and carries a checksum of its vectors; an entry that fails to load or to verify is
reported, deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write, texts_digest

logger = logging.getLogger(__name__)


class EmbeddingCache:
    """Encoded text collections stored as ``<key>.npz`` files in ``folder``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0
        self.rebuilt = 0

    def key(self, identity: Mapping[str, Any], texts: Sequence[str]) -> str:
        blob = json.dumps(dict(identity), sort_keys=True, default=str) + texts_digest(texts)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def get_or_compute(
        self, identity: Mapping[str, Any], texts: Sequence[str], compute: Callable[[list[str]], Any]
    ) -> np.ndarray:
        """The cached vectors of ``texts`` for ``identity``, or ``compute(texts)`` stored for next time."""
        path = self.folder / f"{self.key(identity, texts)}.npz"
        if path.is_file():
            vectors = self._read(path, len(texts))
            if vectors is not None:
                self.hits += 1
                return vectors
            self.rebuilt += 1
        self.misses += 1
        vectors = np.asarray(compute(list(texts)), dtype=np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, vectors=vectors, checksum=np.array(hashlib.sha256(vectors.tobytes()).hexdigest()))
        with atomic_write(path, "wb") as handle:
            handle.write(buffer.getvalue())
        return vectors

    @staticmethod
    def _read(path: Path, count: int) -> np.ndarray | None:
        try:
            with np.load(path, allow_pickle=False) as data:
                vectors = data["vectors"]
                checksum = str(data["checksum"])
        except Exception as exc:  # any unreadable file is a corrupt entry: it is rebuilt, never trusted
            logger.warning("cache entry %s is unreadable (%s); rebuilding it", path, exc)
            path.unlink(missing_ok=True)
            return None
        if hashlib.sha256(vectors.tobytes()).hexdigest() != checksum or len(vectors) != count:
            logger.warning("cache entry %s does not match its checksum; rebuilding it", path)
            path.unlink(missing_ok=True)
            return None
        return vectors
