"""Dense retrieval over texts: embed, index, search, edit, persist. The framework stores and retrievers wrap this.

:class:`DenseIndex` holds texts with ids and JSON payloads in a :class:`~.index.VectorIndex` and embeds through
two callables (documents, query), so it serves flag_core models and any framework's embedding object alike (or
takes vectors embedded elsewhere: :meth:`DenseIndex.add_embedded`, :meth:`DenseIndex.search_by_vector`). Entries
can be fetched, replaced and deleted by id, and searches filtered by metadata (:mod:`.filters`). Reranking of the
hits is :meth:`flag_core.FlagReranker.rerank`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..inference.inputs import as_item_list, check_positive_int
from .archive import payload_bytes
from .filters import Filter, compile_filter
from .index import Found, IndexFileError, VectorIndex, Where

EmbedDocuments = Callable[[list[str]], Any]
EmbedQuery = Callable[[str], Any]


@dataclass(frozen=True)
class PayloadFormat:
    """What every payload of an index holds: ``name`` (saved with the file, e.g. the class that writes it), the
    ``keys`` each payload has, and ``check``, a function that raises a TypeError or ValueError for a payload the
    reader could not use. Loading a file written in another format, or holding such a payload, is a clear error
    at load (never at search)."""

    name: str
    keys: tuple[str, ...] = ()
    check: Callable[[dict[str, Any]], None] | None = None
    metadata: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None
    """What filters read of a payload (None: the payload itself)."""
    legacy_id: Callable[[dict[str, Any]], Any] | None = None
    """The id a payload of a file written before entries had ids carries, if any (else a new id is made)."""

    def where(self, spec: Filter | None, also: Where | None = None) -> Where | None:
        """The search restriction of a metadata filter over rows of this format, and ``also`` (None: no filter)."""
        return rows_where(spec, self, also)


def rows_where(spec: Filter | None, payload_format: PayloadFormat | None, also: Where | None = None) -> Where | None:
    """The search restriction of metadata filter ``spec`` over text rows ({"text", "payload"}) whose payloads are
    of ``payload_format`` (its ``metadata`` view; the payload itself when None), and of ``also``, a restriction over
    the rows themselves (an adapter's: e.g. a callable asked about a whole document); None for no restriction."""
    match = compile_filter(spec)
    if match is None:
        return also
    if also is not None:
        only = rows_where(spec, payload_format)
        assert only is not None
        return lambda row: only(row) and also(row)
    view = payload_format.metadata if payload_format is not None and payload_format.metadata else None

    def where(row: dict[str, Any]) -> bool:
        return match(row["payload"] if view is None else view(row["payload"]))

    if isinstance(spec, Mapping):  # answers kept while the index is unchanged (VectorIndex.top)
        with contextlib.suppress(TypeError, ValueError):  # e.g. a set of values: evaluated every time
            where.cache_key = json.dumps(spec, sort_keys=True, allow_nan=False)  # type: ignore[attr-defined]
    return where


@dataclass(frozen=True)
class Hit:
    """One search result: where it sits in the index, its text and payload, its score, its id and (when asked)
    its stored vector."""

    position: int
    text: str
    payload: dict[str, Any]
    score: float
    id: str = ""
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Entry:
    """One stored entry: its id, text and payload (a copy)."""

    id: str
    text: str
    payload: dict[str, Any]


def check_texts(
    texts: Iterable[str], payloads: Sequence[Mapping[str, Any]] | None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """The texts as a list and their rows ({"text", "payload"}, JSON-checked), or a TypeError / ValueError naming
    the bad item."""
    texts = as_item_list(texts, str, "texts", "str")
    if payloads is not None and len(payloads) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(payloads)} payloads: give one per text")
    rows = [{"text": t, "payload": dict(payloads[i]) if payloads else {}} for i, t in enumerate(texts)]
    payload_bytes(rows)  # a payload that could never be saved is refused before anything is embedded
    return texts, rows


class DenseIndex:
    """Texts with ids and payloads, searchable by the inner product of their embeddings with a query's; entries
    can be fetched (:meth:`get`), replaced (:meth:`upsert`) and deleted (:meth:`delete`) by id, and searches
    restricted by a metadata ``filter`` (:mod:`flag_core.retrieval.filters`, applied exactly, before the top-k
    cut). ``embed_documents`` / ``embed_query`` may be None for an index that is given its vectors."""

    def __init__(
        self,
        embed_documents: EmbedDocuments | None,
        embed_query: EmbedQuery | None,
        settings: Mapping[str, Any] | None = None,
        use_faiss: bool = False,
        payload_format: PayloadFormat | None = None,
    ) -> None:
        self.embed_documents = embed_documents
        self.embed_query = embed_query
        self.settings = dict(settings or {})
        self.payload_format = payload_format
        self.index = VectorIndex(use_faiss=use_faiss)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def ids(self) -> list[str]:
        """Every entry's id, in position order."""
        return self.index.ids

    @property
    def revision(self) -> int:
        """A count of the changes made (a holder compares it to tell whether its saved file is current)."""
        return self.index.revision

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self.index

    def add(
        self, texts: Sequence[str], payloads: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Embed ``texts`` and store them with their payloads and ``ids`` (None: new ones); returns their
        positions. An id already in the index is a ValueError (checked before anything is embedded): use
        :meth:`upsert` to replace entries."""
        return self._put(texts, payloads, ids, None, replace=False)[0]

    def upsert(
        self, texts: Sequence[str], payloads: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Embed ``texts`` and store them under ``ids``, replacing the entries that hold those ids (in one step: a
        search sees the old entry or the new); returns the ids (new ones where an id is None)."""
        return self._put(texts, payloads, ids, None, replace=True)[1]

    def add_embedded(
        self, vectors: Any, texts: Sequence[str], payloads: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str | None] | None = None, replace: bool = False,
    ) -> list[str]:
        """Store ``texts`` with vectors embedded elsewhere (one row each); returns their ids. With ``replace``,
        entries holding the ids are replaced; else an id already in the index is a ValueError."""
        return self._put(texts, payloads, ids, vectors, replace)[1]

    def _put(
        self, texts: Sequence[str], payloads: Sequence[Mapping[str, Any]] | None, ids: Sequence[str | None] | None,
        vectors: Any, replace: bool,
    ) -> tuple[list[int], list[str]]:
        texts, rows = check_texts(texts, payloads)
        self.index.check_new(ids, len(texts), replace)
        if not texts:
            return [], []
        if vectors is None:
            vectors = self._embedder(self.embed_documents, "embed_documents")(texts)
        return self.index.put(vectors, rows, ids, replace)

    @staticmethod
    def _embedder(function: Callable[..., Any] | None, name: str) -> Callable[..., Any]:
        if function is None:
            raise ValueError(f"this index has no {name} function: give vectors (add_embedded / search_by_vector)")
        return function

    def delete(self, ids: Iterable[str]) -> int:
        """Remove the entries with ``ids`` (ids not in the index are passed over); returns how many were removed."""
        return self.index.delete(ids)

    def get(self, ids: Iterable[str]) -> list[Entry]:
        """The entries with ``ids``, in the order given (ids not in the index are left out); copies."""
        return [Entry(value, row["text"], row["payload"]) for value, row in self.index.get(ids)]

    def find(self, filter: Filter) -> list[str]:
        """The ids of the entries whose metadata ``filter`` accepts, in position order."""
        where = rows_where(filter, self.payload_format)
        return self.index.find(where) if where is not None else self.index.ids

    def search(self, query: str, k: int, filter: Filter | None = None, where: Where | None = None) -> list[Hit]:
        """The ``k`` best texts for ``query``, best first, among those whose metadata ``filter`` accepts (and
        ``where``, a restriction over stored rows, accepts)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        k = check_positive_int(k, "k", allow_none=False)
        where = rows_where(filter, self.payload_format, where)  # checked before the query is embedded
        if not len(self.index):
            return []
        return self._hits(self.index.top(self._embedder(self.embed_query, "embed_query")(query), k, where)[0])

    def search_by_vector(
        self, vector: Any, k: int, filter: Filter | None = None, vectors: bool = False, where: Where | None = None,
    ) -> list[Hit]:
        """The ``k`` best texts for a query ``vector`` embedded elsewhere, best first, among those ``filter`` (and
        ``where``) accept; with ``vectors``, each hit carries its stored vector (e.g. for maximal marginal
        relevance)."""
        query = np.asarray(vector, dtype=np.float32)
        if query.ndim != 1:
            raise ValueError(f"vector must be one query vector (1-D), got shape {query.shape}")
        k = check_positive_int(k, "k", allow_none=False)
        where = rows_where(filter, self.payload_format, where)
        return self._hits(self.index.top(query, k, where, vectors=vectors)[0])

    @staticmethod
    def _hits(found: list[Found]) -> list[Hit]:
        # payloads are copies: a hit's payload is the caller's to edit
        return [Hit(position=f.position, text=f.payload["text"], payload=f.payload["payload"], score=f.score,
                    id=f.id, vector=f.vector) for f in found]

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write ids, vectors, texts, payloads and embedding settings to one file, atomically; returns the
        :attr:`revision` written."""
        return self.index.save(path, self.settings, self.payload_format.name if self.payload_format else None)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embed_documents: EmbedDocuments | None,
        embed_query: EmbedQuery | None,
        settings: Mapping[str, Any] | None = None,
        use_faiss: bool = False,
        payload_format: PayloadFormat | None = None,
    ) -> DenseIndex:
        """Read a file written by :meth:`save`; it must carry the same embedding ``settings`` (None: no check, the
        index keeps the file's, e.g. for an index given its vectors) and, when ``payload_format`` is given, payloads
        of that format."""
        dense = cls(embed_documents, embed_query, settings, use_faiss, payload_format)
        legacy_id = payload_format.legacy_id if payload_format is not None else None
        dense.index = VectorIndex.load(path, None if settings is None else dense.settings, use_faiss,
                                       legacy_id=_rows_id(legacy_id))
        if settings is None:
            dense.settings = dict(dense.index.saved_settings)
        check_rows(path, dense.index.payload_format, dense.index._payloads, payload_format)
        return dense


