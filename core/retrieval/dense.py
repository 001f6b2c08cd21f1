"""Dense retrieval over texts: embed, index, search, persist. The framework retrievers wrap this.

:class:`DenseIndex` holds texts with JSON payloads in a :class:`~.index.VectorIndex` and
embeds through two callables (documents, query), so it serves flag_core models and any framework's
embedding object alike. Reranking of the hits is :meth:`flag_core.FlagReranker.rerank`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..inference.inputs import check_positive_int
from .archive import payload_bytes
from .index import IndexFileError, VectorIndex

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


@dataclass(frozen=True)
class Hit:
    """One search result: where it sits in the index, its text and payload, and its score."""

    position: int
    text: str
    payload: dict[str, Any]
    score: float


class DenseIndex:
    """Texts and payloads searchable by the inner product of their embeddings with a query's."""

    def __init__(
        self,
        embed_documents: EmbedDocuments,
        embed_query: EmbedQuery,
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

    def add(self, texts: Sequence[str], payloads: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
        """Embed ``texts`` and store them with their payloads; returns their positions."""
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        if payloads is not None and len(payloads) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(payloads)} payloads: give one per text")
        if not texts:
            return []
        rows = [{"text": t, "payload": dict(payloads[i]) if payloads else {}} for i, t in enumerate(texts)]
        payload_bytes(rows)  # a payload that could never be saved is refused before anything is embedded
        return self.index.add(self.embed_documents(texts), rows)

    def search(self, query: str, k: int) -> list[Hit]:
        """The ``k`` best texts for ``query``, best first."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        k = check_positive_int(k, "k", allow_none=False)
        if not len(self.index):
            return []
        hits = []
        for i, score in self.index.search(self.embed_query(query), k)[0]:
            row = self.index.payload(i)  # a copy: a hit's payload is the caller's to edit
            hits.append(Hit(position=i, text=row["text"], payload=row["payload"], score=score))
        return hits

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write vectors, texts, payloads and embedding settings to one file, atomically."""
        self.index.save(path, self.settings, self.payload_format.name if self.payload_format else None)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embed_documents: EmbedDocuments,
        embed_query: EmbedQuery,
        settings: Mapping[str, Any] | None = None,
        use_faiss: bool = False,
        payload_format: PayloadFormat | None = None,
    ) -> DenseIndex:
        """Read a file written by :meth:`save`; it must carry the same embedding ``settings`` and, when
        ``payload_format`` is given, payloads of that format."""
        dense = cls(embed_documents, embed_query, settings, use_faiss, payload_format)
        dense.index = VectorIndex.load(path, dense.settings, use_faiss=use_faiss)
        check_rows(path, dense.index.payload_format, dense.index._payloads, payload_format)
        return dense


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
