"""LangChain vector stores on flag_core's exact indexes: :class:`FlagVectorStore` (dense, with any LangChain
``Embeddings``) and :class:`FlagHybridVectorStore` (BGE-M3's dense, sparse and ColBERT outputs).

Every document has an id (given as ``ids=`` or ``Document.id``, else a new UUID); adding a document under an id the
store holds replaces it (one step: a search sees the old document or the new), and documents are fetched
(:meth:`get_by_ids`) and deleted by id. Every search takes a ``filter``: a mapping in flag_core's filter language
(:mod:`flag_core.retrieval.filters`: ``{"topic": "bears"}``, ``{"year": {"$gte": 2020}}``, ``$in``, ``$and``,
...) read against ``Document.metadata``, or a callable taking a copy of each ``Document`` (as
``InMemoryVectorStore``'s), applied exactly, before the top-k cut. A store saves to one checksummed file and loads
again; the files are the retrievers' (``FlagRetriever``, ``FlagHybridRetriever``), so either reads the other's.
Documents that come back are copies: editing them never changes the store.
"""

from __future__ import annotations

import copy
import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from pydantic import ConfigDict, Field, PrivateAttr
from typing_extensions import Self

from flag_core.frameworks import (
    HybridIndexHolder,
    ModelName,
    as_item_list,
    check_positive_int,
    check_weights,
    run_async,
    search_options,
)
from flag_core.retrieval import (
    DenseIndex,
    Entry,
    Filter,
    Hit,
    HybridHit,
    HybridIndex,
    PayloadFormat,
    VectorIndex,
    Where,
    check_ids,
    compile_filter,
    embedding_settings,
    new_id,
)
from flag_core.settings import M3Fields

from .m3 import FlagM3Embeddings

DocumentFilter = Mapping[str, Any] | Callable[[Document], bool]
"""A store's ``filter``: a mapping in flag_core's filter language over ``Document.metadata``, or a callable taking a
copy of a ``Document`` (its id, text and metadata) and returning True or False."""

def check_document_payload(payload: dict[str, Any]) -> None:
    """A Document's payload in an index: a metadata dict and an id (str or None); else a TypeError."""
    if not isinstance(payload["metadata"], dict) or not isinstance(payload["id"], str | None):
        raise TypeError("metadata must be a JSON object and id a str or null")


def filter_view(payload: dict[str, Any]) -> Mapping[str, Any]:
    """What a metadata filter reads of a stored Document payload: the Document's metadata."""
    return payload["metadata"]  # type: ignore[no-any-return]


def legacy_id(payload: dict[str, Any]) -> Any:
    """The id of an entry of a file written before entries had ids: the Document id its payload kept, if any."""
    return payload.get("id")


def document_payloads(name: str) -> PayloadFormat:
    """The payload format of the LangChain indexes (``{"metadata": ..., "id": ...}``) written under ``name``."""
    return PayloadFormat(name, keys=("metadata", "id"), check=check_document_payload, metadata=filter_view,
                         legacy_id=legacy_id)


PAYLOADS = document_payloads("langchain_flag.FlagRetriever")
"""The dense store's (and ``FlagRetriever``'s) payloads; the name is the one files have carried since the first."""
HYBRID_PAYLOADS = document_payloads("langchain_flag.FlagHybridRetriever")
"""The hybrid store's (and ``FlagHybridRetriever``'s) payloads."""


# ---- what both stores share ------------------------------------------------------------------------------------


def _accepts(test: Callable[[Document], Any], document: Document) -> bool:
    answer = test(document)
    if not isinstance(answer, bool | np.bool_):
        raise TypeError(f"a filter callable must return True or False, it returned {type(answer).__name__}")
    return bool(answer)


def _check_filter(filter: DocumentFilter | None) -> None:
    """A TypeError or ValueError naming what is wrong with a store's ``filter`` (an unknown operator, ...)."""
    if filter is None or isinstance(filter, Mapping):
        compile_filter(filter)
    elif not callable(filter):
        raise TypeError("filter must be a mapping (e.g. {'topic': 'bears'} or {'year': {'$gte': 2020}}) or a "
                        f"callable taking a Document, got {type(filter).__name__}")


