"""Retrieval with all three BGE-M3 outputs: dense vectors, sparse lexical weights, ColBERT multi-vectors.

:class:`HybridIndex` keeps each document's dense vector (an exact :class:`~.index.VectorIndex`), its lexical
weights (an inverted index: token id -> the documents that hold it and their weights, never a vocabulary-wide
matrix) and its ColBERT vectors. A search takes the best ``candidates`` documents by dense and by sparse score,
scores their union in every mode, and ranks by the chosen mode; ColBERT MaxSim is computed for those candidates
only, so its cost grows with the candidates, not with the corpus. Scores fuse like FlagEmbedding's
``compute_score``: ``(w_dense * dense + w_sparse * sparse + w_colbert * colbert) / (w_dense + w_sparse + w_colbert)``.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..inference.inputs import check_positive_int
from ..inference.m3 import BGEM3FlagModel
from .archive import IndexFileError, array_bytes, payload_bytes, read_archive, read_array, read_payloads, write_archive
from .dense import PayloadFormat
from .index import VectorIndex

FORMAT = "flagstack-hybrid-index"
VERSION = 1
MODES = ("dense", "sparse", "colbert", "sparse+dense", "hybrid")
DEFAULT_WEIGHTS = (0.4, 0.2, 0.4)  # dense, sparse, colbert: the weights FlagEmbedding suggests for bge-m3
DEFAULT_CANDIDATES = 100


class SparseIndex:
    """Documents' lexical weights as an inverted index (token id -> postings of document and weight)."""

    def __init__(self) -> None:
        self._ids: list[np.ndarray] = []  # per document: its token ids (int64), sorted
        self._weights: list[np.ndarray] = []  # per document: their weights (float32)
        self._postings: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    @staticmethod
    def arrays(weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (sorted int64) and weights (float32) of lexical weights keyed by the id as a str."""
        ids = np.fromiter((int(token) for token in weights), dtype=np.int64, count=len(weights))
        values = np.fromiter(weights.values(), dtype=np.float32, count=len(weights))
        order = np.argsort(ids, kind="stable")
        return ids[order], values[order]

    def add(self, documents: Sequence[Mapping[str, float]]) -> None:
        for weights in documents:
            ids, values = self.arrays(weights)
            self._ids.append(ids)
            self._weights.append(values)
        self._postings = None

    def _inverted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self._postings is None:
            sizes = [len(ids) for ids in self._ids]
            tokens = np.concatenate(self._ids) if sizes else np.zeros(0, np.int64)
            weights = np.concatenate(self._weights) if sizes else np.zeros(0, np.float32)
            docs = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
            order = np.argsort(tokens, kind="stable")
            tokens, docs, weights = tokens[order], docs[order], weights[order]
            unique, starts = np.unique(tokens, return_index=True)
            self._postings = (unique, np.append(starts, len(tokens)), docs, weights)
        return self._postings

    def scores(self, query: Mapping[str, float]) -> np.ndarray:
        """The lexical matching score of ``query`` with every document."""
        unique, offsets, docs, weights = self._inverted()
        scores = np.zeros(len(self), dtype=np.float64)
        for token, weight in query.items():
            at = int(np.searchsorted(unique, int(token)))
            if at < len(unique) and unique[at] == int(token):
                span = slice(offsets[at], offsets[at + 1])
                scores[docs[span]] += weight * weights[span].astype(np.float64)  # one posting per document
        return scores

    def document(self, position: int) -> dict[str, float]:
        """One document's lexical weights (token id as a str -> weight)."""
        return {str(t): float(w) for t, w in zip(self._ids[position].tolist(), self._weights[position].tolist(),
                                                 strict=True)}

    def parts(self) -> dict[str, bytes]:
        sizes = np.array([len(ids) for ids in self._ids], dtype=np.int64)
        return {
            "sparse_ids.npy": array_bytes(np.concatenate(self._ids) if len(self) else np.zeros(0, np.int64)),
            "sparse_weights.npy": array_bytes(np.concatenate(self._weights) if len(self) else np.zeros(0, np.float32)),
            "sparse_offsets.npy": array_bytes(np.concatenate([[0], np.cumsum(sizes)])),
        }

    @classmethod
    def from_parts(cls, parts: Mapping[str, bytes]) -> SparseIndex:
        index = cls()
        ids, weights = read_array(parts["sparse_ids.npy"]), read_array(parts["sparse_weights.npy"])
        offsets = read_array(parts["sparse_offsets.npy"])
        index._ids = [ids[a:b] for a, b in itertools.pairwise(offsets)]
        index._weights = [weights[a:b] for a, b in itertools.pairwise(offsets)]
        return index


class MultiVectors:
    """Each document's ColBERT vectors (token rows), for MaxSim against a query's."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, documents: Sequence[np.ndarray]) -> None:
        self._rows.extend(np.ascontiguousarray(rows, dtype=np.float32) for rows in documents)

    def document(self, position: int) -> np.ndarray:
        return self._rows[position]

    def maxsim(self, query: np.ndarray, positions: Sequence[int]) -> np.ndarray:
        """ColBERT scores of ``query`` with the documents at ``positions`` (only those)."""
        q = np.asarray(query, dtype=np.float32)
        out = np.zeros(len(positions), dtype=np.float64)
        if len(q) == 0:
            return out
        for i, position in enumerate(positions):
            rows = self._rows[position]
            if len(rows):
                out[i] = float((q @ rows.T).max(axis=1).sum()) / len(q)
        return out

    def parts(self) -> dict[str, bytes]:
        sizes = np.array([len(rows) for rows in self._rows], dtype=np.int64)
        dim = self._rows[0].shape[1] if self._rows else 0
        data = np.concatenate(self._rows) if self._rows else np.zeros((0, dim), np.float32)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        return {"colbert.npy": array_bytes(data), "colbert_offsets.npy": array_bytes(offsets)}

    @classmethod
    def from_parts(cls, parts: Mapping[str, bytes]) -> MultiVectors:
        store = cls()
        data, offsets = read_array(parts["colbert.npy"]), read_array(parts["colbert_offsets.npy"])
        store._rows = [data[a:b] for a, b in itertools.pairwise(offsets)]
        return store


@dataclass(frozen=True)
class HybridHit:
    """One search result: where it sits, its text and payload, the ranking score and every mode's score."""

    position: int
    text: str
    payload: dict[str, Any]
    score: float
    scores: dict[str, float] = field(default_factory=dict)


def check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    """BGE-M3's one rule for fusion weights (:func:`flag_core.inference.m3.check_mode_weights`)."""
    from ..inference.m3 import check_mode_weights

    return check_mode_weights(weights, "weights")


class HybridIndex:
    """Texts with payloads, searchable by BGE-M3's dense, sparse and ColBERT outputs (see the module docstring)."""

    def __init__(
        self,
        model: BGEM3FlagModel,
        settings: Mapping[str, Any] | None = None,
        payload_format: PayloadFormat | None = None,
        multi_vectors: bool = True,
    ) -> None:
        self.model = model
        self.settings = dict(settings if settings is not None else model.signature())
        self.payload_format = payload_format
        self.multi_vectors = multi_vectors  # False: no ColBERT vectors kept (they are the bulk of the index)
        self.dense = VectorIndex()
        self.sparse = SparseIndex()
        self.colbert = MultiVectors()

    def __len__(self) -> int:
        return len(self.dense)

    def add(self, texts: Sequence[str], payloads: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
        """Encode ``texts`` (all three outputs, one pass) and store them with their payloads."""
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        if payloads is not None and len(payloads) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(payloads)} payloads: give one per text")
        if not texts:
            return []
        out = self.model.encode_corpus(texts, return_dense=True, return_sparse=True,
                                       return_colbert_vecs=self.multi_vectors)
        rows = [{"text": t, "payload": dict(payloads[i]) if payloads else {}} for i, t in enumerate(texts)]
        positions = self.dense.add(out["dense_vecs"], rows)
        self.sparse.add(out["lexical_weights"])
        if self.multi_vectors:
            self.colbert.add(out["colbert_vecs"])
        return positions

    def search(
        self,
        query: str,
        k: int,
        mode: str = "hybrid",
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        candidates: int = DEFAULT_CANDIDATES,
    ) -> list[HybridHit]:
        """The ``k`` best documents for ``query`` by ``mode`` (dense, sparse, colbert, sparse+dense or hybrid), best
        first (ties: lower position); each hit carries every mode's score. The candidates are the ``candidates``
        best by dense and (positive) sparse score: for "dense" the dense ones, for "sparse" the sparse ones, for
        the others their union, which ColBERT rescores."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        check_positive_int(k, "k", allow_none=False)
        check_positive_int(candidates, "candidates", allow_none=False)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode in ("colbert", "hybrid") and not self.multi_vectors:
            raise ValueError(f"mode={mode!r} needs ColBERT vectors; this index was built with multi_vectors=False")
        w_dense, w_sparse, w_colbert = check_weights(weights)
        if not len(self):
            return []
        q = self.model.encode_queries(query, return_dense=True, return_sparse=True,
                                      return_colbert_vecs=mode in ("colbert", "hybrid"))
        depth = min(max(candidates, k), len(self))
        dense_all = self.dense.vectors @ q["dense_vecs"]
        sparse_all = self.sparse.scores(q["lexical_weights"])
        lexical_hits = _top(sparse_all, depth, positive=True) if mode != "dense" else []
        pool = lexical_hits if mode == "sparse" else _union(_top(dense_all, depth), lexical_hits)
        if not pool:
            return []
        dense = dense_all[pool].astype(np.float64)
        sparse = sparse_all[pool]
        scores = {"dense": dense, "sparse": sparse,
                  "sparse+dense": (w_dense * dense + w_sparse * sparse) / max(w_dense + w_sparse, 1e-12)}
        if mode in ("colbert", "hybrid"):
            colbert = self.colbert.maxsim(q["colbert_vecs"], pool)
            scores["colbert"] = colbert
            scores["hybrid"] = (w_dense * dense + w_sparse * sparse + w_colbert * colbert) / (
                w_dense + w_sparse + w_colbert)
        ranking = scores[mode]
        order = sorted(range(len(pool)), key=lambda i: (-ranking[i], pool[i]))[:k]
        hits = []
        for i in order:
            row = self.dense.payload(pool[i])  # a copy: a hit's payload is the caller's
            hits.append(HybridHit(position=pool[i], text=row["text"], payload=row["payload"], score=float(ranking[i]),
                                  scores={name: float(values[i]) for name, values in scores.items()}))
        return hits

    # persistence ------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write every output, the texts and payloads to one file, atomically (checksummed)."""
        parts = {"dense.npy": array_bytes(np.asarray(self.dense.vectors)),
                 "payloads.jsonl": payload_bytes(self.dense.payloads), **self.sparse.parts(), **self.colbert.parts()}
        manifest = {"format": FORMAT, "version": VERSION, "count": len(self), "settings": self.settings,
                    "payload_format": self.payload_format.name if self.payload_format else None}
        write_archive(path, manifest, parts)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], model: BGEM3FlagModel, payload_format: PayloadFormat | None = None
    ) -> HybridIndex:
        """Read a file written by :meth:`save`; it must have been built with ``model``'s settings."""
        names = ("dense.npy", "payloads.jsonl", "sparse_ids.npy", "sparse_weights.npy", "sparse_offsets.npy",
                 "colbert.npy", "colbert_offsets.npy")
        index = cls(model, payload_format=payload_format)
        manifest, parts = read_archive(path, FORMAT, VERSION, names, index.settings)
        saved = manifest.get("payload_format")
        if payload_format is not None and saved is not None and saved != payload_format.name:
            raise IndexFileError(f"{path} was written by {saved}; load it with {saved}.load, not "
                                 f"{payload_format.name}.load")
        vectors, payloads = read_array(parts["dense.npy"]), read_payloads(parts["payloads.jsonl"])
        sparse, colbert = SparseIndex.from_parts(parts), MultiVectors.from_parts(parts)
        count = manifest.get("count")
        if not (len(vectors) == len(payloads) == len(sparse) == len(colbert) == count):
            raise IndexFileError(f"{path}: sizes disagree with its manifest")
        if len(vectors):
            index.dense.add(vectors, copy.deepcopy(payloads))
        index.sparse, index.colbert = sparse, colbert
        return index


def _top(scores: np.ndarray, depth: int, positive: bool = False) -> list[int]:
    """Positions of the ``depth`` highest scores (ties: lower position); with ``positive``, scores above 0 only."""
    if positive:
        depth = min(depth, int((scores > 0).sum()))
    depth = min(depth, len(scores))
    if depth <= 0:
        return []
    top = np.argpartition(-scores, depth - 1)[:depth] if depth < len(scores) else np.arange(len(scores))
    return sorted(top.tolist(), key=lambda i: (-scores[i], i))


def _union(first: list[int], second: list[int]) -> list[int]:
    seen = dict.fromkeys(first)
    seen.update(dict.fromkeys(second))
    return list(seen)