def _rows_id(legacy_id: Callable[[dict[str, Any]], Any] | None) -> Callable[[dict[str, Any]], Any] | None:
    """``legacy_id`` of a payload, applied to a text row ({"text", "payload"})."""
    if legacy_id is None:
        return None
    return lambda row: legacy_id(row["payload"]) if isinstance(row.get("payload"), dict) else None


def check_rows(
    path: str | os.PathLike[str], saved: str | None, rows: Sequence[Any], expected: PayloadFormat | None
) -> None:
    """Check the rows a text index read from ``path``: each a {"text": str, "payload": dict}, written in the
    ``expected`` format (when given): its name, keys and check. Any problem is an IndexFileError naming the entry."""
    if expected is not None and saved is not None and saved != expected.name:
        raise IndexFileError(f"{path} was written by {saved}; load it with {saved}.load, not {expected.name}.load")
    for position, row in enumerate(rows):
        if not isinstance(row.get("text"), str) or not isinstance(row.get("payload"), dict):
            raise IndexFileError(f"{path}: entry {position} is not a text with a payload (corrupted?)")
        if expected is None:
            continue
        payload = row["payload"]
        missing = [key for key in expected.keys if key not in payload]
        if missing:
            raise IndexFileError(
                f"{path} was not written by {expected.name} (entry {position} lacks {', '.join(missing)}); "
                "load it with the class that wrote it"
            )
        if expected.check is not None:
            try:
                expected.check(payload)
            except (TypeError, ValueError) as exc:
                raise IndexFileError(f"{path}: entry {position} is not a {expected.name} payload ({exc})") from exc


def embedding_settings(embeddings: Any) -> dict[str, Any]:
    """What identifies an embedding object's vectors: its ``signature()`` if it has one, else its class."""
    signature = getattr(embeddings, "signature", None)
    return dict(signature()) if callable(signature) else {"embeddings": type(embeddings).__name__}
