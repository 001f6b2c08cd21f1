"""An in-memory vector index: exact inner-product search, with ids and JSON payloads, saved atomically.

This is the one index implementation behind the LangChain and LlamaIndex stores and retrievers. Every entry has an
id (given, or a generated UUID), so entries can be fetched, replaced and deleted. Search is a numpy matrix product
plus a partial sort (FAISS ``IndexFlatIP`` on request: same ranking), over every entry or over those a ``where``
function accepts (exactly: the filter is applied before the top-k cut). A saved index is one zip file holding a
manifest (format version, sizes, SHA-256 of each part, and the embedding settings it was built with), the vectors,
the payloads and the ids; loading checks all of it before anything is returned. Version 1 files (no ids) load with
ids made for them.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
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
VERSION = 2  # 2: ids.json (version 1 files load with ids made for them)
VERSIONS = (1, 2)  # read
Where = Callable[[dict[str, Any]], bool]
"""A search restriction: given an entry's stored payload (not a copy: never edit it), whether it may be returned. One
with a ``cache_key`` attribute (a str naming what it accepts, e.g. a filter mapping as JSON) has its answers kept
while the index is unchanged, so repeated searches with the same filter evaluate it once."""
_MASKS_KEPT = 8


def new_id() -> str:
    """A fresh entry id (a random UUID, as LangChain's and LlamaIndex's stores make them)."""
    return str(uuid.uuid4())


def check_ids(ids: Any, count: int | None = None, name: str = "ids", allow_none: bool = True) -> list[str | None]:
    """``ids`` as a list of str (or None where ``allow_none``: a new id is made), one per entry when ``count`` is
    given; a TypeError for a lone str (a common slip: it would be read letter by letter) or an id that is not a
    non-empty str, a ValueError for the wrong number or an id given twice."""
    if isinstance(ids, str | bytes | set | frozenset | Mapping) or not isinstance(ids, Iterable):
        raise TypeError(f"{name} must be a list of str, got {type(ids).__name__}" +
                        (f" ({ids!r}: wrap one id in a list)" if isinstance(ids, str) else "") +
                        (" (unordered: which entry gets which id would be chance)"
                         if isinstance(ids, set | frozenset | Mapping) else ""))
    ids = list(ids)
    if count is not None and len(ids) != count:
        raise ValueError(f"{count} entries but {len(ids)} {name}: give one id per entry")
    seen: set[str] = set()
    for i, value in enumerate(ids):
        if value is None and allow_none:
            continue
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name}[{i}] is {value!r}; an id is a non-empty str")
        if value in seen:
            raise ValueError(f"{name}[{i}] {value!r} is given twice; each entry needs its own id")
        seen.add(value)
    return ids


@dataclass(frozen=True)
class Found:
    """One search result of :meth:`VectorIndex.top`: position, id, score and a copy of the payload (and, when
    asked, the stored vector)."""

    position: int
    id: str
    score: float
    payload: dict[str, Any]
    vector: np.ndarray | None = None


class VectorIndex:
    """Float32 vectors with an id and one JSON-serialisable payload each; exact top-k by inner product. ``add``,
    ``delete`` and ``search`` may run from several threads (each change is made whole under a lock, a search sees
    whole changes only); copies and pickles leave the lock and the FAISS index behind (the FAISS index is built
    again when needed). ``revision`` counts the changes (a holder compares it to tell whether its file is current).

    Positions are where entries sit now: a delete moves the entries after it up (ids never change)."""

    def __init__(self, dim: int | None = None, use_faiss: bool = False) -> None:
        self.dim = dim
        self.use_faiss = use_faiss
        self._vectors = np.zeros((0, dim or 0), dtype=np.float32)
        # appended to in place, replaced whole by a delete: a reader's snapshot (the list and a length) stays valid
        self._payloads: list[dict[str, Any]] = []
        self._ids: list[str] = []
        self._where: dict[str, int] = {}  # id -> position
        self._faiss: Any = None
        self._lock = threading.Lock()
        self._masks: dict[str, tuple[int, np.ndarray]] = {}  # cache_key -> (revision, the entries it accepts)
        self.revision = 0
        self.payload_format: str | None = None  # what a loaded file says its payloads hold
        self.saved_settings: dict[str, Any] = {}  # the settings a loaded file records

    def __len__(self) -> int:
        return len(self._payloads)

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            state = dict(self.__dict__)
        del state["_lock"]
        state["_faiss"], state["_masks"] = None, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._masks = {}

    def __copy__(self) -> VectorIndex:
        """An index of its own (the containers copied, the stored payloads shared: they are never edited in place),
        so that changing the copy never changes this one."""
        clone = type(self).__new__(type(self))
        state = self.__getstate__()
        for name in ("_payloads", "_ids", "_where"):
            state[name] = copy.copy(state[name])
        clone.__setstate__(state)
        return clone

    @classmethod
    def restored(
        cls, vectors: np.ndarray, payloads: list[dict[str, Any]], ids: list[str] | None = None, use_faiss: bool = False,
    ) -> VectorIndex:
        """An index holding ``vectors`` ((n, dim) float32, finite), ``payloads`` (JSON objects) and ``ids`` (unique
        non-empty str; None: new ones) as they are: for readers that checked them (no copies, no second check)."""
        index = cls(dim=int(vectors.shape[1]), use_faiss=use_faiss)
        index._vectors, index._payloads = vectors, payloads
        index._ids = ids if ids is not None else [new_id() for _ in payloads]
        index._where = {value: i for i, value in enumerate(index._ids)}
        return index

    @property
    def ids(self) -> list[str]:
        """Every entry's id, in position order (a copy)."""
        with self._lock:
            return list(self._ids)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._where

    def positions(self, ids: Iterable[str]) -> list[int]:
        """Where the entries with ``ids`` sit now (ids not in the index are left out)."""
        with self._lock:
            return [self._where[value] for value in ids if value in self._where]

    def check_new(self, ids: Sequence[str | None] | None, count: int, replace: bool) -> None:
        """Check ``ids`` for ``count`` new entries before the work of embedding them: :func:`check_ids`, and unless
        ``replace``, none already in the index (a ValueError; checked again when they are stored)."""
        if ids is None:
            return
        present = [value for value in check_ids(ids, count) if value is not None and value in self._where]
        if present and not replace:
            raise _present(present[0])

    def ids_at(self, positions: Iterable[int]) -> list[str]:
        """The ids of the entries at ``positions``."""
        with self._lock:
            return [self._ids[i] for i in positions]

    def get(self, ids: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
        """(id, a copy of the payload) of each of ``ids`` in the index, in the order given (others left out)."""
        wanted = check_ids(ids, allow_none=False)
        with self._lock:
            found = [(value, self._payloads[self._where[value]]) for value in wanted if value in self._where]
        return [(value, copy.deepcopy(payload)) for value, payload in found]

    def find(self, where: Where) -> list[str]:
        """The ids of the entries ``where`` accepts, in position order."""
        payloads, ids, count = self._snapshot()
        return [ids[i] for i in range(count) if where(payloads[i])]

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

    def add(
        self, vectors: Any, payloads: Sequence[Mapping[str, Any]], ids: Sequence[str | None] | None = None,
        replace: bool = False,
    ) -> list[int]:
        """Append vectors with their payloads and ids (None, or a None in the list: a new id); returns their
        positions in the index. An id already in the index is a ValueError, unless ``replace``: then the entry
        holding it is removed in the same step (an upsert; a search sees the old entry or the new, never both or
        neither). Payloads that cannot be saved as JSON are refused here (a TypeError naming the first), so that
        every index can be saved. Nothing is stored unless everything is valid."""
        return self.put(vectors, payloads, ids, replace)[0]

    def put(
        self, vectors: Any, payloads: Sequence[Mapping[str, Any]], ids: Sequence[str | None] | None = None,
        replace: bool = False, changed: Callable[[np.ndarray | None], None] | None = None,
    ) -> tuple[list[int], list[str]]:
        """:meth:`add`, also returning the ids; for an index that keeps more per entry (the hybrid one),
        ``changed(keep)`` is told under the lock which old entries stay (a bool per old position; None: all)
        before the new ones are appended after them."""
        lines = payload_bytes(payloads)
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError(f"vectors must be a 2-D array (n, dim), got shape {array.shape}")
        if len(array) != len(payloads):
            raise ValueError(f"{len(array)} vectors but {len(payloads)} payloads: give one payload per vector")
        given = check_ids(ids, len(array)) if ids is not None else [None] * len(array)
        entry_ids = [value if value is not None else new_id() for value in given]
        # kept as the file keeps them (JSON: a tuple is a list, a key a str), so a search means the same before a
        # save and after a load; the caller's objects stay theirs
        copies = [json.loads(line) for line in lines.decode().split("\n")[:-1]]
        with self._lock:
            dim = int(array.shape[1]) if self.dim is None else self.dim
            if array.shape[1] != dim:
                raise ValueError(f"vectors have dimension {array.shape[1]}, the index holds dimension {dim}")
            if not np.isfinite(array).all():
                bad = int(np.where(~np.isfinite(array).all(axis=1))[0][0])
                raise ValueError(f"vector {bad} holds NaN or infinity")
            present = [value for value in entry_ids if value in self._where]
            if present and not replace:
                raise _present(present[0])
            keep = self._remove([self._where[value] for value in present]) if present else None
            if changed is not None:
                changed(keep)
            start = len(self._payloads)
            stored = np.concatenate([self._vectors, array]) if start else array.copy()
            self._payloads.extend(copies)
            for offset, value in enumerate(entry_ids):
                self._ids.append(value)
                self._where[value] = start + offset
            self._vectors, self.dim = stored, dim
            self._faiss = None
            self.revision += 1
        return list(range(start, start + len(array))), entry_ids

    def delete(self, ids: Iterable[str], changed: Callable[[np.ndarray], None] | None = None) -> int:
        """Remove the entries with ``ids`` (ids not in the index are passed over); returns how many were removed.
        ``changed(keep)`` is told, under the lock, which old entries stay (for an index keeping more per entry)."""
        wanted = check_ids(ids, allow_none=False)
        with self._lock:
            positions = [self._where[value] for value in wanted if value in self._where]
            if positions:
                keep = self._remove(positions)
                if changed is not None:
                    changed(keep)
                self._faiss = None
                self.revision += 1
        return len(positions)

    def _remove(self, positions: Sequence[int]) -> np.ndarray:
        """Drop the entries at ``positions`` (under the lock); returns the keep mask over the old positions."""
        keep = np.ones(len(self._payloads), dtype=bool)
        keep[list(positions)] = False
        self._vectors = self._vectors[keep]
        self._payloads = [payload for payload, kept in zip(self._payloads, keep, strict=True) if kept]  # a new list
        self._ids = [value for value, kept in zip(self._ids, keep, strict=True) if kept]
        self._where = {value: i for i, value in enumerate(self._ids)}
        return keep

    def _snapshot(self) -> tuple[list[dict[str, Any]], list[str], int]:
        with self._lock:
            return self._payloads, self._ids, len(self._payloads)

    def allowed(self, where: Where | None) -> np.ndarray | None:
        """The bool mask of the entries that ``where`` accepts (None: no filter)."""
        if where is None:
            return None
        with self._lock:
            rows, count, revision = self._payloads, len(self._payloads), self.revision
        return self._mask(where, rows, count, revision)

    def _mask(self, where: Where, rows: list[dict[str, Any]], count: int, revision: int) -> np.ndarray:
        """Which of the first ``count`` of ``rows`` (the state at ``revision``) ``where`` accepts; kept for a
        ``where`` with a ``cache_key`` until the index changes."""
        key = getattr(where, "cache_key", None)
        kept = self._masks.get(key) if isinstance(key, str) else None
        if kept is not None and kept[0] == revision and len(kept[1]) == count:
            return kept[1]
        mask = np.fromiter((bool(where(rows[i])) for i in range(count)), dtype=bool, count=count)
        mask.flags.writeable = False
        if isinstance(key, str):
            with self._lock:
                if len(self._masks) >= _MASKS_KEPT and key not in self._masks:
                    self._masks.pop(next(iter(self._masks)))
                self._masks[key] = (revision, mask)
        return mask

    def search(self, queries: Any, k: int, where: Where | None = None) -> list[list[tuple[int, float]]]:
        """For each query vector, up to ``k`` (position, score) pairs, best first (ties: lower position), among
        the entries ``where`` accepts (None: all)."""
        return [[(found.position, found.score) for found in row] for row in self.top(queries, k, where, False)]

    def top(
        self, queries: Any, k: int, where: Where | None = None, payloads: bool = True, vectors: bool = False,
    ) -> list[list[Found]]:
        """:meth:`search` with each result's id and (with ``payloads``) a copy of its payload and (with
        ``vectors``) its stored vector, all from one state of the index (a concurrent change is seen whole or not
        at all)."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        k = check_positive_int(k, "k", allow_none=False)
        with self._lock:  # whole changes only, and a FAISS index built from them
            stored, rows, ids, count = self._vectors, self._payloads, self._ids, len(self._payloads)
            revision = self.revision
            if self.use_faiss and count and where is None:
                faiss_index = self._faiss = self._faiss or _faiss_index(stored)
        if count == 0:
            return [[] for _ in range(len(q))]
        if q.ndim != 2 or q.shape[1] != stored.shape[1]:
            raise ValueError(f"query vectors have dimension {q.shape[-1]}, the index holds dimension "
                             f"{stored.shape[1]}")
        if not np.isfinite(q).all():
            raise ValueError(f"query vector {int(np.flatnonzero(~np.isfinite(q).all(axis=1))[0])} holds NaN or "
                             "infinity")
        mask = None if where is None else self._mask(where, rows, count, revision)
        if self.use_faiss and mask is None:
            scores, found = faiss_index.search(np.ascontiguousarray(q), min(k, count))
            ranked = [[(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
                      for row_ids, row_scores in zip(found, scores, strict=True)]
        else:
            ranked = [_ranked(row, k, mask) for row in q @ stored.T]
        return [[Found(i, ids[i], score, copy.deepcopy(rows[i]) if payloads else {},
                       stored[i].copy() if vectors else None) for i, score in row] for row in ranked]

    # persistence ------------------------------------------------------------------------------

    def save(
        self, path: str | os.PathLike[str], settings: Mapping[str, Any] | None = None, payload_format: str | None = None
    ) -> int:
        """Write the index to one file, atomically (a temporary file renamed into place); ``payload_format``
        names what the payloads hold (e.g. the class that wrote them), for :meth:`load` to tell. Returns the
        :attr:`revision` written (changes made meanwhile by other threads are not in the file)."""
        with self._lock:  # whole changes only
            vectors, payloads, ids, dim = self._vectors, list(self._payloads), list(self._ids), self.dim
            revision = self.revision
        parts = {"vectors.npy": array_bytes(vectors), "payloads.jsonl": payload_bytes(payloads),
                 "ids.json": ids_bytes(ids)}
        manifest = {"format": FORMAT, "version": VERSION, "count": len(payloads), "dim": dim,
                    "settings": dict(settings or {}), "payload_format": payload_format}
        write_archive(path, manifest, parts)
        return revision

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], settings: Mapping[str, Any] | None = None, use_faiss: bool = False,
        legacy_id: Callable[[dict[str, Any]], Any] | None = None,
    ) -> VectorIndex:
        """Read an index written by :meth:`save`, checking format, version, checksums, sizes, values, ids and
        (when given) that it was built with the same ``settings`` (the file's are ``saved_settings``). A version 1
        file (no ids) gets its entries' ids from ``legacy_id(payload)`` where that gives a str not given before, else
        new ones."""
        manifest, parts = read_archive(path, FORMAT, VERSIONS, ("vectors.npy", "payloads.jsonl"), settings,
                                       ("ids.json",))
        count = manifest_count(manifest, "count", path)
        empty = count == 0 and manifest.get("dim") is None  # an index saved before its first vector has no dim
        dim = None if empty else manifest_count(manifest, "dim", path)
        vectors = read_array(parts["vectors.npy"], f"{path}: vectors.npy", "<f4", 2, finite=True)
        if vectors.shape != (count, dim or 0):
            raise IndexFileError(f"{path}: vectors.npy holds shape {vectors.shape}; its manifest says "
                                 f"({count}, {dim})")
        payloads = read_payloads(parts["payloads.jsonl"], f"{path}: payloads.jsonl", count)
        ids = read_ids(parts, path, count, manifest.get("version") == 1, payloads, legacy_id)
        index = cls.restored(vectors, payloads, ids, use_faiss)
        index.dim = dim
        index.payload_format = manifest.get("payload_format")
        index.saved_settings = dict(manifest.get("settings", {}))
        return index


def _present(entry_id: str) -> ValueError:
    return ValueError(f"id {entry_id!r} is already in the index; upsert to replace it, or delete it first")


def _ranked(row: np.ndarray, k: int, mask: np.ndarray | None) -> list[tuple[int, float]]:
    """The best ``k`` (position, score) of one query's scores, among ``mask`` (None: all); ties: lower position."""
    if mask is not None:
        row = np.where(mask, row, -np.inf)
        k = min(k, int(mask.sum()))
        if k == 0:
            return []
    k = min(k, len(row))
    top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
    # ties at the cut are settled by position, so the ranking is deterministic
    threshold = row[top].min()
    candidates = np.flatnonzero(row >= threshold)
    if mask is not None:
        candidates = candidates[mask[candidates]]
    order = candidates[np.lexsort((candidates, -row[candidates]))][:k]
    return [(int(i), float(row[i])) for i in order]


def _legacy_id(path: str | os.PathLike[str], position: int, payload: Mapping[str, Any]) -> str:
    """The id an entry of a file written before ids is given: the same at every load (a UUID made from its position
    and its payload), so that a document found once is found by the same id again."""
    content = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"flagstack-legacy-entry:{position}:{content}"))


