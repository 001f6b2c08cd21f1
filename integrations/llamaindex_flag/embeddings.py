"""FlagEmbedding: a LlamaIndex ``BaseEmbedding`` backed by flag_core's runtime."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, model_validator

from flag_core import FlagModel, build_embedder
from flag_core.frameworks import ModelName, RebuildsModel, overrides, run_async
from flag_core.merge import FromMerge
from flag_core.migration import MigrationError, llamaindex_embedding_arguments
from flag_core.settings import EmbedderFields

# With an embeddings cache set, LlamaIndex keys query and text vectors by the string alone; queries are
# looked up under this mark so that a query's vector (with its instruction) never answers for a text's.
_QUERY_KEY = "\x00flagstack-query\x00"


class FlagEmbedding(RebuildsModel, FromMerge, BaseEmbedding, EmbedderFields):
    """BGE (and other) embedding models for LlamaIndex, with flag_core's setting names
    (:class:`flag_core.settings.EmbedderFields`): use it as ``Settings.embed_model``, in an index, or as an
    ingestion transformation.

    Example:
        .. code-block:: python

            from llama_index.core import Settings
            from llamaindex_flag import FlagEmbedding

            Settings.embed_model = FlagEmbedding(model_name="BAAI/bge-base-en-v1.5")

    ``HuggingFaceEmbedding``'s arguments (``max_length``, ``query_instruction``, ``text_instruction``,
    ``normalize``, ``cache_folder``, ``device``, ``parallel_process``, ``target_devices``, ``model_kwargs``) are
    accepted and translated into these settings (:mod:`flag_core.migration`); unknown keywords are an error.
    ``embed_batch_size`` is the one batch size: texts per call and per forward pass.
    """

    model_name: ModelName = Field(description="hub id or local folder of the embedding model (str or os.PathLike)")
    embed_batch_size: int = Field(default=256, gt=0, description="texts per call and per forward pass")
    batch_size: int = Field(default=256, exclude=True, description="same as embed_batch_size (kept in step)")

    model_config = ConfigDict(extra="forbid", protected_namespaces=("pydantic_model_",))

    _model: FlagModel = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _huggingface_arguments(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = llamaindex_embedding_arguments(values)
        if "batch_size" in values:  # flag_core's name for it: one setting, not two
            batch = values.pop("batch_size")
            if values.setdefault("embed_batch_size", batch) != batch:
                raise MigrationError(f"batch_size={batch} and embed_batch_size={values['embed_batch_size']}: give one")
        if "embed_batch_size" in values:
            values["batch_size"] = values["embed_batch_size"]
        return values

    def model_post_init(self, context: Any, /) -> None:
        self._model = build_embedder(self.model_name, self.model_settings())

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
        return self._model.encode_queries(_text(query, "query").removeprefix(_QUERY_KEY), output="list",
                                          show_progress_bar=False)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        if overrides(self, FlagEmbedding, "_get_query_embedding"):  # a subclass's own: as written
            return await run_async(self._get_query_embedding, query)
        return await self._model.aencode_as(  # type: ignore[return-value]
            "query", _text(query, "query").removeprefix(_QUERY_KEY), output="list", show_progress_bar=False)

    # texts: with show_progress_bar, one bar per call (LlamaIndex's), not one per embed_batch_size chunk -----

    def get_text_embedding_batch(self, texts: list[str], show_progress: bool = False, **kwargs: Any) -> list[Embedding]:
        return super().get_text_embedding_batch(_batch(texts), show_progress or self.show_progress_bar, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        return await super().aget_text_embedding_batch(_batch(texts), show_progress or self.show_progress_bar,
                                                        **kwargs)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._model.encode_corpus(_text(text, "text"), output="list", show_progress_bar=False)

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._model.encode_corpus(texts, output="list", show_progress_bar=False)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        if overrides(self, FlagEmbedding, "_get_text_embedding"):
            return await run_async(self._get_text_embedding, text)
        return await self._model.aencode_as(  # type: ignore[return-value]
            "passage", _text(text, "text"), output="list", show_progress_bar=False)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        if overrides(self, FlagEmbedding, "_get_text_embeddings"):
            return await run_async(self._get_text_embeddings, texts)
        return await self._model.aencode_as(  # type: ignore[return-value]
            "passage", texts, output="list", show_progress_bar=False)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _batch(texts: Any) -> Any:
    if isinstance(texts, str):  # LlamaIndex would embed each character of it, one vector apiece
        raise TypeError("get_text_embedding_batch takes a list of str, got one str: pass [text], or call "
                        "get_text_embedding")
    return texts
