"""FlagReranker: a LangChain document compressor and cross-encoder backed by flag_core's rerankers."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

from langchain_core.callbacks import Callbacks
from langchain_core.cross_encoders import BaseCrossEncoder
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.load.serializable import Serializable
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from flag_core import FlagReranker as CoreReranker
from flag_core import build_reranker
from flag_core.frameworks import ModelName, RebuildsModel, run_async
from flag_core.merge import FromMerge
from flag_core.migration import cross_encoder_arguments
from flag_core.settings import RerankerFields

RELEVANCE_SCORE = "relevance_score"


class FlagReranker(RebuildsModel, FromMerge, RerankerFields, BaseDocumentCompressor, BaseCrossEncoder, Serializable):
    """Reranks documents by a BGE reranker's score of (query, document) and keeps the best ``top_n`` (settings:
    :class:`flag_core.settings.RerankerFields`).

    Works as a ``BaseDocumentCompressor`` (e.g. inside ``ContextualCompressionRetriever``) and as a
    ``BaseCrossEncoder``; takes ``HuggingFaceCrossEncoder``'s ``model_name`` / ``model_kwargs``. Scores are the
    reranker's logits as FlagEmbedding gives them; ``normalize=True`` gives the sigmoid scores that
    ``HuggingFaceCrossEncoder`` (and so ``CrossEncoderReranker``) returns, in the same order. The score goes to
    ``metadata["relevance_score"]`` of new Document objects; the caller's documents are left untouched.

    Example:
        .. code-block:: python

            from langchain_flag import FlagReranker

            reranker = FlagReranker(model_name="BAAI/bge-reranker-v2-m3", top_n=3)
            best = reranker.compress_documents(documents, "what do pandas eat?")
    """

    model_name: ModelName = Field(description="hub id or local folder of the reranker (str or os.PathLike)")
    top_n: int | None = Field(default=3, description="documents kept (None: all, reordered)")
    score_threshold: float | None = Field(default=None, description="drop documents scoring below this")

    merge_type: ClassVar[str] = "reranker"

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    _model: CoreReranker = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _huggingface_arguments(cls, values: Any) -> Any:
        return cross_encoder_arguments(values) if isinstance(values, dict) else values

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    def model_post_init(self, context: Any, /) -> None:
        if self.top_n is not None and self.top_n <= 0:
            raise ValueError(f"top_n must be a positive int or None, got {self.top_n}")
        self._model = build_reranker(self.model_name, self.model_settings())

    @property
    def client(self) -> CoreReranker:
        """The flag_core reranker doing the work."""
        return self._model

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """Scores of (query, passage) pairs, as Python floats in input order."""
        return self._model.compute_score(text_pairs, normalize=self.normalize) if text_pairs else []

    def rerank_documents(self, documents: Sequence[Document], query: str, top_n: int | None = None) -> list[Document]:
        """Copies of ``documents``, best first, each with its score in ``metadata["relevance_score"]``."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        docs = list(documents)
        for i, doc in enumerate(docs):
            if not isinstance(doc, Document):
                raise TypeError(f"documents[{i}] is {type(doc).__name__}, expected a langchain Document")
        if not docs:
            return []
        ranked = self._model.rerank(query, [d.page_content for d in docs], top_n=top_n, normalize=self.normalize)
        kept = []
        for index, value in ranked:
            if self.score_threshold is not None and value < self.score_threshold:
                continue
            doc = docs[index]
            metadata = {**copy.deepcopy(doc.metadata), RELEVANCE_SCORE: value}  # the caller's documents stay theirs
            kept.append(doc.model_copy(update={"metadata": metadata}, deep=True))
        return kept

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The ``top_n`` best documents for ``query`` (above ``score_threshold``, when set)."""
        return self.rerank_documents(documents, query, self.top_n)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Like :meth:`compress_documents`, in a worker thread so the event loop keeps running."""
        return await run_async(self.rerank_documents, documents, query, self.top_n)
