"""FlagRetriever: dense search (its own :class:`~langchain_flag.FlagVectorStore`, or any VectorStore), then an
optional rerank."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from flag_core.frameworks import absolute_path, check_positive_int, run_async

from .rerankers import FlagReranker
from .vectorstores import PAYLOADS as PAYLOADS  # the format of its files (the store's)
from .vectorstores import DocumentFilter, FlagVectorStore
from .vectorstores import check_document_payload as check_document_payload  # where it was defined before

RETRIEVAL_SCORE = "retrieval_score"


class FlagRetriever(BaseRetriever):
    """Two-stage retrieval: the ``k`` nearest documents by inner product, then (with a ``reranker``) the
    ``top_n`` best by the reranker. Scores land in ``metadata["retrieval_score"]`` and
    ``metadata["relevance_score"]``.

    Build it with :meth:`from_texts` / :meth:`from_documents`: its documents are then in its own
    :class:`~langchain_flag.FlagVectorStore` (exact search, optionally FAISS; :attr:`store`), whose ids, upserts
    and metadata filters it has (``retriever.invoke(query, filter={"topic": "bears"})``). Or pass ``vectorstore=``
    to search an existing LangChain vector store instead (a ``filter`` is handed to its search as it is).

    ``dumpd`` / ``loads`` round-trip a retriever whose index is in a file (``index_path``, set by :meth:`save`
    and :meth:`load`, kept absolute); the index itself is never inlined, and a retriever holding documents that are
    not saved serializes as "not implemented" rather than losing them.

    Example:
        .. code-block:: python

            from langchain_flag import FlagEmbeddings, FlagReranker, FlagRetriever

            retriever = FlagRetriever.from_texts(
                texts, FlagEmbeddings(model_name="BAAI/bge-base-en-v1.5"), k=20,
                reranker=FlagReranker(model_name="BAAI/bge-reranker-v2-m3"), top_n=4,
            )
            docs = retriever.invoke("what do pandas eat?")
    """

    embeddings: Embeddings
    k: int = Field(default=4, gt=0, description="documents fetched by dense search")
    reranker: FlagReranker | None = None
    top_n: int | None = Field(default=None, gt=0, description="documents kept after reranking (None: all k)")
    vectorstore: VectorStore | None = None
    use_faiss: bool = False
    index_path: str | None = Field(default=None, description="index file to read at construction (save sets it)")

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    _store: FlagVectorStore = PrivateAttr()
    _saved_revision: int | None = PrivateAttr(default=None)  # the store's revision when last saved or loaded

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.index_path is not None:  # read here, after validation, so a bad file is an IndexFileError
            self._read_index(self.index_path)

    @field_validator("index_path", mode="before")
    @classmethod
    def _absolute(cls, value: Any) -> Any:
        return absolute_path(value)

    def model_post_init(self, context: Any, /) -> None:
        self._store = FlagVectorStore(self.embeddings, use_faiss=self.use_faiss)

    def _read_index(self, path: str | os.PathLike[str]) -> None:
        self._store = FlagVectorStore.load(path, self.embeddings, use_faiss=self.use_faiss)
        self.index_path = absolute_path(path)
        self._saved_revision = self._store.revision

    @property
    def store(self) -> VectorStore:
        """What this retriever searches: the ``vectorstore`` given, else its own :class:`FlagVectorStore` (the same
        object: documents added, replaced or deleted there are what the retriever finds)."""
        return self.vectorstore if self.vectorstore is not None else self._store

    def in_file(self) -> bool:
        """Whether everything its own store holds is in the file at ``index_path`` (what serialization refers
        to): nothing added, replaced or deleted since it was saved or loaded."""
        if self.index_path is None:
            return not len(self._store)
        return self._store.revision == self._saved_revision

    def to_json(self) -> Any:
        """The constructor form (settings and ``index_path``), or "not implemented" while its own store holds
        documents that are not in the file at ``index_path`` (or lacks some the file holds)."""
        if self.vectorstore is None and not self.in_file():
            return self.to_json_not_implemented()
        return super().to_json()

    # building -----------------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        embeddings: Embeddings,
        metadatas: Sequence[dict[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> FlagRetriever:
        """A retriever over ``texts`` (with optional metadata and ids, one per text)."""
        texts = list(texts)
        for name, values in (("metadatas", metadatas), ("ids", ids)):
            if values is not None and len(values) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(values)} {name}: give one per text")
        documents = [
            Document(
                page_content=text,
                metadata=dict(metadatas[i]) if metadatas is not None else {},
                id=ids[i] if ids is not None else None,
            )
            for i, text in enumerate(texts)
        ]
        return cls.from_documents(documents, embeddings, **kwargs)

    @classmethod
    def from_documents(cls, documents: Iterable[Document], embeddings: Embeddings, **kwargs: Any) -> FlagRetriever:
        """A retriever over ``documents``."""
        retriever = cls(embeddings=embeddings, **kwargs)
        retriever.add_documents(list(documents))
        return retriever

    def add_documents(self, documents: Sequence[Document]) -> list[int]:
        """Embed and index more documents (each under its ``Document.id``, else a new id; a document whose id the
        index holds replaces it); returns their positions in the index."""
        if self.vectorstore is not None:
            raise ValueError("this retriever searches a vectorstore: add documents to the vectorstore itself")
        ids = self._store.add_documents(list(documents))
        return self._store.index.index.positions(ids)

    def __len__(self) -> int:
        return len(self._store)

    # persistence --------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index (ids, vectors, texts, metadata, embedding settings) to one file, atomically; the
        retriever then refers to that file (``index_path``). ``FlagVectorStore.load`` reads it too."""
        self._saved_revision = self._store.save(path)  # the revision written: later changes are not in the file
        self.index_path = absolute_path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], embeddings: Embeddings, **kwargs: Any) -> FlagRetriever:
        """Read an index written by :meth:`save` (or ``FlagVectorStore.save``); it must have been built with the
        same embedding settings. A truncated, corrupted or mismatched file raises :class:`flag_core.IndexFileError`."""
        retriever = cls(embeddings=embeddings, **kwargs)
        retriever._read_index(path)
        return retriever

    # retrieval ----------------------------------------------------------------------------------

    def _retrieve(
        self, query: str, k: int | None, top_n: int | None, filter: DocumentFilter | None,
    ) -> list[Document]:
        k = self.k if k is None else check_positive_int(k, "k", allow_none=False)
        top_n = self.top_n if top_n is None else check_positive_int(top_n, "top_n", allow_none=False)
        options = {} if filter is None else {"filter": filter}  # another store's search may not take one
        found = self.store.similarity_search_with_score(query, k=k, **options)
        docs = [  # copies: the store's documents stay the store's
            doc.model_copy(update={"metadata": {**copy.deepcopy(doc.metadata), RETRIEVAL_SCORE: float(score)}})
            for doc, score in found
        ]
        if self.reranker is not None:
            return self.reranker.rerank_documents(docs, query, top_n)
        return docs if top_n is None else docs[:top_n]

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        top_n: int | None = None,
        filter: DocumentFilter | None = None,
    ) -> list[Document]:
        return self._retrieve(query, k, top_n, filter)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        top_n: int | None = None,
        filter: DocumentFilter | None = None,
    ) -> list[Document]:
        return await run_async(self._retrieve, query, k, top_n, filter)
