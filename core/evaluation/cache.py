"""A disk cache of encoded text collections, so re-evaluating a model on the same corpus skips encoding.

An entry is keyed by the model (its settings signature and a fingerprint of its weight files), the
encoding call (queries or passages, max length, instruction) and a hash of every text. It is written
atomically and carries a checksum of its vectors; an entry that fails to load or to verify is
reported, deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write, texts_digest
from ..inference.streaming import write_npy

logger = logging.getLogger(__name__)


class EmbeddingCache:
    """Encoded text collections stored in ``folder`` as ``<key>.npy`` (the vectors, streamed to disk as they
    are computed) beside ``<key>.json`` (their count, dimension and SHA-256)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0
        self.rebuilt = 0

    def key(self, identity: Mapping[str, Any], texts: Sequence[str]) -> str:
        blob = json.dumps(dict(identity), sort_keys=True, default=str) + texts_digest(texts)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def get_or_compute(
        self,
        identity: Mapping[str, Any],
        texts: Sequence[str],
        compute: Callable[[list[str]], np.ndarray | Iterable[np.ndarray]],
    ) -> np.ndarray:
        """The cached vectors of ``texts`` for ``identity``, or ``compute(texts)`` stored for next time.
        ``compute`` returns the vectors, or yields them in blocks of rows (as ``FlagModel.iter_encode``
        does), which go to disk one block at a time."""
        key = self.key(identity, texts)
        path, meta = self.folder / f"{key}.npy", self.folder / f"{key}.json"
        if path.is_file():
            vectors = self._read(path, meta, len(texts))
            if vectors is not None:
                self.hits += 1
                return vectors
            self.rebuilt += 1
        self.misses += 1
        result = compute(list(texts))
        blocks = [result] if isinstance(result, np.ndarray) else result
        stream = write_npy(path, blocks)
        if stream.rows != len(texts):
            path.unlink(missing_ok=True)
            raise ValueError(f"compute gave {stream.rows} vectors for {len(texts)} texts")
        with atomic_write(meta, "w") as handle:
            json.dump({"rows": stream.rows, "dim": stream.dim, "sha256": stream.digest.hexdigest()}, handle)
        return np.load(path, allow_pickle=False)

    @staticmethod
    def _read(path: Path, meta: Path, count: int) -> np.ndarray | None:
        try:
            expected = json.loads(meta.read_text(encoding="utf-8"))
            vectors = np.load(path, allow_pickle=False)
            digest = hashlib.sha256(np.ascontiguousarray(vectors).data)
        except Exception as exc:  # any unreadable entry is corrupt: it is rebuilt, never trusted
            logger.warning("cache entry %s is unreadable (%s); rebuilding it", path, exc)
            path.unlink(missing_ok=True)
            return None
        if digest.hexdigest() != expected.get("sha256") or len(vectors) != count or vectors.dtype != np.float32:
            logger.warning("cache entry %s does not match its checksum; rebuilding it", path)
            path.unlink(missing_ok=True)
            return None
        return vectors
