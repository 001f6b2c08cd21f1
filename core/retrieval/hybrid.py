"""Retrieval with all three BGE-M3 outputs: dense vectors, sparse lexical weights, ColBERT multi-vectors.

:class:`HybridIndex` keeps each document's dense vector (an exact :class:`~.index.VectorIndex`), its lexical weights (an
inverted index: token id -> the documents that hold it and their weights, never a vocabulary-wide matrix) and its
ColBERT vectors, under an id (given or generated: :meth:`HybridIndex.get`, :meth:`HybridIndex.upsert` and
:meth:`HybridIndex.delete` work by id). A search (optionally restricted by a metadata filter, applied before any
candidate is taken: :mod:`.filters`) takes the best ``candidates`` documents by dense and by sparse score, scores their
union in every mode, and ranks by the chosen mode; ColBERT MaxSim is computed for those candidates only, so its cost
grows with the candidates, not with the corpus. Scores fuse as FlagEmbedding's ``compute_score`` fuses them
(:func:`flag_core.inference.fusion.fuse`, the one fusion): ``(w_colbert * colbert + w_sparse * sparse + w_dense * dense)
/ (w_dense + w_sparse + w_colbert)``. The mode names are :data:`flag_core.inference.fusion.MODES` ("hybrid" is
FlagEmbedding's "colbert+sparse+dense", accepted as an alias).
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..inference.fusion import COLBERT_MODES, canonical_mode, check_mode_weights, fuse, maxsim
from ..inference.fusion import MODES as MODES  # re-exported: the adapters, the command line and evaluation
from ..inference.inputs import check_positive_int
from ..inference.m3 import BGEM3FlagModel
from .archive import (
    IndexFileError,
    array_bytes,
    check_offsets,
    manifest_count,
    payload_bytes,
    read_archive,
    read_array,
    read_payloads,
    write_archive,
)
from .dense import Entry, PayloadFormat, _rows_id, check_rows, check_texts, rows_where
from .filters import Filter
from .index import VectorIndex, Where, ids_bytes, read_ids

FORMAT = "flagstack-hybrid-index"
VERSION = 3  # 2: ColBERT rows stored as colbert_storage says; 3: ids.json (files of 1 and 2 get ids made for them)
VERSIONS = (1, 2, 3)  # read
DEFAULT_WEIGHTS = (0.4, 0.2, 0.4)  # dense, sparse, colbert: the weights FlagEmbedding suggests for bge-m3
DEFAULT_CANDIDATES = 100
PARTS = ("dense.npy", "payloads.jsonl", "sparse_ids.npy", "sparse_weights.npy", "sparse_offsets.npy", "colbert.npy",
         "colbert_offsets.npy")
OPTIONAL_PARTS = ("colbert_scales.npy", "ids.json")  # int8, int4 and binary ColBERT storage; version 3
COLBERT_STORAGE = ("float16", "float32", "int8", "int4", "binary")
"""How :class:`MultiVectors` stores ColBERT rows (``colbert_storage`` of :class:`HybridIndex`)."""
DEFAULT_COLBERT_STORAGE = "float16"  # half float32's bytes, the same nDCG@10 on SciFact
SCALED_STORAGE = ("int8", "int4", "binary")  # one float32 scale a row, in colbert_scales.npy
PACKED_STORAGE = {"int4": 2, "binary": 8}  # codes a byte
_STORED_DTYPES = {"float32": "<f4", "float16": "<f2", "int8": "|i1", "int4": "|u1", "binary": "|u1"}


def _packed_width(storage: str, dim: int) -> int:
    """Bytes a row of ``dim`` values takes in ``storage``."""
    per_byte = PACKED_STORAGE.get(storage, 1)
    return (dim + per_byte - 1) // per_byte


_CHUNK_ROWS = 8192  # token rows read back at once for a compact kind's MaxSim (12 MiB at 384 dimensions)
# float16 rows are read back by torch's vectorised conversion (several times numpy's), in pieces of at most this many
# values: below torch's parallel grain size, so it runs on the calling thread and never wakes a thread pool that
# would contend with numpy's BLAS threads (that contention made whole-document conversions 50x slower here)
_SERIAL_VALUES = 32768


def _tensor(rows: np.ndarray) -> torch.Tensor:
    """A torch view of ``rows`` (a copy where the array is read-only or not contiguous)."""
    if not rows.flags.writeable or not rows.flags.c_contiguous:
        rows = np.array(rows, order="C")
    return torch.from_numpy(rows)


def check_colbert_storage(storage: Any) -> str:
    """``storage`` if it is one of :data:`COLBERT_STORAGE`, else a ValueError naming them."""
    if not isinstance(storage, str) or storage not in COLBERT_STORAGE:
        raise ValueError(f"colbert_storage must be one of {', '.join(COLBERT_STORAGE)}; got {storage!r}")
    return storage


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
        """Token ids (sorted int64) and weights (float32) of lexical weights keyed by the id as a str; a ValueError
        for an id that is not a non-negative integer, an id given twice, or a weight that is NaN or infinite."""
        try:
            ids = np.fromiter((int(token) for token in weights), dtype=np.int64, count=len(weights))
            values = np.fromiter(weights.values(), dtype=np.float32, count=len(weights))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"lexical weights must map token ids to numbers ({exc})") from exc
        order = np.argsort(ids, kind="stable")
        ids, values = ids[order], values[order]
        if (ids < 0).any() or (np.diff(ids) == 0).any():
            raise ValueError("lexical weights hold a negative or repeated token id")
        if not np.isfinite(values).all():
            raise ValueError("lexical weights hold NaN or infinity")
        return ids, values

    def add(self, documents: Sequence[Mapping[str, float]]) -> None:
        """Append documents' lexical weights (all checked before any is stored)."""
        self.append([self.arrays(weights) for weights in documents])

    def append(self, documents: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Append documents' (ids, weights) as :meth:`arrays` gives them."""
        for ids, values in documents:
            self._ids.append(ids)
            self._weights.append(values)
        self._postings = None

    def keep(self, keep: np.ndarray | None) -> None:
        """Keep only the documents where ``keep`` (a bool per document; None: all) is true."""
        if keep is not None:
            self._ids = [ids for ids, kept in zip(self._ids, keep, strict=True) if kept]
            self._weights = [weights for weights, kept in zip(self._weights, keep, strict=True) if kept]
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
            "sparse_offsets.npy": array_bytes(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)),
        }

    @classmethod
    def from_parts(cls, parts: Mapping[str, bytes], path: str | os.PathLike[str], count: int) -> SparseIndex:
        """The ``count`` documents of :meth:`parts` read from ``path``, checked (an IndexFileError naming the part):
        int64 ids, finite float32 weights of the same length, offsets from 0 to their end, ids ascending and
        unique within each document."""
        index = cls()
        ids = read_array(parts["sparse_ids.npy"], f"{path}: sparse_ids.npy", "<i8", 1)
        weights = read_array(parts["sparse_weights.npy"], f"{path}: sparse_weights.npy", "<f4", 1, finite=True)
        offsets = read_array(parts["sparse_offsets.npy"], f"{path}: sparse_offsets.npy", "<i8", 1)
        if len(weights) != len(ids):
            raise IndexFileError(f"{path}: sparse_weights.npy holds {len(weights)} weights for {len(ids)} token ids")
        check_offsets(offsets, count, len(ids), f"{path}: sparse_offsets.npy")
        within = np.ones(max(len(ids) - 1, 0), dtype=bool)  # pairs of neighbours in the same document
        starts = offsets[1:-1]
        within[starts[(starts > 0) & (starts < len(ids))] - 1] = False
        if (ids < 0).any() or (np.diff(ids)[within] <= 0).any():
            raise IndexFileError(f"{path}: sparse_ids.npy holds negative token ids, or ids out of order within a "
                                 "document (corrupted)")
        index._ids = [ids[a:b] for a, b in itertools.pairwise(offsets.tolist())]
        index._weights = [weights[a:b] for a, b in itertools.pairwise(offsets.tolist())]
        return index


