"""FlagM3Embedding: BGE-M3's dense output as a LlamaIndex ``BaseEmbedding``, sharing one encoding of each text
with the sparse (:class:`~llamaindex_flag.FlagSparseEmbedding`) embeddings of the same model in a hybrid store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr

from flag_core import BGEM3FlagModel
from flag_core.frameworks import M3Adapter, ModelName, one_pass_model, run_async
from flag_core.settings import M3Fields

if TYPE_CHECKING:
    from .sparse import FlagSparseEmbedding


class FlagM3Embedding(M3Adapter, BaseEmbedding, M3Fields):
    """BGE-M3's dense vectors for LlamaIndex (settings: :class:`flag_core.settings.M3Fields`). With :meth:`sparse`
    (or a :class:`~llamaindex_flag.FlagSparseEmbedding` of equal settings) as the sparse side of a hybrid store, the
    model is loaded once and each text is encoded once for both outputs, whichever the store asks for first.

    Example:
        .. code-block:: python

            from llamaindex_flag import FlagM3Embedding

            dense = FlagM3Embedding(model_name="BAAI/bge-m3")
            sparse = dense.sparse()
            store = QdrantVectorStore(..., enable_hybrid=True, sparse_doc_fn=sparse.qdrant_documents,
                                      sparse_query_fn=sparse.qdrant_queries)
            index = VectorStoreIndex(nodes, storage_context=..., embed_model=dense)
    """

    model_name: ModelName = Field(description="hub id or local folder of the BGE-M3 model (str or os.PathLike)")
    embed_batch_size: int = Field(default=256, gt=0, description="texts handed to the model at once")

    model_config = ConfigDict(extra="forbid", protected_namespaces=("pydantic_model_",))

    _model: BGEM3FlagModel = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._model = one_pass_model(self, "dense")

    @classmethod
    def class_name(cls) -> str:
        return "FlagM3Embedding"

    def sparse(self) -> FlagSparseEmbedding:
        """The sparse embedding of the same model and settings (one loaded model, one encoding per text)."""
        from .sparse import FlagSparseEmbedding

        names = ("model_name", "embed_batch_size", *M3Fields.model_fields)
        return FlagSparseEmbedding(**{name: getattr(self, name) for name in names})

    def _get_query_embedding(self, query: str) -> Embedding:
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        return list(self._model.one_pass.serve([query], "query", "dense")[0].tolist())

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await run_async(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> Embedding:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await run_async(self._get_text_embedding, text)

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return [vector.tolist() for vector in self._model.one_pass.serve(texts, "passage", "dense")]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await run_async(self._get_text_embeddings, texts)
