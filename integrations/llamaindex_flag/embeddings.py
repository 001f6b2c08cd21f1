"""FlagEmbedding: a LlamaIndex ``BaseEmbedding`` backed by flag_core's runtime."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from flag_core import FlagModel, build_embedder
from flag_core.merge import FromMerge
from flag_core.settings import EmbedderFields

# With an embeddings cache set, LlamaIndex keys query and text vectors by the string alone; queries are
# looked up under this mark so that a query's vector (with its instruction) never answers for a text's.
_QUERY_KEY = "\x00flagstack-query\x00"


class FlagEmbedding(FromMerge, BaseEmbedding, EmbedderFields):
    """BGE (and other) embedding models for LlamaIndex, with flag_core's setting names
    (:class:`flag_core.settings.EmbedderFields`): use it as ``Settings.embed_model``, in an index, or as an
    ingestion transformation.

    Example:
        .. code-block:: python

            from llama_index.core import Settings
            from llamaindex_flag import FlagEmbedding

            Settings.embed_model = FlagEmbedding(model_name="BAAI/bge-base-en-v1.5")
    """

    model_name: str = Field(description="hub id or local folder of the embedding model")
    embed_batch_size: int = Field(default=256, gt=0, le=2048, description="texts handed to the runtime at once")

    _model: FlagModel = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._model = build_embedder(self.model_name, **self.embedder_settings())

    @classmethod
    def class_name(cls) -> str:
        return "FlagEmbedding"

    @property
    def client(self) -> FlagModel:
        """The flag_core model doing the work."""
        return self._model

    def signature(self) -> dict[str, Any]:
        """The settings that decide what a vector means (stored with saved indexes)."""
        return self._model.signature()

    # queries: the cache key is marked so it never meets a text of the same string ----------------

    def get_query_embedding(self, query: str) -> Embedding:
        if self.embeddings_cache is None:
            return super().get_query_embedding(query)
        return super().get_query_embedding(_QUERY_KEY + query)

    async def aget_query_embedding(self, query: str) -> Embedding:
        if self.embeddings_cache is None:
            return await super().aget_query_embedding(query)
        return await super().aget_query_embedding(_QUERY_KEY + query)

    def _get_query_embedding(self, query: str) -> Embedding:
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        return self._model.encode_queries(query.removeprefix(_QUERY_KEY), output="list")

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    # texts ---------------------------------------------------------------------------------------

    def _get_text_embedding(self, text: str) -> Embedding:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._model.encode_corpus(text, output="list")

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._model.encode_corpus(texts, output="list")

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