class MultiVectors:
    """Each document's ColBERT vectors (token rows), for MaxSim against a query's, stored as ``storage`` says
    (:data:`COLBERT_STORAGE`): "float32" as given; "float16" (the default); "int8", each row scaled by its largest
    magnitude (symmetric, one float32 scale a row); "int4", the same with 15 levels (-7..7) packed two a byte;
    "binary", each dimension's sign (1 bit) with one float32 scale
    a row (``|row|² / |row|₁``, which keeps the row's projection on itself), so a row reads back as ``±scale``.
    MaxSim always runs in float32 on the rows read back (:meth:`document`) with the query's float32 vectors (the
    full-precision side: no document keeps float rows to rescore against), so every kind's scores are on float32's
    scale and fuse with dense and sparse scores as they do."""

    def __init__(self, storage: str = DEFAULT_COLBERT_STORAGE) -> None:
        self.storage = check_colbert_storage(storage)
        self._rows: list[np.ndarray] = []  # per document: its rows as stored (float32, float16, int8 or packed bits)
        self._scales: list[np.ndarray] = []  # per document: one float32 scale a row (int8, int4, binary only)
        self._dim: int | None = None

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def dim(self) -> int | None:
        """The size of the stored vectors (None while none is stored)."""
        return self._dim if self._rows else None

    @staticmethod
    def rows(vectors: Any, dim: int | None = None) -> np.ndarray:
        """One document's ColBERT vectors as a (tokens, dim) float32 array, or a ValueError: not 2-D, another
        ``dim`` than given, NaN or infinity."""
        rows = np.ascontiguousarray(vectors, dtype=np.float32)
        if rows.ndim != 2 or (dim is not None and rows.shape[1] != dim):
            raise ValueError(f"ColBERT vectors must be a (tokens, {dim or 'dim'}) array, got shape {rows.shape}")
        if not np.isfinite(rows).all():
            raise ValueError("ColBERT vectors hold NaN or infinity")
        return rows

    def encode(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """One document's float32 rows as this store keeps them: (rows, per-row scales or None)."""
        if self.storage == "float32":
            return rows, None
        if self.storage == "float16":
            with np.errstate(over="ignore"):
                half = rows.astype(np.float16)
            if not np.isfinite(half).all():
                raise ValueError("ColBERT vectors exceed float16's range; use colbert_storage='float32'")
            return half, None
        if self.storage in ("int8", "int4"):
            top = 127 if self.storage == "int8" else 7
            scales = (np.abs(rows).max(axis=1, initial=0.0) / top).astype(np.float32)
            safe = np.where(scales > 0, scales, 1)[:, None]
            codes = np.clip(np.rint(rows / safe), -top, top).astype(np.int8)
            if self.storage == "int8":
                return codes, scales
            nibbles = (codes + 8).astype(np.uint8)  # 1..15; 0 is never written
            if nibbles.shape[1] % 2:
                nibbles = np.concatenate([nibbles, np.full((len(nibbles), 1), 8, np.uint8)], axis=1)
            return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4), scales
        # the scale that keeps each row's projection on itself: (scale * signs) . row == row . row, so ColBERT
        # scores keep float32's scale (MaxSim fuses with dense and sparse scores by weight)
        l1 = np.abs(rows).sum(axis=1, dtype=np.float64)
        squares = np.square(rows, dtype=np.float64).sum(axis=1)
        scales = np.divide(squares, l1, out=np.zeros_like(l1), where=l1 > 0).astype(np.float32)
        return np.packbits(rows > 0, axis=1), scales

    def add(self, documents: Sequence[Any]) -> None:
        """Append documents' ColBERT vectors (all checked before any is stored)."""
        self.append([self.rows(rows) for rows in documents])

    def append(self, documents: Sequence[np.ndarray]) -> None:
        """Append documents' vectors as :meth:`rows` gives them; all must have the stored size (all are checked
        and encoded before any is stored)."""
        dim = self.dim
        for i, rows in enumerate(documents):
            if dim is not None and rows.shape[1] != dim:
                raise ValueError(f"ColBERT vectors of document {i} have size {rows.shape[1]}, the index holds {dim}")
            dim = int(rows.shape[1])
        self.store([self.encode(rows) for rows in documents], dim)

    def store(self, encoded: Sequence[tuple[np.ndarray, np.ndarray | None]], dim: int | None) -> None:
        """Append documents as :meth:`encode` gave them (rows of size ``dim``, checked by the caller)."""
        for stored, scales in encoded:
            self._rows.append(stored)
            if scales is not None:
                self._scales.append(scales)
        if dim is not None and encoded:
            self._dim = dim

    def keep(self, keep: np.ndarray | None) -> None:
        """Keep only the documents where ``keep`` (a bool per document; None: all) is true (an index without
        ColBERT vectors keeps none)."""
        if keep is not None and self._rows:
            self._rows = [rows for rows, kept in zip(self._rows, keep, strict=True) if kept]
            if self._scales:
                self._scales = [scales for scales, kept in zip(self._scales, keep, strict=True) if kept]

    def document(self, position: int) -> np.ndarray:
        """One document's rows as float32, read back from how they are stored."""
        rows = self._rows[position]
        if self.storage == "float32":
            return rows
        if self.storage == "float16":
            return rows.astype(np.float32)
        scales = self._scales[position][:, None]
        if self.storage == "int8":
            return rows.astype(np.float32) * scales
        if self.storage == "int4":
            nibbles = np.empty((len(rows), 2 * rows.shape[1]), dtype=np.int8)
            nibbles[:, 0::2] = rows & 0x0F
            nibbles[:, 1::2] = rows >> 4
            return (nibbles[:, :self._dim or 0].astype(np.float32) - 8) * scales
        signs = np.unpackbits(rows, axis=1, count=self._dim or 0).astype(np.float32) * 2 - 1
        return signs * scales

    def maxsim(self, query: np.ndarray, positions: Sequence[int]) -> np.ndarray:
        """ColBERT scores of ``query`` with the documents at ``positions`` (only those), in float32 against the
        rows read back (:meth:`document`), as FlagEmbedding computes it. float32 rows are scored as they are stored,
        one document at a time; the compact kinds are read back into one float32 buffer of up to 8,192 rows at a
        time and scored with one matrix product per buffer (reading rows back into a new array per document cost
        more than the MaxSim; the shared product may round a score one float32 unit differently)."""
        if self.storage == "float32" or not len(positions):
            return maxsim(query, [self._rows[position] for position in positions])
        q = np.ascontiguousarray(query, dtype=np.float32)
        out = np.zeros(len(positions), dtype=np.float64)
        if q.shape[0] == 0:
            return out
        sizes = [len(self._rows[position]) for position in positions]
        buffer = np.empty((min(sum(sizes), max(_CHUNK_ROWS, *sizes)), self._dim or q.shape[1]), dtype=np.float32)
        first = 0
        while first < len(positions):
            last, rows = first, 0
            while last < len(positions) and rows + sizes[last] <= len(buffer):
                rows += sizes[last]
                last += 1
            starts = np.concatenate([[0], np.cumsum(sizes[first:last])])
            for position, start, end in zip(positions[first:last], starts[:-1], starts[1:], strict=True):
                self._read_into(position, buffer[start:end])
            scores = q @ buffer[:rows].T
            for i, (start, end) in enumerate(itertools.pairwise(starts)):
                if end > start:
                    out[first + i] = float(scores[:, start:end].max(axis=1).sum() / q.shape[0])
            first = last
        return out

    def _read_into(self, position: int, target: np.ndarray) -> None:
        """One document's rows read back, the float32 values :meth:`document` gives, into ``target``."""
        rows = self._rows[position]
        if self.storage == "float16":
            source, into = _tensor(rows), torch.from_numpy(target)
            step = max(1, _SERIAL_VALUES // max(rows.shape[1], 1))
            for start in range(0, len(rows), step):
                into[start:start + step].copy_(source[start:start + step])
        elif self.storage == "int8":
            np.multiply(rows, self._scales[position][:, None], out=target, casting="unsafe")
        else:
            target[...] = self.document(position)

    def converted(self, storage: str) -> MultiVectors:
        """The same documents stored as ``storage`` (from the rows read back: a lossy kind's loss stays)."""
        store = MultiVectors(storage)
        store.append([self.document(i) for i in range(len(self))])
        store._dim = self._dim
        return store

    def parts(self) -> dict[str, bytes]:
        """The archive parts: colbert.npy (rows as stored), colbert_offsets.npy and, for int8, int4 and binary,
        colbert_scales.npy."""
        sizes = np.array([len(rows) for rows in self._rows], dtype=np.int64)
        dim = self.dim or 0
        width = _packed_width(self.storage, dim)
        dtype = _STORED_DTYPES[self.storage]
        data = np.concatenate(self._rows) if self._rows else np.zeros((0, width), dtype)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        parts = {"colbert.npy": array_bytes(data), "colbert_offsets.npy": array_bytes(offsets)}
        if self.storage in SCALED_STORAGE:
            scales = np.concatenate(self._scales) if self._scales else np.zeros(0, np.float32)
            parts["colbert_scales.npy"] = array_bytes(scales.astype(np.float32))
        return parts

    @classmethod
    def from_parts(
        cls, parts: Mapping[str, bytes], path: str | os.PathLike[str], count: int, dim: int | None,
        storage: str = "float32",
    ) -> MultiVectors:
        """The ``count`` documents of :meth:`parts` read from ``path`` (0 for an index without ColBERT vectors),
        stored as ``storage``, checked (an IndexFileError naming the part): rows of the kind's dtype (finite floats;
        int8 codes within ±127; int4 codes 1..15 packed in ``ceil(dim / 2)`` bytes; packed bits of ``ceil(dim / 8)``
        bytes) of size ``dim`` (when known, and always for int4 and binary), finite non-negative scales one a row (int8,
        int4 and binary only), offsets from 0 to their end."""
        store = cls(storage)
        where = f"{path}: colbert.npy"
        floats = storage in ("float32", "float16")
        data = read_array(parts["colbert.npy"], where, _STORED_DTYPES[storage], 2, finite=floats)
        offsets = read_array(parts["colbert_offsets.npy"], f"{path}: colbert_offsets.npy", "<i8", 1)
        check_offsets(offsets, count, len(data), f"{path}: colbert_offsets.npy")
        if storage in PACKED_STORAGE and len(data):
            if dim is None:
                raise IndexFileError(f"{path}: {storage} ColBERT vectors need their size (colbert_dim) in the manifest")
            width = _packed_width(storage, dim)
            if data.shape[1] != width:
                raise IndexFileError(f"{where} holds {data.shape[1]} bytes a row; {width} hold {dim} {storage} values")
            if storage == "int4" and (((data & 0x0F) == 0).any() or ((data >> 4) == 0).any()):
                raise IndexFileError(f"{where} holds a 0 code, which int4 storage never writes (corrupted)")
        elif dim is not None and len(data) and data.shape[1] != dim:
            raise IndexFileError(f"{where} holds vectors of size {data.shape[1]}; the model gives {dim}")
        if storage == "int8" and len(data) and int(data.min()) < -127:
            raise IndexFileError(f"{where} holds -128, which int8 storage never writes (corrupted)")
        spans = list(itertools.pairwise(offsets.tolist()))
        if storage in SCALED_STORAGE:
            if "colbert_scales.npy" not in parts:
                raise IndexFileError(f"{path} has no colbert_scales.npy, which {storage} storage needs (truncated?)")
            scales = read_array(parts["colbert_scales.npy"], f"{path}: colbert_scales.npy", "<f4", 1, finite=True)
            if len(scales) != len(data) or (scales < 0).any():
                raise IndexFileError(f"{path}: colbert_scales.npy holds {len(scales)} scales for {len(data)} rows, "
                                     "or a negative one (corrupted)")
            store._scales = [scales[a:b] for a, b in spans]
        elif "colbert_scales.npy" in parts:
            raise IndexFileError(f"{path} holds colbert_scales.npy, which {storage} storage never writes "
                                 "(inconsistent)")
        store._rows = [data[a:b] for a, b in spans]
        store._dim = dim if dim is not None else (int(data.shape[1]) if len(data) else None)
        return store


@dataclass(frozen=True)
class HybridHit:
    """One search result: where it sits, its text and payload, the ranking score, every mode's score and its id."""

    position: int
    text: str
    payload: dict[str, Any]
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    id: str = ""
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)
    """The stored dense vector, when the search was asked for it (``vectors=True``)."""