def _restricted(filter: DocumentFilter | None, rows: VectorIndex) -> tuple[Filter | None, Where | None]:
    """What restricts a search over the index whose entries are ``rows`` to what ``filter`` accepts: a mapping is
    flag_core's metadata filter (checked); a callable taking a Document is asked here about a copy of every entry,
    all from one state of the index (so each Document carries its entry id), and the search is restricted to the
    stored rows it accepted (an entry replaced meanwhile is left out)."""
    _check_filter(filter)
    if filter is None or isinstance(filter, Mapping):
        return filter, None
    seen: list[dict[str, Any]] = []  # the stored rows, in position order (kept alive: their identities are the keys)

    def every(row: dict[str, Any]) -> bool:
        seen.append(row)
        return True

    ids = rows.find(every)  # every entry's id, from the same state as the rows
    keys = {id(row) for entry_id, row in zip(ids, seen, strict=True)
            if _accepts(filter, Document(id=entry_id, page_content=row["text"],
                                         metadata=copy.deepcopy(row["payload"]["metadata"])))}

    def accepted(row: dict[str, Any]) -> bool:
        return id(row) in keys and seen is not None  # holds ``seen``: no accepted row's identity is reused meanwhile

    return None, accepted


def _no_options(kwargs: Mapping[str, Any], method: str) -> None:
    if kwargs:
        raise TypeError(f"{method} got unexpected keyword arguments: {', '.join(sorted(kwargs))}")


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) <= 1:
        raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
    return float(value)


def _unique(ids: Any) -> list[str]:
    """``ids`` (a list of str; a lone str is a TypeError) without repeats, in the order given."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        check_ids(ids)  # the TypeError that says so
    return [value for value in check_ids(list(dict.fromkeys(ids)), allow_none=False) if value is not None]


def _document(entry_id: str, text: str, payload: Mapping[str, Any]) -> Document:
    """The Document of an entry (``payload`` is a copy the caller owns)."""
    return Document(id=entry_id, page_content=text, metadata=payload["metadata"])


def _texts_as_documents(
    texts: Iterable[str], metadatas: Sequence[Mapping[str, Any] | None] | None,
) -> list[Document]:
    items: list[str] = as_item_list(texts, str, "texts", "str")
    if metadatas is not None and len(metadatas) != len(items):
        raise ValueError(f"{len(items)} texts but {len(metadatas)} metadatas: give one per text")
    return [Document(page_content=text, metadata=dict(metadatas[i] or {}) if metadatas is not None else {})
            for i, text in enumerate(items)]


def _incoming(
    documents: Iterable[Document], ids: Sequence[str | None] | None,
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Texts, payloads and ids of documents to store: ``ids`` (one per document; None: a new one) or else each
    document's own id (None: a new one)."""
    docs = as_item_list(documents, Document, "documents", "a langchain Document")
    given = (check_ids(ids, len(docs)) if ids is not None
             else check_ids([doc.id for doc in docs], name="document ids"))
    entry_ids = [value if value is not None else new_id() for value in given]
    payloads = [{"metadata": dict(doc.metadata), "id": entry_id} for doc, entry_id in zip(docs, entry_ids,
                                                                                           strict=True)]
    return [doc.page_content for doc in docs], payloads, entry_ids


