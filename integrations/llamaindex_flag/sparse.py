"""FlagSparseEmbedding: BGE-M3's lexical weights as a LlamaIndex ``BaseSparseEmbedding`` ({token id: weight})."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding, SparseEmbedding
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr

from flag_core import BGEM3FlagModel, build_m3
from flag_core.frameworks import ModelName, RebuildsModel, run_async
from flag_core.settings import M3Fields


def _sparse(weights: dict[str, float]) -> SparseEmbedding:
    return {int(token): float(weight) for token, weight in weights.items()}


class FlagSparseEmbedding(RebuildsModel, BaseSparseEmbedding, M3Fields):
    """BGE-M3 sparse embeddings for LlamaIndex (e.g. the sparse side of a hybrid vector store), with
    :class:`flag_core.settings.M3Fields`; LlamaIndex's sparse-embedding events come with every batch.

    Example:
        .. code-block:: python

            from llamaindex_flag import FlagSparseEmbedding

            sparse = FlagSparseEmbedding(model_name="BAAI/bge-m3")
            weights = sparse.get_query_embedding("what do pandas eat?")   # {token id: weight}
            store = QdrantVectorStore(..., enable_hybrid=True, sparse_doc_fn=sparse.qdrant_documents,
                                      sparse_query_fn=sparse.qdrant_queries)
    """

    model_name: ModelName = Field(description="hub id or local folder of the BGE-M3 model (str or os.PathLike)")
    embed_batch_size: int = Field(default=256, gt=0, description="texts handed to the model at once")

    model_config = ConfigDict(extra="forbid", protected_namespaces=("pydantic_model_",))

    _model: BGEM3FlagModel = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._model = build_m3(self.model_name, self.model_settings())

    @classmethod
    def class_name(cls) -> str:
        return "FlagSparseEmbedding"

    @property
    def client(self) -> BGEM3FlagModel:
        """The flag_core model doing the work."""
        return self._model

    def _get_query_embedding(self, query: str) -> SparseEmbedding:
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        return _sparse(self._model.encode_queries(query, return_dense=False, return_sparse=True)["lexical_weights"])

    async def _aget_query_embedding(self, query: str) -> SparseEmbedding:
        return await run_async(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> SparseEmbedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> SparseEmbedding:
        return await run_async(self._get_text_embedding, text)

    def _get_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        weights = self._model.encode_corpus(texts, return_dense=False, return_sparse=True)["lexical_weights"]
        return [_sparse(w) for w in weights]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        return await run_async(self._get_text_embeddings, texts)

    # the callables llama_index.vector_stores.qdrant.QdrantVectorStore(sparse_doc_fn=..., sparse_query_fn=...) take

    def qdrant_documents(self, texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        """Passages' lexical weights as Qdrant wants them: (indices per text, values per text)."""
        return _columns(self.get_text_embedding_batch(texts))

    def qdrant_queries(self, texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        """Queries' lexical weights (with the query instruction, if any) as (indices, values) per text."""
        return _columns([self.get_query_embedding(text) for text in texts])


def _columns(embeddings: list[SparseEmbedding]) -> tuple[list[list[int]], list[list[float]]]:
    items = [sorted(embedding.items()) for embedding in embeddings]
    return [[i for i, _ in pairs] for pairs in items], [[w for _, w in pairs] for pairs in items]
