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
import threading
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
    """Float32 vectors with one JSON-serialisable payload each; exact top-k by inner product. ``add`` and
    ``search`` may run from several threads (each add is stored whole, a search sees whole adds only); copies and
    pickles leave the lock and the FAISS index behind (the FAISS index is built again when needed)."""

    def __init__(self, dim: int | None = None, use_faiss: bool = False) -> None:
        self.dim = dim
        self.use_faiss = use_faiss
        self._vectors = np.zeros((0, dim or 0), dtype=np.float32)
        self._payloads: list[dict[str, Any]] = []
        self._faiss: Any = None
        self._lock = threading.Lock()
        self.payload_format: str | None = None  # what a loaded file says its payloads hold

    def __len__(self) -> int:
        return len(self._payloads)

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            state = dict(self.__dict__)
        del state["_lock"]
        state["_faiss"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

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
        copies = [copy.deepcopy(dict(p)) for p in payloads]  # the caller's objects stay theirs
        with self._lock:
            dim = int(array.shape[1]) if self.dim is None else self.dim
            if array.shape[1] != dim:
                raise ValueError(f"vectors have dimension {array.shape[1]}, the index holds dimension {dim}")
            if not np.isfinite(array).all():
                bad = int(np.where(~np.isfinite(array).all(axis=1))[0][0])
                raise ValueError(f"vector {bad} holds NaN or infinity")
            start = len(self._payloads)
            stored = np.concatenate([self._vectors, array]) if start else array.copy()
            self._payloads.extend(copies)
            self._vectors, self.dim = stored, dim
            self._faiss = None
        return list(range(start, start + len(array)))

    def search(self, queries: Any, k: int) -> list[list[tuple[int, float]]]:
        """For each query vector, up to ``k`` (position, score) pairs, best first (ties: lower position)."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        k = check_positive_int(k, "k", allow_none=False)
        with self._lock:  # the vectors of whole adds only, and a FAISS index built from them
            vectors = self._vectors
            if self.use_faiss and len(vectors):
                faiss_index = self._faiss = self._faiss or _faiss_index(vectors)
        if len(vectors) == 0:
            return [[] for _ in range(len(q))]
        if q.shape[1] != vectors.shape[1]:
            raise ValueError(f"query vectors have dimension {q.shape[1]}, the index holds dimension {self.dim}")
        k = min(k, len(vectors))
        if self.use_faiss:
            scores, ids = faiss_index.search(np.ascontiguousarray(q), k)
            return [[(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
                    for row_ids, row_scores in zip(ids, scores, strict=True)]
        scores = q @ vectors.T
        results = []
        for row in scores:
            top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            # ties at the cut are settled by position, so the ranking is deterministic
            threshold = row[top].min()
            candidates = np.flatnonzero(row >= threshold)
            order = candidates[np.lexsort((candidates, -row[candidates]))][:k]
            results.append([(int(i), float(row[i])) for i in order])
        return results

    # persistence ------------------------------------------------------------------------------

    def save(
        self, path: str | os.PathLike[str], settings: Mapping[str, Any] | None = None, payload_format: str | None = None
    ) -> None:
        """Write the index to one file, atomically (a temporary file renamed into place); ``payload_format``
        names what the payloads hold (e.g. the class that wrote them), for :meth:`load` to tell."""
        with self._lock:  # whole adds only
            vectors, payloads, dim = self._vectors, list(self._payloads), self.dim
        parts = {"vectors.npy": array_bytes(vectors), "payloads.jsonl": payload_bytes(payloads)}
        manifest = {"format": FORMAT, "version": VERSION, "count": len(payloads), "dim": dim,
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


def _faiss_index(vectors: np.ndarray) -> Any:
    """A FAISS ``IndexFlatIP`` holding ``vectors``."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("use_faiss=True needs FAISS: pip install 'flagstack[faiss]'") from exc
    index = faiss.IndexFlatIP(int(vectors.shape[1]))
    index.add(vectors)
    return index