class _FlagStore(VectorStore):
    """What both stores do the same way: adding (an upsert by id), deleting, fetching, the relevance score and the
    async methods. A subclass gives ``_rows`` (its entries), ``_upsert``, ``_delete``, ``_get`` and the searches."""

    def _rows(self) -> VectorIndex:
        raise NotImplementedError

    def _upsert(self, texts: list[str], payloads: list[dict[str, Any]], ids: list[str]) -> None:
        raise NotImplementedError

    def _delete(self, ids: list[str]) -> int:
        raise NotImplementedError

    def _get(self, ids: list[str]) -> list[Entry]:
        raise NotImplementedError

    # adding, deleting, fetching -----------------------------------------------------------------

    def add_documents(
        self, documents: list[Document], ids: Sequence[str | None] | None = None, **kwargs: Any,
    ) -> list[str]:
        """Embed and store ``documents`` under ``ids`` (one per document; else each document's own id; None: a new
        one); a document whose id the store holds replaces it. Returns the ids. Everything is checked (ids given
        once each, metadata that JSON can hold) before anything is embedded; the documents given are not changed.
        ``batch_size`` (LangChain's indexing API passes it) is accepted and changes nothing: the embeddings batch
        texts themselves."""
        kwargs.pop("batch_size", None)
        _no_options(kwargs, "add_documents")
        texts, payloads, entry_ids = _incoming(documents, ids)
        if texts:
            self._upsert(texts, payloads, entry_ids)
        return entry_ids

    def add_texts(
        self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
        ids: Sequence[str | None] | None = None, **kwargs: Any,
    ) -> list[str]:
        """:meth:`add_documents` of ``texts`` with their ``metadatas`` and ``ids`` (one per text, each optional)."""
        return self.add_documents(_texts_as_documents(texts, metadatas), ids=ids, **kwargs)

    async def aadd_documents(
        self, documents: list[Document], ids: Sequence[str | None] | None = None, **kwargs: Any,
    ) -> list[str]:
        """:meth:`add_documents` without blocking the event loop."""
        return await run_async(self.add_documents, documents, ids, **kwargs)

    async def aadd_texts(
        self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
        ids: Sequence[str | None] | None = None, **kwargs: Any,
    ) -> list[str]:
        """:meth:`add_texts` without blocking the event loop."""
        return await run_async(self.add_texts, texts, metadatas, ids=ids, **kwargs)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete the documents with ``ids`` (a list; ids the store lacks are passed over); True. ``ids=None`` is a
        ValueError rather than deleting everything: pass ``store.ids`` for that."""
        _no_options(kwargs, "delete")
        if ids is None:
            raise ValueError("give the ids to delete (a list); to delete every document: store.delete(store.ids)")
        self._delete(_unique(ids))
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """:meth:`delete` without blocking the event loop."""
        return await run_async(self.delete, ids, **kwargs)

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents with ``ids``, in the order given (ids the store lacks, and repeats, are left out);
        copies."""
        return [_document(entry.id, entry.text, entry.payload) for entry in self._get(_unique(ids))]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """:meth:`get_by_ids` without blocking the event loop."""
        return await run_async(self.get_by_ids, ids)

    @property
    def ids(self) -> list[str]:
        """Every document's id, in the order stored."""
        return self._rows().ids

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._rows()

    # searching ----------------------------------------------------------------------------------

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Relevance on LangChain's scale, 0 (dissimilar) to 1 (the same): ``(1 + score) / 2``, for scores that are
        cosine similarities (inner products of unit vectors)."""
        return _cosine_relevance

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` documents most similar to ``query``, best first (``filter=`` and the store's other search
        options as :meth:`similarity_search_with_score`)."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` documents whose vectors have the largest inner product with ``embedding``, best first."""
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, **kwargs)]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        raise NotImplementedError

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """:meth:`similarity_search` without blocking the event loop."""
        return await run_async(self.similarity_search, query, k, **kwargs)

    async def asimilarity_search_with_score(self, *args: Any, **kwargs: Any) -> list[tuple[Document, float]]:
        """:meth:`similarity_search_with_score` without blocking the event loop."""
        return await run_async(self.similarity_search_with_score, *args, **kwargs)

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any,
    ) -> list[Document]:
        """:meth:`similarity_search_by_vector` without blocking the event loop."""
        return await run_async(self.similarity_search_by_vector, embedding, k, **kwargs)

    async def asimilarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """:meth:`similarity_search_with_score_by_vector` without blocking the event loop."""
        return await run_async(self.similarity_search_with_score_by_vector, embedding, k, **kwargs)

    async def _asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        return await run_async(self._similarity_search_with_relevance_scores, query, k, **kwargs)

    async def amax_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` without blocking the event loop."""
        return await run_async(self.max_marginal_relevance_search, query, k, fetch_k, lambda_mult, **kwargs)

    async def amax_marginal_relevance_search_by_vector(
        self, embedding: list[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search_by_vector` without blocking the event loop."""
        return await run_async(self.max_marginal_relevance_search_by_vector, embedding, k, fetch_k, lambda_mult,
                               **kwargs)

    @staticmethod
    def _mmr(
        query: Any, found: Sequence[tuple[Document, Any]], k: int, lambda_mult: float,
    ) -> list[Document]:
        """Of ``found`` (documents with their vectors), the ``k`` that maximal marginal relevance picks."""
        if not found:
            return []
        chosen = maximal_marginal_relevance(np.asarray(query, dtype=np.float32), [vector for _, vector in found],
                                            lambda_mult=lambda_mult, k=k)
        return [found[i][0] for i in chosen]


def _cosine_relevance(score: float) -> float:
    return (1.0 + float(score)) / 2.0


def _mmr_options(k: Any, fetch_k: Any, lambda_mult: Any) -> tuple[int, int, float]:
    return (check_positive_int(k, "k", allow_none=False), check_positive_int(fetch_k, "fetch_k", allow_none=False),
            _fraction(lambda_mult, "lambda_mult"))


def _query_vector(embedding: Any) -> np.ndarray:
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.ndim != 1:
        raise ValueError(f"embedding must be one query vector (a list of floats), got shape {vector.shape}")
    return vector


# ---- dense ---------------------------------------------------------------------------------------------------


class FlagVectorStore(_FlagStore):
    """A LangChain ``VectorStore`` on flag_core's exact dense index, with any LangChain ``Embeddings`` (e.g.
    :class:`~langchain_flag.FlagEmbeddings`): exact inner-product top-k (numpy, or FAISS with ``use_faiss``),
    ids, upserts, deletes, metadata filters, maximal marginal relevance, and a checksummed file.

    Scores are inner products of the embeddings (cosine similarities for unit vectors, which FlagEmbeddings gives by
    default); ``similarity_search_with_relevance_scores`` maps them to LangChain's 0 to 1 as ``(1 + score) / 2``,
    or through ``relevance_score_fn``.

    Example:
        .. code-block:: python

            from langchain_flag import FlagEmbeddings, FlagVectorStore

            store = FlagVectorStore(FlagEmbeddings(model_name="BAAI/bge-base-en-v1.5"))
            store.add_texts(["Pandas eat bamboo.", "Paris is in France."], [{"topic": "bears"}, {"topic": "cities"}],
                            ids=["panda", "paris"])
            store.similarity_search("what do pandas eat?", k=1, filter={"topic": {"$in": ["bears", "cats"]}})
            store.delete(["paris"])
            store.save("docs.flag")                        # FlagVectorStore.load("docs.flag", embeddings)
    """

    def __init__(
        self, embedding: Embeddings, *, use_faiss: bool = False,
        relevance_score_fn: Callable[[float], float] | None = None,
    ) -> None:
        if not isinstance(embedding, Embeddings):
            raise TypeError(f"embedding must be a LangChain Embeddings, got {type(embedding).__name__}")
        self.embedding = embedding
        self.use_faiss = bool(use_faiss)
        self.relevance_score_fn = relevance_score_fn
        self._dense = DenseIndex(embedding.embed_documents, embedding.embed_query, embedding_settings(embedding),
                                 self.use_faiss, PAYLOADS)

    @property
    def embeddings(self) -> Embeddings:
        """The embeddings that embed documents and queries."""
        return self.embedding

    @property
    def index(self) -> DenseIndex:
        """The flag_core :class:`~flag_core.retrieval.DenseIndex` holding the documents."""
        return self._dense

    @property
    def revision(self) -> int:
        """A count of the changes made (:meth:`save` returns the one it wrote)."""
        return self._dense.revision

    def __len__(self) -> int:
        return len(self._dense)

    def _rows(self) -> VectorIndex:
        return self._dense.index

    def _upsert(self, texts: list[str], payloads: list[dict[str, Any]], ids: list[str]) -> None:
        self._dense.upsert(texts, payloads, ids)

    def _delete(self, ids: list[str]) -> int:
        return self._dense.delete(ids)

    def _get(self, ids: list[str]) -> list[Entry]:
        return self._dense.get(ids)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return self.relevance_score_fn or super()._select_relevance_score_fn()

    # searching ----------------------------------------------------------------------------------

    def _search(
        self, query: str | None, embedding: Any, k: Any, filter: DocumentFilter | None, vectors: bool = False,
    ) -> tuple[np.ndarray | None, list[Hit]]:
        """The query vector (``embedding``, or ``query`` embedded here once the options and filter are checked) and
        the ``k`` best hits for it among the documents ``filter`` accepts (with their stored vectors if asked)."""
        k = check_positive_int(k, "k", allow_none=False)
        if embedding is None and not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        vector = None if embedding is None else _query_vector(embedding)
        _check_filter(filter)
        if not len(self._dense):
            return vector, []
        if vector is None:
            vector = _query_vector(self.embedding.embed_query(query))  # type: ignore[arg-type]
        spec, where = _restricted(filter, self._dense.index)
        return vector, self._dense.search_by_vector(vector, k, spec, vectors=vectors, where=where)

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: DocumentFilter | None = None, **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The ``k`` documents most similar to ``query`` with their scores (inner products), best first, among
        those ``filter`` accepts (a mapping over the metadata, or a callable taking a Document)."""
        _no_options(kwargs, "similarity_search_with_score")
        hits = self._search(query, None, k, filter)[1]
        return [(_document(hit.id, hit.text, hit.payload), hit.score) for hit in hits]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: DocumentFilter | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The ``k`` documents whose vectors have the largest inner product with ``embedding``, with it, best first,
        among those ``filter`` accepts."""
        _no_options(kwargs, "similarity_search_with_score_by_vector")
        hits = self._search(None, embedding, k, filter)[1]
        return [(_document(hit.id, hit.text, hit.payload), hit.score) for hit in hits]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: DocumentFilter | None = None, **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents of the ``fetch_k`` most similar to ``query`` (among those ``filter`` accepts), picked by
        maximal marginal relevance: ``lambda_mult`` 1 is similarity only, 0 diversity only."""
        _no_options(kwargs, "max_marginal_relevance_search")
        return self._mmr_search(query, None, k, fetch_k, lambda_mult, filter)

    def max_marginal_relevance_search_by_vector(
        self, embedding: list[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: DocumentFilter | None = None, **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` for a query vector embedded elsewhere."""
        _no_options(kwargs, "max_marginal_relevance_search_by_vector")
        return self._mmr_search(None, embedding, k, fetch_k, lambda_mult, filter)

    def _mmr_search(
        self, query: str | None, embedding: Any, k: Any, fetch_k: Any, lambda_mult: Any,
        filter: DocumentFilter | None,
    ) -> list[Document]:
        k, fetch_k, lambda_mult = _mmr_options(k, fetch_k, lambda_mult)
        vector, hits = self._search(query, embedding, fetch_k, filter, vectors=True)
        return self._mmr(vector, [(_document(hit.id, hit.text, hit.payload), hit.vector) for hit in hits], k,
                         lambda_mult)

    # building and files -------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls, texts: list[str], embedding: Embeddings, metadatas: list[dict[str, Any]] | None = None, *,
        ids: Sequence[str | None] | None = None, **kwargs: Any,
    ) -> Self:
        """A store (``kwargs``: ``use_faiss``, ``relevance_score_fn``) holding ``texts`` with their ``metadatas``
        and ``ids``."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(
        cls, texts: list[str], embedding: Embeddings, metadatas: list[dict[str, Any]] | None = None, *,
        ids: Sequence[str | None] | None = None, **kwargs: Any,
    ) -> Self:
        """:meth:`from_texts` without blocking the event loop."""
        return await run_async(cls.from_texts, texts, embedding, metadatas, ids=ids, **kwargs)

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write the documents (ids, texts, metadata, vectors) and the embedding settings to one file, atomically
        (checksummed); returns the :attr:`revision` written. ``FlagRetriever.load`` reads it too."""
        return self._dense.save(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], embedding: Embeddings, **kwargs: Any) -> Self:
        """A store holding what :meth:`save` (or ``FlagRetriever.save``) wrote to ``path``; ``embedding`` must have
        the settings it was built with. A damaged, truncated or mismatched file (other embedding settings, another
        class's file) is a :class:`flag_core.IndexFileError` naming it."""
        store = cls(embedding, **kwargs)
        store._dense = DenseIndex.load(path, embedding.embed_documents, embedding.embed_query,
                                       embedding_settings(embedding), store.use_faiss, PAYLOADS)
        return store


# ---- hybrid --------------------------------------------------------------------------------------------------


def _m3_settings(embedding: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The hybrid store's keyword arguments: ``kwargs`` with a :class:`FlagM3Embeddings`' model settings (a key given
    both ways is a ValueError); any other embeddings are a TypeError (the store encodes with BGE-M3 itself)."""
    if embedding is None:
        return kwargs
    if not isinstance(embedding, FlagM3Embeddings):
        raise TypeError("FlagHybridVectorStore encodes with BGE-M3 itself: give model_name= (and its settings), or a "
                        f"FlagM3Embeddings whose settings it takes; got {type(embedding).__name__}")
    settings = {name: getattr(embedding, name) for name in FlagM3Embeddings.model_fields}
    twice = sorted(name for name in settings if name in kwargs)
    if twice:
        raise ValueError(f"{', '.join(twice)} given both in the embeddings and as keywords: give them once")
    return {**settings, **kwargs}


class FlagHybridVectorStore(HybridIndexHolder, M3Fields, _FlagStore):
    """A LangChain ``VectorStore`` ranking with all three BGE-M3 outputs, on flag_core's hybrid index: the
    ``candidates`` best documents by dense and by sparse score, rescored with ColBERT (candidates only), ranked by
    ``mode`` ("dense", "sparse", "colbert", "sparse+dense" or "hybrid") with ``weights`` (dense, sparse,
    colbert); each may be given per search too. Ids, upserts, deletes, filters and files as
    :class:`FlagVectorStore`; the file is ``FlagHybridRetriever``'s (either reads the other's).

    Model settings: ``model_name`` and :class:`flag_core.settings.M3Fields` (the fields of ``FlagHybridRetriever``),
    or ``from_texts(texts, FlagM3Embeddings(...))``, which takes the embeddings' settings. :attr:`embeddings` is the
    model's dense output (:class:`~langchain_flag.FlagM3Embeddings`). A search by vector
    (``similarity_search_by_vector``, ``max_marginal_relevance_search_by_vector``) is a dense search: a vector
    holds no sparse or ColBERT part. Relevance scores are ``(1 + score) / 2`` as :class:`FlagVectorStore`'s: within 0
    to 1 in the dense and ColBERT modes; a sparse score has no upper bound, so with sparse weight a relevance above 1
    can occur (LangChain then warns). ``copy.deepcopy`` and ``pickle`` copy the documents and share the model.

    Example:
        .. code-block:: python

            from langchain_flag import FlagHybridVectorStore

            store = FlagHybridVectorStore(model_name="BAAI/bge-m3", mode="hybrid")
            store.add_texts(texts, metadatas, ids=ids)
            store.similarity_search("what do pandas eat?", k=3, filter={"year": {"$gte": 2020}})
            store.similarity_search("what do pandas eat?", k=3, mode="sparse")
            store.save("docs.flag")                        # FlagHybridVectorStore.load("docs.flag", model_name=...)
    """

    model_name: ModelName = Field(description="hub id or local folder of the BGE-M3 model")

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    payloads = HYBRID_PAYLOADS

    _embeddings: FlagM3Embeddings | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._embeddings = None

    @classmethod
    def sharing(cls, holder: HybridIndexHolder) -> Self:
        """A store over ``holder``'s index (e.g. a ``FlagHybridRetriever``'s): the same index object, so a change
        made through either shows in both, with the holder's model and search settings."""
        fields = type(holder).model_fields
        store = cls(**{name: getattr(holder, name) for name in cls.model_fields
                       if name in fields and name != "index_path"})
        store._index = holder._index
        store.index_path, store._saved_revision = holder.index_path, holder._saved_revision
        return store

    @property
    def embeddings(self) -> FlagM3Embeddings:
        """The model's dense output as LangChain embeddings (same model and settings; built on first use)."""
        if self._embeddings is None:
            self._embeddings = FlagM3Embeddings(**{name: getattr(self, name) for name in FlagM3Embeddings.model_fields})
        return self._embeddings

    @property
    def index(self) -> HybridIndex:
        """The flag_core :class:`~flag_core.retrieval.HybridIndex` holding the documents."""
        return self._index

    @property
    def revision(self) -> int:
        """A count of the changes made (equal to what it was at a save: the file holds everything)."""
        return self._index.revision

    def _rows(self) -> VectorIndex:
        return self._index.dense  # type: ignore[no-any-return]

    def _upsert(self, texts: list[str], payloads: list[dict[str, Any]], ids: list[str]) -> None:
        self._index.upsert(texts, payloads, ids)

    def _delete(self, ids: list[str]) -> int:
        return self._index.delete(ids)  # type: ignore[no-any-return]

    def _get(self, ids: list[str]) -> list[Entry]:
        return self._index.get(ids)  # type: ignore[no-any-return]

    # searching ----------------------------------------------------------------------------------

    def _options(
        self, k: Any, mode: Any, weights: Any, candidates: Any,
    ) -> tuple[int, str, tuple[float, float, float], int]:
        k, mode = search_options(k, mode, 4, self.mode)
        weights = self.weights if weights is None else check_weights(weights)
        candidates = self.candidates if candidates is None else check_positive_int(candidates, "candidates",
                                                                                    allow_none=False)
        return k, mode, weights, candidates

    def search_hits(
        self, query: str, k: int = 4, *, mode: str | None = None, weights: Sequence[float] | None = None,
        candidates: int | None = None, filter: DocumentFilter | None = None,
    ) -> list[HybridHit]:
        """flag_core's hits for ``query`` (each with its id, text, a copy of its payload, the ranking score and
        every mode's), best first; ``mode``, ``weights`` and ``candidates`` default to the store's."""
        k, mode, weights, candidates = self._options(k, mode, weights, candidates)
        spec, where = _restricted(filter, self._index.dense)
        return self._index.search(query, k, mode, weights, candidates, filter=spec,  # type: ignore[no-any-return]
                                  where=where)

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: DocumentFilter | None = None, *,
        mode: str | None = None, weights: Sequence[float] | None = None, candidates: int | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The ``k`` best documents for ``query`` by ``mode`` with their scores, best first, among those ``filter``
        accepts (a mapping over the metadata, or a callable taking a Document); ``mode``, ``weights`` and
        ``candidates`` default to the store's."""
        _no_options(kwargs, "similarity_search_with_score")
        hits = self.search_hits(query, k, mode=mode, weights=weights, candidates=candidates, filter=filter)
        return [(_document(hit.id, hit.text, hit.payload), hit.score) for hit in hits]

    def _dense_hits(
        self, embedding: Any, k: Any, filter: DocumentFilter | None, vectors: bool,
    ) -> list[tuple[Document, float, np.ndarray | None]]:
        k = check_positive_int(k, "k", allow_none=False)
        vector = _query_vector(embedding)
        rows = self._index.dense
        spec, where = _restricted(filter, rows)
        found = rows.top(vector, k, self.payloads.where(spec, where), vectors=vectors)[0]
        return [(_document(f.id, f.payload["text"], f.payload["payload"]), f.score, f.vector) for f in found]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: DocumentFilter | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The ``k`` documents whose BGE-M3 dense vectors have the largest inner product with ``embedding`` (e.g.
        ``store.embeddings.embed_query(text)``), with it, best first: the "dense" mode's ranking of that query (a
        vector holds no sparse or ColBERT part)."""
        _no_options(kwargs, "similarity_search_with_score_by_vector")
        return [(doc, score) for doc, score, _ in self._dense_hits(embedding, k, filter, vectors=False)]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: DocumentFilter | None = None, *, mode: str | None = None,
        weights: Sequence[float] | None = None, candidates: int | None = None, **kwargs: Any,
    ) -> list[Document]:
        """``k`` of the ``fetch_k`` best documents for ``query`` by ``mode`` (among those ``filter`` accepts),
        picked by maximal marginal relevance over the BGE-M3 dense vectors: ``lambda_mult`` 1 is similarity only, 0
        diversity only."""
        _no_options(kwargs, "max_marginal_relevance_search")
        k, fetch_k, lambda_mult = _mmr_options(k, fetch_k, lambda_mult)
        fetch_k, mode, weights, candidates = self._options(fetch_k, mode, weights, candidates)
        index = self._index
        spec, where = _restricted(filter, index.dense)  # hits carry their stored vectors, from the state they saw
        hits = index.search(query, fetch_k, mode, weights, candidates, filter=spec, vectors=True, where=where)
        if not hits:
            return []
        found = [(_document(hit.id, hit.text, hit.payload), hit.vector) for hit in hits]
        return self._mmr(self.embeddings.embed_query(query), found, k, lambda_mult)

    def max_marginal_relevance_search_by_vector(
        self, embedding: list[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: DocumentFilter | None = None, **kwargs: Any,
    ) -> list[Document]:
        """Maximal marginal relevance over the ``fetch_k`` documents whose dense vectors are nearest ``embedding``
        (a dense search, as :meth:`similarity_search_by_vector`)."""
        _no_options(kwargs, "max_marginal_relevance_search_by_vector")
        k, fetch_k, lambda_mult = _mmr_options(k, fetch_k, lambda_mult)
        found = [(doc, vector) for doc, _, vector in self._dense_hits(embedding, fetch_k, filter, vectors=True)]
        return self._mmr(_query_vector(embedding), found, k, lambda_mult)

    # building and files -------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls, texts: list[str], embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None, *, ids: Sequence[str | None] | None = None, **kwargs: Any,
    ) -> Self:
        """A store holding ``texts`` with their ``metadatas`` and ``ids``; the model and search settings are
        ``kwargs`` (``model_name=...``, ``mode=...``), to which ``embedding`` (a :class:`FlagM3Embeddings`, or None)
        adds its model settings."""
        store = cls(**_m3_settings(embedding, kwargs))
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    def from_documents(
        cls, documents: list[Document], embedding: Embeddings | None = None, **kwargs: Any,
    ) -> Self:
        """A store holding ``documents`` (their ids kept), settings as :meth:`from_texts`."""
        ids = kwargs.pop("ids", None)
        store = cls(**_m3_settings(embedding, kwargs))
        store.add_documents(documents, ids=ids)
        return store

    @classmethod
    async def afrom_texts(
        cls, texts: list[str], embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None, *, ids: Sequence[str | None] | None = None, **kwargs: Any,
    ) -> Self:
        """:meth:`from_texts` without blocking the event loop."""
        return await run_async(cls.from_texts, texts, embedding, metadatas, ids=ids, **kwargs)

    @classmethod
    async def afrom_documents(
        cls, documents: list[Document], embedding: Embeddings | None = None, **kwargs: Any,
    ) -> Self:
        """:meth:`from_documents` without blocking the event loop."""
        return await run_async(cls.from_documents, documents, embedding, **kwargs)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], embedding: Embeddings | None = None, **kwargs: Any,
    ) -> Self:
        """A store holding what :meth:`save` (or ``FlagHybridRetriever.save``) wrote to ``path``, with the same model
        settings (``kwargs`` and ``embedding`` as :meth:`from_texts`); a damaged or mismatched file is a
        :class:`flag_core.IndexFileError` naming it. ``store.save(path)`` writes one (and sets ``index_path``)."""
        store = cls(**_m3_settings(embedding, kwargs))
        store._read_index(path)
        return store