def check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    """BGE-M3's one rule for fusion weights (:func:`flag_core.inference.fusion.check_mode_weights`)."""
    return check_mode_weights(weights, "weights")


class HybridIndex:
    """Texts with payloads, searchable by BGE-M3's dense, sparse and ColBERT outputs (see the module docstring).

    ``add``, ``upsert``, ``delete``, ``search`` and ``save`` may run from several threads: texts are encoded outside the
    index's lock and a document's three outputs are stored, replaced and deleted together under it. ``copy.deepcopy``
    copies the documents and shares the model; :meth:`detached` / :meth:`attached` carry the documents without the model
    (for pickling a holder that builds its model again). ``colbert_storage`` is how ColBERT rows are kept, in memory and
    in the file (:class:`MultiVectors`: "float16" by default, "float32", "int8", "int4" or "binary")."""

    def __init__(
        self,
        model: BGEM3FlagModel,
        settings: Mapping[str, Any] | None = None,
        payload_format: PayloadFormat | None = None,
        multi_vectors: bool = True,
        colbert_storage: str = DEFAULT_COLBERT_STORAGE,
    ) -> None:
        self.model = model
        self.settings = dict(settings if settings is not None else model.signature())
        self.payload_format = payload_format
        self.multi_vectors = bool(multi_vectors)  # False: no ColBERT vectors kept (they are the bulk of the index)
        self.dense = VectorIndex()
        self.sparse = SparseIndex()
        self.colbert = MultiVectors(colbert_storage)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.dense)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self.dense

    @property
    def ids(self) -> list[str]:
        """Every document's id, in position order."""
        return self.dense.ids

    @property
    def revision(self) -> int:
        """A count of the changes made (a holder compares it to tell whether its saved file is current)."""
        return self.dense.revision

    @property
    def colbert_storage(self) -> str:
        """How the ColBERT rows are stored (:data:`COLBERT_STORAGE`)."""
        return self.colbert.storage

    # copies -------------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> HybridIndex:
        memo[id(self.model)] = self.model  # the model (its weights and locks) is shared, never copied
        with self._lock:
            state = copy.deepcopy(self.__getstate__(), memo)
        clone = type(self).__new__(type(self))
        clone.__setstate__(state)
        return clone

    def detached(self) -> dict[str, Any]:
        """The documents, settings and options without the model: picklable, for :meth:`attached`."""
        with self._lock:
            state = self.__getstate__()
        del state["model"]
        return state

    @classmethod
    def attached(cls, model: BGEM3FlagModel, detached: Mapping[str, Any]) -> HybridIndex:
        """The index :meth:`detached` gave, searched with ``model`` (which must have the index's settings)."""
        if dict(model.signature()) != detached.get("settings"):
            raise ValueError("the model's settings differ from the index's; attach the model it was built with")
        index = cls.__new__(cls)
        index.__setstate__({**detached, "model": model})
        return index

    # building and searching ---------------------------------------------------------------------

    def add(
        self, texts: Sequence[str], payloads: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Encode ``texts`` (all three outputs, one pass) and store them with their payloads and ``ids`` (None: new
        ones); returns their positions. A payload that cannot be saved as JSON (a TypeError naming it) or an id
        already in the index (a ValueError: use :meth:`upsert`) is refused before anything is encoded or stored."""
        return self._put(texts, payloads, ids, replace=False)[0]

    def upsert(
        self, texts: Sequence[str], payloads: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Encode ``texts`` and store them under ``ids``, replacing the documents that hold those ids (all three
        outputs, in one step: a search sees the old document or the new); returns the ids."""
        return self._put(texts, payloads, ids, replace=True)[1]

    def _put(
        self, texts: Sequence[str], payloads: Sequence[Mapping[str, Any]] | None, ids: Sequence[str | None] | None,
        replace: bool,
    ) -> tuple[list[int], list[str]]:
        texts, rows = check_texts(texts, payloads)
        self.dense.check_new(ids, len(texts), replace)  # before the encoding work
        if not texts:
            return [], []
        out = self.model.encode_corpus(texts, return_dense=True, return_sparse=True,
                                       return_colbert_vecs=self.multi_vectors)
        lexical = [SparseIndex.arrays(weights) for weights in out["lexical_weights"]]
        colbert = [MultiVectors.rows(rows) for rows in out["colbert_vecs"]] if self.multi_vectors else []
        encoded = [self.colbert.encode(rows) for rows in colbert]  # a float16 overflow is refused before storing

        with self._lock:  # one document's three outputs are stored together, or none of them
            dim = self.colbert.dim or (colbert[0].shape[1] if colbert else None)
            if any(rows.shape[1] != dim for rows in colbert):
                raise ValueError(f"the model's ColBERT vectors have another size than the index's ({dim})")
            # checks shapes, values and ids before anything changes
            result = self.dense.put(out["dense_vecs"], rows, ids, replace, self._kept)
            self.sparse.append(lexical)
            self.colbert.store(encoded, dim)
        return result

    def delete(self, ids: Iterable[str]) -> int:
        """Remove the documents with ``ids`` (all three outputs; ids not in the index are passed over); returns
        how many were removed."""
        with self._lock:
            return self.dense.delete(ids, changed=self._kept)

    def _kept(self, keep: np.ndarray | None) -> None:
        """Dense entries were removed (``keep``: a bool per old position): the other outputs follow."""
        self.sparse.keep(keep)
        self.colbert.keep(keep)

    def get(self, ids: Iterable[str]) -> list[Entry]:
        """The documents with ``ids`` (text and payload copies), in the order given; ids not in the index are left
        out."""
        return [Entry(value, row["text"], row["payload"]) for value, row in self.dense.get(ids)]

    def find(self, filter: Filter) -> list[str]:
        """The ids of the documents whose metadata ``filter`` accepts, in position order."""
        where = rows_where(filter, self.payload_format)
        return self.dense.find(where) if where is not None else self.dense.ids

    def search(
        self,
        query: str,
        k: int,
        mode: str = "hybrid",
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        candidates: int = DEFAULT_CANDIDATES,
        filter: Filter | None = None,
        vectors: bool = False,
        where: Where | None = None,
    ) -> list[HybridHit]:
        """The ``k`` best documents for ``query`` by ``mode`` (dense, sparse, colbert, sparse+dense or hybrid, or
        FlagEmbedding's colbert+sparse+dense for hybrid), best first (ties: lower position); each hit carries every
        mode's score, under the canonical names. The candidates are the ``candidates``
        best by dense and (positive) sparse score: for "dense" the dense ones, for "sparse" the sparse ones, for
        the others their union, which ColBERT rescores. With a metadata ``filter``, only the documents it accepts
        are candidates (exactly: the filter is applied before candidates are taken); ``where`` restricts them the
        same way by the stored rows (an adapter's restriction). With ``vectors``, each hit
        carries its stored dense vector, from the same state of the index as its scores (e.g. for maximal marginal
        relevance)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        k = check_positive_int(k, "k", allow_none=False)
        candidates = check_positive_int(candidates, "candidates", allow_none=False)
        mode = canonical_mode(mode)
        if mode in COLBERT_MODES and not self.multi_vectors:
            raise ValueError(f"mode={mode!r} needs ColBERT vectors; this index was built with multi_vectors=False")
        weights = check_weights(weights)
        where = rows_where(filter, self.payload_format, where)
        if not len(self):
            return []
        q = self.model.encode_queries(query, return_dense=True, return_sparse=True,
                                      return_colbert_vecs=mode in COLBERT_MODES)
        with self._lock:  # the stores as one state, never half of a concurrent add
            depth = min(max(candidates, k), len(self))
            allowed = self.dense.allowed(where)
            dense_all = self.dense.vectors @ q["dense_vecs"]
            sparse_all = self.sparse.scores(q["lexical_weights"])
            lexical_hits = _top(sparse_all, depth, positive=True, allowed=allowed) if mode != "dense" else []
            pool = lexical_hits if mode == "sparse" else _union(_top(dense_all, depth, allowed=allowed), lexical_hits)
            if not pool:
                return []
            colbert = self.colbert.maxsim(q["colbert_vecs"], pool) if mode in COLBERT_MODES else None
            scores = fuse(dense_all[pool], sparse_all[pool], colbert, weights)
            ranking = scores[mode]
            order = sorted(range(len(pool)), key=lambda i: (-ranking[i], pool[i]))[:k]
            rows = [self.dense.payload(pool[i]) for i in order]  # copies: a hit's payload is the caller's
            ids = self.dense.ids_at([pool[i] for i in order])
            stored = [self.dense.vectors[pool[i]].copy() for i in order] if vectors else [None] * len(order)
        return [HybridHit(position=pool[i], text=row["text"], payload=row["payload"], score=float(ranking[i]),
                          scores={name: float(values[i]) for name, values in scores.items()}, id=entry_id,
                          vector=vector)
                for i, row, entry_id, vector in zip(order, rows, ids, stored, strict=True)]

    # persistence ------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write every output, the ids, texts and payloads to one file, atomically (checksummed); returns the
        :attr:`revision` written (changes made meanwhile by other threads are not in the file)."""
        with self._lock:
            revision = self.revision
            parts = {"dense.npy": array_bytes(np.asarray(self.dense.vectors)),
                     "payloads.jsonl": payload_bytes(self.dense.payloads), "ids.json": ids_bytes(self.dense.ids),
                     **self.sparse.parts(), **self.colbert.parts()}
            storage = self.colbert.storage
            manifest = {"format": FORMAT, "version": VERSION, "count": len(self),
                        "settings": self.settings, "multi_vectors": self.multi_vectors,
                        "colbert_storage": storage, "colbert_dim": self.colbert.dim,
                        "payload_format": self.payload_format.name if self.payload_format else None}
        write_archive(path, manifest, parts)
        return revision

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], model: BGEM3FlagModel, payload_format: PayloadFormat | None = None,
        colbert_storage: str | None = None,
    ) -> HybridIndex:
        """Read a file written by :meth:`save`; it must have been built with ``model``'s settings. Every part is
        checked here (sizes, checksums, dtypes, shapes, offsets, values, payloads), so a damaged or crafted file
        is an :class:`IndexFileError` naming it and the part, never an error or a wrong score at search time.
        The ColBERT rows keep the file's storage (a version 1 file's: float32), or with ``colbert_storage``
        given, are converted to it (from the rows as stored: a lossy kind's loss stays). A file written before
        documents had ids (version 1 or 2) gets ids made for it (``payload_format.legacy_id`` where it gives
        one)."""
        if colbert_storage is not None:
            check_colbert_storage(colbert_storage)
        index = cls(model, payload_format=payload_format)
        manifest, parts = read_archive(path, FORMAT, VERSIONS, PARTS, index.settings, OPTIONAL_PARTS)
        storage = _manifest_storage(manifest, path)
        count = manifest_count(manifest, "count", path)
        dim, colbert_dim = (value if isinstance(value := index.settings.get(key), int) else None
                            for key in ("dimension", "colbert_dimension"))
        vectors = read_array(parts["dense.npy"], f"{path}: dense.npy", "<f4", 2, finite=True)
        if len(vectors) != count or (count and dim is not None and vectors.shape[1] != dim):
            raise IndexFileError(f"{path}: dense.npy holds shape {vectors.shape}; {count} vectors of size {dim} "
                                 "are expected")
        payloads = read_payloads(parts["payloads.jsonl"], f"{path}: payloads.jsonl", count)
        check_rows(path, manifest.get("payload_format"), payloads, payload_format)
        ids = read_ids(parts, path, count, manifest.get("version") in (1, 2), payloads,
                       _rows_id(payload_format.legacy_id if payload_format is not None else None))
        sparse = SparseIndex.from_parts(parts, path, count)
        multi_vectors = manifest.get("multi_vectors")
        if multi_vectors is None:  # written before the manifest said: an index without them has one offset
            multi_vectors = count == 0 or len(read_array(parts["colbert_offsets.npy"], f"{path}: colbert_offsets.npy",
                                                         "<i8", 1)) != 1
        if not isinstance(multi_vectors, bool):
            raise IndexFileError(f"{path}: its manifest's multi_vectors is {multi_vectors!r}, not true or false")
        saved_dim = manifest.get("colbert_dim")
        if saved_dim is not None and (isinstance(saved_dim, bool) or not isinstance(saved_dim, int) or saved_dim < 0
                                      or (colbert_dim is not None and saved_dim != colbert_dim)):
            raise IndexFileError(f"{path}: its manifest's colbert_dim is {saved_dim!r}; the model gives {colbert_dim}")
        colbert = MultiVectors.from_parts(parts, path, count if multi_vectors else 0,
                                          colbert_dim if colbert_dim is not None else saved_dim, storage)
        if colbert_storage is not None and colbert_storage != storage:
            colbert = colbert.converted(colbert_storage)
        if len(vectors):
            index.dense = VectorIndex.restored(vectors, payloads, ids)
        index.sparse, index.colbert, index.multi_vectors = sparse, colbert, multi_vectors
        return index


def _manifest_storage(manifest: Mapping[str, Any], path: str | os.PathLike[str]) -> str:
    """The ColBERT storage a manifest records: version 1 files hold float32 rows (the key absent or "float32"),
    later versions name one of :data:`COLBERT_STORAGE`; else an IndexFileError naming the file."""
    storage = manifest.get("colbert_storage", "float32" if manifest.get("version") == 1 else None)
    allowed = ("float32",) if manifest.get("version") == 1 else COLBERT_STORAGE
    if storage not in allowed:
        raise IndexFileError(f"{path}: its manifest's colbert_storage is {storage!r}; a version "
                             f"{manifest.get('version')} file holds {' or '.join(allowed)}")
    return str(storage)


def _top(scores: np.ndarray, depth: int, positive: bool = False, allowed: np.ndarray | None = None) -> list[int]:
    """Positions of the ``depth`` highest scores (ties: lower position); with ``positive``, scores above 0 only;
    with ``allowed`` (a bool per position), those positions only."""
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
        depth = min(depth, int(allowed.sum()))
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