def ids_bytes(ids: Sequence[str]) -> bytes:
    """The ids part of an archive: one JSON list of str."""
    return json.dumps(list(ids), ensure_ascii=False).encode()


def read_ids(
    parts: Mapping[str, bytes], path: str | os.PathLike[str], count: int, legacy: bool,
    payloads: Sequence[dict[str, Any]], legacy_id: Callable[[dict[str, Any]], Any] | None = None,
) -> list[str]:
    """The ``count`` ids of an archive's ids.json (unique non-empty str; else an IndexFileError naming the file), or
    for a ``legacy`` file (written before entries had ids) ids made for it: ``legacy_id(payload)`` where that is a
    str not taken yet, else a new one."""
    if legacy:
        if "ids.json" in parts:
            raise IndexFileError(f"{path}: a version 1 file holds no ids.json (inconsistent)")
        made: list[str] = []
        taken: set[str] = set()
        for payload in payloads:
            try:
                value = legacy_id(payload) if legacy_id is not None else None
            except (KeyError, TypeError, ValueError, AttributeError):
                value = None
            if not isinstance(value, str) or not value or value in taken:
                value = _legacy_id(path, len(made), payload)
            made.append(value)
            taken.add(value)
        return made
    if "ids.json" not in parts:
        raise IndexFileError(f"{path} has no ids.json (truncated, or not a flagstack index)")
    try:
        ids = json.loads(parts["ids.json"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IndexFileError(f"{path}: ids.json is not a JSON list ({exc})") from exc
    if not isinstance(ids, list) or len(ids) != count:
        raise IndexFileError(f"{path}: ids.json holds {len(ids) if isinstance(ids, list) else 'no list of'} ids; "
                             f"the manifest says {count} entries")
    try:
        check_ids(ids, allow_none=False)
    except (TypeError, ValueError) as exc:
        raise IndexFileError(f"{path}: ids.json: {exc}") from exc
    return ids


def _faiss_index(vectors: np.ndarray) -> Any:
    """A FAISS ``IndexFlatIP`` holding ``vectors``."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("use_faiss=True needs FAISS: pip install 'flagstack[faiss]'") from exc
    index = faiss.IndexFlatIP(int(vectors.shape[1]))
    index.add(vectors)
    return index
