"""FlagEmbeddings: LangChain ``Embeddings`` backed by flag_core's runtime."""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.load.serializable import Serializable
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from flag_core import FlagModel, build_embedder
from flag_core.frameworks import ModelName, RebuildsModel, overrides, run_async
from flag_core.merge import FromMerge
from flag_core.migration import langchain_embeddings_arguments
from flag_core.settings import EmbedderFields


class FlagEmbeddings(RebuildsModel, FromMerge, EmbedderFields, Embeddings, Serializable):
    """BGE (and other) embedding models for LangChain, with flag_core's setting names
    (see :class:`flag_core.settings.EmbedderFields`).

    Instructions left as None take the registry's default for ``model_name`` (e.g. BGE's English query
    instruction); "" turns an instruction off. The model is loaded once and shared by every instance with
    the same settings. Vectors are lists of Python floats.

    The constructor arguments of ``HuggingFaceEmbeddings`` (``cache_folder``, ``model_kwargs``, ``encode_kwargs``,
    ``query_encode_kwargs``, ``multi_process``, ``show_progress``) and ``HuggingFaceBgeEmbeddings``
    (``query_instruction``, ``embed_instruction``) are accepted and translated into these settings
    (:mod:`flag_core.migration`); a key with no equivalent is an error naming it. ``dumpd`` / ``loads`` round-trip
    the settings; ``copy.deepcopy`` and ``pickle`` give objects that share the loaded model.

    Example:
        .. code-block:: python

            from langchain_flag import FlagEmbeddings

            embeddings = FlagEmbeddings(model_name="BAAI/bge-base-en-v1.5")
            vectors = embeddings.embed_documents(["Pandas eat bamboo."])
            query = embeddings.embed_query("what do pandas eat?")
    """

    model_name: ModelName = Field(description="hub id or local folder of the embedding model (str or os.PathLike)")

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    _model: FlagModel = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _huggingface_arguments(cls, values: Any) -> Any:
        return langchain_embeddings_arguments(values) if isinstance(values, dict) else values

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    def model_post_init(self, context: Any, /) -> None:
        self._model = build_embedder(self.model_name, self.model_settings())

    @property
    def client(self) -> FlagModel:
        """The flag_core model doing the work."""
        return self._model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages (with the passage instruction, if any)."""
        return self._model.encode_corpus(_documents(texts), output="list")

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (with the query instruction)."""
        return self._model.encode_queries(_one_query(text), output="list")

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Like :meth:`embed_documents`, without blocking the event loop; concurrent calls share batches."""
        if overrides(self, FlagEmbeddings, "embed_documents"):  # a subclass's own: run as written
            return await run_async(self.embed_documents, texts)
        return await self._model.aencode_as("passage", _documents(texts), output="list")  # type: ignore[return-value]

    async def aembed_query(self, text: str) -> list[float]:
        """Like :meth:`embed_query`, without blocking the event loop; concurrent calls share batches."""
        if overrides(self, FlagEmbeddings, "embed_query"):
            return await run_async(self.embed_query, text)
        return await self._model.aencode_as("query", _one_query(text), output="list")  # type: ignore[return-value]

    def signature(self) -> dict[str, Any]:
        """The settings that decide what a vector means (stored with saved indexes)."""
        return self._model.signature()


def _one_query(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"embed_query takes one str, got {type(text).__name__}")
    return text


def _documents(texts: Any) -> Any:
    if isinstance(texts, str):  # one str would give one vector where a list of vectors is expected
        raise TypeError("embed_documents takes a list of str, got one str: pass [text], or call embed_query")
    return texts
