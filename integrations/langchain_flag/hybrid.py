"""FlagHybridRetriever: BGE-M3 dense + sparse candidates, ColBERT rescoring, on flag_core's HybridIndex."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from flag_core import build_m3
from flag_core.inference.inputs import ModelName, check_positive_int
from flag_core.retrieval import HybridIndex, PayloadFormat
from flag_core.retrieval.hybrid import DEFAULT_CANDIDATES, DEFAULT_WEIGHTS, check_weights
from flag_core.settings import M3Fields, RebuildsModel

from .retrievers import RETRIEVAL_SCORE, absolute_path, check_document_payload

RELEVANCE_SCORE = "relevance_score"
PAYLOADS = PayloadFormat("langchain_flag.FlagHybridRetriever", keys=("metadata", "id"), check=check_document_payload)
Mode = Literal["dense", "sparse", "colbert", "sparse+dense", "hybrid"]


class FlagHybridRetriever(RebuildsModel, M3Fields, BaseRetriever):
    """Retrieval with all three BGE-M3 outputs: the ``candidates`` best documents by dense and by sparse score,
    rescored with ColBERT (candidates only) and ranked by ``mode`` with ``weights`` (dense, sparse, colbert).
    ``metadata["relevance_score"]`` holds the ranking score, ``dense_score`` / ``sparse_score`` /
    ``colbert_score`` / ``hybrid_score`` each mode's. Model settings: :class:`flag_core.settings.M3Fields`.

    ``dumpd`` / ``loads`` round-trip a retriever whose index is in a file (``index_path``, kept absolute);
    ``copy.deepcopy`` and ``pickle`` copy the documents and share the loaded model.

    Example:
        .. code-block:: python

            from langchain_flag import FlagHybridRetriever

            retriever = FlagHybridRetriever.from_texts(texts, model_name="BAAI/bge-m3", k=5)
            docs = retriever.invoke("what do pandas eat?")
    """

    model_name: ModelName = Field(description="hub id or local folder of the BGE-M3 model")
    k: int = Field(default=4, gt=0, description="documents returned")
    mode: Mode = Field(default="hybrid", description="what ranks: dense, sparse, colbert, sparse+dense or hybrid")
    weights: tuple[float, float, float] = Field(default=DEFAULT_WEIGHTS, description="dense, sparse, colbert")
    candidates: int = Field(default=DEFAULT_CANDIDATES, gt=0, description="dense and sparse candidates each")
    index_path: str | None = Field(default=None, description="index file to read at construction (save sets it)")

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    _index: HybridIndex = PrivateAttr()
    _saved_size: int = PrivateAttr(default=0)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.index_path is not None:  # read after validation, so a bad file is an IndexFileError
            self._read_index(self.index_path)

    @field_validator("index_path", mode="before")
    @classmethod
    def _absolute(cls, value: Any) -> Any:
        return absolute_path(value)

    def model_post_init(self, context: Any, /) -> None:
        check_weights(self.weights)
        self._index = HybridIndex(build_m3(self.model_name, **self.m3_settings()), payload_format=PAYLOADS)

    def __getstate__(self) -> dict[str, Any]:
        """Settings (the model is built again, shared: :class:`flag_core.settings.RebuildsModel`) and the index's
        documents without the model."""
        return {**super().__getstate__(), "flagstack_index": self._index.detached(), "saved_size": self._saved_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        documents, saved_size = state.pop("flagstack_index"), state.pop("saved_size")
        super().__setstate__(state)
        self._index = HybridIndex.attached(self._index.model, documents)
        self._saved_size = saved_size

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    def to_json(self) -> Any:
        """The constructor form (settings and ``index_path``), or "not implemented" while the index holds
        documents that are not in the file."""
        if len(self._index) and (self.index_path is None or len(self._index) != self._saved_size):
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
        """Encode (all three outputs) and index more documents; returns their positions."""
        docs = list(documents)
        for i, doc in enumerate(docs):
            if not isinstance(doc, Document):
                raise TypeError(f"documents[{i}] is {type(doc).__name__}, expected a langchain Document")
        return self._index.add([d.page_content for d in docs], [{"metadata": d.metadata, "id": d.id} for d in docs])

    def __len__(self) -> int:
        return len(self._index)

    # persistence --------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index (all three outputs, texts, metadata, model settings) to one file, atomically."""
        self._index.save(path)
        self.index_path = absolute_path(path)
        self._saved_size = len(self._index)

    def _read_index(self, path: str | os.PathLike[str]) -> None:
        self._index = HybridIndex.load(path, self._index.model, PAYLOADS)
        self.index_path = absolute_path(path)
        self._saved_size = len(self._index)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> FlagHybridRetriever:
        """Read an index written by :meth:`save` (same model settings, or :class:`flag_core.IndexFileError`)."""
        retriever = cls(**kwargs)
        retriever._read_index(path)
        return retriever

    # retrieval ----------------------------------------------------------------------------------

    def _retrieve(self, query: str, k: int | None, mode: str | None) -> list[Document]:
        k = self.k if k is None else check_positive_int(k, "k", allow_none=False)
        hits = self._index.search(query, k, mode or self.mode, self.weights, self.candidates)
        return [
            Document(
                page_content=hit.text,
                metadata={**hit.payload["metadata"], RELEVANCE_SCORE: hit.score, RETRIEVAL_SCORE: hit.score,
                          **{f"{name}_score": value for name, value in hit.scores.items()}},
                id=hit.payload["id"],
            )
            for hit in hits
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None,
        mode: str | None = None,
    ) -> list[Document]:
        return self._retrieve(query, k, mode)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None,
        mode: str | None = None,
    ) -> list[Document]:
        return await asyncio.to_thread(self._retrieve, query, k, mode)
