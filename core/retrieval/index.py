"""An in-memory vector index: exact inner-product search, with JSON payloads, saved atomically.

This is the one index implementation behind the LangChain and LlamaIndex retrievers. Search is a
numpy matrix product plus a partial sort (FAISS ``IndexFlatIP`` on request: same ranking). A saved
index is one zip file holding a manifest (format version, sizes, SHA-256 of each part, and the
embedding settings it was built with), the vectors and the payloads; loading checks all of it before
anything is returned.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..inference.inputs import check_positive_int
from .archive import (
    IndexFileError,
    array_bytes,
    manifest_count,
    payload_bytes,
    read_archive,
    read_array,
    read_payloads,
    write_archive,
)

FORMAT = "flagstack-index"
VERSION = 1


class VectorIndex:
    """Float32 vectors with one JSON-serialisable payload each; exact top-k by inner product."""

    def __init__(self, dim: int | None = None, use_faiss: bool = False) -> None:
        self.dim = dim
        self.use_faiss = use_faiss
        self._vectors = np.zeros((0, dim or 0), dtype=np.float32)
        self._payloads: list[dict[str, Any]] = []
        self._faiss: Any = None
        self.payload_format: str | None = None  # what a loaded file says its payloads hold

    def __len__(self) -> int:
        return len(self._payloads)

    @classmethod
    def restored(cls, vectors: np.ndarray, payloads: list[dict[str, Any]], use_faiss: bool = False) -> VectorIndex:
        """An index holding ``vectors`` ((n, dim) float32, finite) and ``payloads`` (JSON objects) as they are: for
        readers that checked both (no copies, no second check)."""
        index = cls(dim=int(vectors.shape[1]), use_faiss=use_faiss)
        index._vectors, index._payloads = vectors, payloads
        return index

    @property
    def vectors(self) -> np.ndarray:
        """The stored vectors, (n, dim) float32 (read-only view)."""
        view = self._vectors.view()
        view.flags.writeable = False
        return view

    @property
    def payloads(self) -> list[dict[str, Any]]:
        """Copies of every payload (editing them never changes the index)."""
        return copy.deepcopy(self._payloads)

    def payload(self, position: int) -> dict[str, Any]:
        """A copy of one payload (editing it never changes the index)."""
        return copy.deepcopy(self._payloads[position])

    def add(self, vectors: Any, payloads: Sequence[Mapping[str, Any]]) -> list[int]:
        """Append vectors with their payloads; returns their positions in the index. Payloads that cannot be saved
        as JSON are refused here (a TypeError naming the first), so that every index can be saved."""
        payload_bytes(payloads)
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError(f"vectors must be a 2-D array (n, dim), got shape {array.shape}")
        if len(array) != len(payloads):
            raise ValueError(f"{len(array)} vectors but {len(payloads)} payloads: give one payload per vector")
        if self.dim is None:
            self.dim = int(array.shape[1])
            self._vectors = self._vectors.reshape(0, self.dim)
        if array.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {array.shape[1]}, the index holds dimension {self.dim}")
        if not np.isfinite(array).all():
            bad = int(np.where(~np.isfinite(array).all(axis=1))[0][0])
            raise ValueError(f"vector {bad} holds NaN or infinity")
        start = len(self._payloads)
        self._vectors = np.concatenate([self._vectors, array]) if start else array.copy()
        self._payloads.extend(copy.deepcopy(dict(p)) for p in payloads)  # the caller's objects stay theirs
        self._faiss = None
        return list(range(start, start + len(array)))

    def search(self, queries: Any, k: int) -> list[list[tuple[int, float]]]:
        """For each query vector, up to ``k`` (position, score) pairs, best first (ties: lower position)."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        k = check_positive_int(k, "k", allow_none=False)
        if len(self) == 0:
            return [[] for _ in range(len(q))]
        if q.shape[1] != self.dim:
            raise ValueError(f"query vectors have dimension {q.shape[1]}, the index holds dimension {self.dim}")
        k = min(k, len(self))
        if self.use_faiss:
            return self._search_faiss(q, k)
        scores = q @ self._vectors.T
        results = []
        for row in scores:
            top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            # ties at the cut are settled by position, so the ranking is deterministic
            threshold = row[top].min()
            candidates = np.flatnonzero(row >= threshold)
            order = candidates[np.lexsort((candidates, -row[candidates]))][:k]
            results.append([(int(i), float(row[i])) for i in order])
        return results

    def _search_faiss(self, q: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        try:
            import faiss
        except ImportError as exc:
            raise ImportError("use_faiss=True needs FAISS: pip install 'flagstack[faiss]'") from exc
        if self._faiss is None:
            self._faiss = faiss.IndexFlatIP(int(self._vectors.shape[1]))
            self._faiss.add(self._vectors)
        scores, ids = self._faiss.search(np.ascontiguousarray(q), k)
        return [[(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
                for row_ids, row_scores in zip(ids, scores, strict=True)]

    # persistence ------------------------------------------------------------------------------

    def save(
        self, path: str | os.PathLike[str], settings: Mapping[str, Any] | None = None, payload_format: str | None = None
    ) -> None:
        """Write the index to one file, atomically (a temporary file renamed into place); ``payload_format``
        names what the payloads hold (e.g. the class that wrote them), for :meth:`load` to tell."""
        parts = {"vectors.npy": array_bytes(self._vectors), "payloads.jsonl": payload_bytes(self._payloads)}
        manifest = {"format": FORMAT, "version": VERSION, "count": len(self), "dim": self.dim,
                    "settings": dict(settings or {}), "payload_format": payload_format}
        write_archive(path, manifest, parts)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], settings: Mapping[str, Any] | None = None, use_faiss: bool = False
    ) -> VectorIndex:
        """Read an index written by :meth:`save`, checking format, version, checksums, sizes, values and (when
        given) that it was built with the same ``settings``."""
        manifest, parts = read_archive(path, FORMAT, VERSION, ("vectors.npy", "payloads.jsonl"), settings)
        count = manifest_count(manifest, "count", path)
        empty = count == 0 and manifest.get("dim") is None  # an index saved before its first vector has no dim
        dim = None if empty else manifest_count(manifest, "dim", path)
        vectors = read_array(parts["vectors.npy"], f"{path}: vectors.npy", "<f4", 2, finite=True)
        if vectors.shape != (count, dim or 0):
            raise IndexFileError(f"{path}: vectors.npy holds shape {vectors.shape}; its manifest says "
                                 f"({count}, {dim})")
        payloads = read_payloads(parts["payloads.jsonl"], f"{path}: payloads.jsonl", count)
        index = cls(dim=dim, use_faiss=use_faiss)
        index._vectors = vectors
        index._payloads = payloads
        index.payload_format = manifest.get("payload_format")
        return index
