"""FlagHybridRetriever: BGE-M3 dense + sparse candidates, ColBERT rescoring, on flag_core's HybridIndex."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr

from flag_core.frameworks import HybridIndexHolder, ModelName, run_async
from flag_core.frameworks import Mode as Mode  # where it was defined before
from flag_core.settings import M3Fields

from .retrievers import RETRIEVAL_SCORE
from .vectorstores import HYBRID_PAYLOADS as PAYLOADS  # the format of its files (the store's)
from .vectorstores import DocumentFilter, FlagHybridVectorStore

RELEVANCE_SCORE = "relevance_score"


class FlagHybridRetriever(HybridIndexHolder, M3Fields, BaseRetriever):
    """Retrieval with all three BGE-M3 outputs: the ``candidates`` best documents by dense and by sparse score,
    rescored with ColBERT (candidates only) and ranked by ``mode`` with ``weights`` (dense, sparse, colbert).
    ``metadata["relevance_score"]`` holds the ranking score, ``dense_score`` / ``sparse_score`` /
    ``colbert_score`` / ``hybrid_score`` each mode's. Model settings: :class:`flag_core.settings.M3Fields`
    (the same fields as ``llamaindex_flag.FlagHybridRetriever``'s; search settings and the index:
    :class:`flag_core.frameworks.HybridIndexHolder`). ``k`` and ``mode`` may be given per call:
    ``retriever.invoke(query, k=10, mode="dense")``.

    ``dumpd`` / ``loads`` round-trip a retriever whose index is in a file (``index_path``, kept absolute; the
    loaded retriever is equal to it); one holding documents that are not saved serializes as "not implemented".
    ``copy.deepcopy`` and ``pickle`` copy the documents and share the loaded model.

    Example:
        .. code-block:: python

            from langchain_flag import FlagHybridRetriever

            retriever = FlagHybridRetriever.from_texts(texts, model_name="BAAI/bge-m3", k=5)
            docs = retriever.invoke("what do pandas eat?")
            dense_only = retriever.invoke("what do pandas eat?", k=2, mode="dense")
    """

    model_name: ModelName = Field(description="hub id or local folder of the BGE-M3 model")
    k: int = Field(default=4, gt=0, description="documents returned")

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    payloads = PAYLOADS

    _vectorstore: FlagHybridVectorStore | None = PrivateAttr(default=None)

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._vectorstore = None

    @property
    def vectorstore(self) -> FlagHybridVectorStore:
        """A :class:`~langchain_flag.FlagHybridVectorStore` over this retriever's index (the same object) with its
        model and search settings (as they are now): ids, upserts, deletes, filters and LangChain's vector-store
        methods."""
        store = self._vectorstore
        if store is None or store.index is not self._index or (store.mode, store.weights, store.candidates) != (
                self.mode, self.weights, self.candidates):
            store = self._vectorstore = FlagHybridVectorStore.sharing(self)
        return store

    def to_json(self) -> Any:
        """The constructor form (settings and ``index_path``), or "not implemented" while the index holds
        documents that are not in the file."""
        if not self.in_file():
            return self.to_json_not_implemented()
        return super().to_json()

    # building -----------------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls, texts: Iterable[str], metadatas: Sequence[dict[str, Any]] | None = None,
        ids: Sequence[str] | None = None, **kwargs: Any,
    ) -> FlagHybridRetriever:
        """A retriever over ``texts`` (with optional metadata and ids, one per text)."""
        texts = list(texts)
        for name, values in (("metadatas", metadatas), ("ids", ids)):
            if values is not None and len(values) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(values)} {name}: give one per text")
        retriever = cls(**kwargs)
        retriever.add_documents([
            Document(page_content=text, metadata=dict(metadatas[i]) if metadatas is not None else {},
                     id=ids[i] if ids is not None else None)
            for i, text in enumerate(texts)
        ])
        return retriever

    @classmethod
    def from_documents(cls, documents: Iterable[Document], **kwargs: Any) -> FlagHybridRetriever:
        """A retriever over ``documents``."""
        retriever = cls(**kwargs)
        retriever.add_documents(list(documents))
        return retriever

    def add_documents(self, documents: Sequence[Document]) -> list[int]:
        """Encode (all three outputs) and index more documents (each under its ``Document.id``, else a new id; a
        document whose id the index holds replaces it); returns their positions."""
        ids = self.vectorstore.add_documents(list(documents))
        return self._index.dense.positions(ids)

    # persistence --------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> FlagHybridRetriever:
        """Read an index written by :meth:`save` (same model settings, or :class:`flag_core.IndexFileError`)."""
        retriever = cls(**kwargs)
        retriever._read_index(path)
        return retriever

    # retrieval ----------------------------------------------------------------------------------

    def _retrieve(
        self, query: str, k: int | None, mode: str | None, filter: DocumentFilter | None,
    ) -> list[Document]:
        hits = self.vectorstore.search_hits(query, self.k if k is None else k, mode=self.mode if mode is None else mode,
                                            weights=self.weights, candidates=self.candidates, filter=filter)
        return [
            Document(
                id=hit.id,
                page_content=hit.text,
                metadata={**hit.payload["metadata"], RELEVANCE_SCORE: hit.score, RETRIEVAL_SCORE: hit.score,
                          **{f"{name}_score": value for name, value in hit.scores.items()}},
            )
            for hit in hits
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None,
        mode: str | None = None, filter: DocumentFilter | None = None,
    ) -> list[Document]:
        return self._retrieve(query, k, mode, filter)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None,
        mode: str | None = None, filter: DocumentFilter | None = None,
    ) -> list[Document]:
        return await run_async(self._retrieve, query, k, mode, filter)
