"""FlagSparseEmbedding: BGE-M3's lexical weights as a LlamaIndex ``BaseSparseEmbedding`` ({token id: weight}), with
the shapes the Qdrant and Milvus vector stores take; importing it needs no vector-store package."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding, SparseEmbedding
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr

from flag_core import BGEM3FlagModel
from flag_core.frameworks import M3Adapter, ModelName, one_pass_model, run_async
from flag_core.settings import M3Fields


def _sparse(weights: dict[str, float]) -> SparseEmbedding:
    return {int(token): float(weight) for token, weight in weights.items()}


class FlagSparseEmbedding(M3Adapter, BaseSparseEmbedding, M3Fields):
    """BGE-M3 sparse embeddings for LlamaIndex (e.g. the sparse side of a hybrid vector store), with
    :class:`flag_core.settings.M3Fields`; LlamaIndex's sparse-embedding events come with every batch. With a
    :class:`~llamaindex_flag.FlagM3Embedding` of equal settings as the dense side, the model is loaded once and
    each text encoded once. Qdrant: :meth:`qdrant_documents` / :meth:`qdrant_queries`; Milvus: :meth:`milvus`.

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
        self._model = one_pass_model(self, "sparse")

    @classmethod
    def class_name(cls) -> str:
        return "FlagSparseEmbedding"

    def _get_query_embedding(self, query: str) -> SparseEmbedding:
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        return _sparse(self._model.one_pass.serve([query], "query", "sparse")[0])

    async def _aget_query_embedding(self, query: str) -> SparseEmbedding:
        return await run_async(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> SparseEmbedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> SparseEmbedding:
        return await run_async(self._get_text_embedding, text)

    def _get_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        return [_sparse(w) for w in self._model.one_pass.serve(texts, "passage", "sparse")]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        return await run_async(self._get_text_embeddings, texts)

    # the callables llama_index.vector_stores.qdrant.QdrantVectorStore(sparse_doc_fn=..., sparse_query_fn=...) take

    def qdrant_documents(self, texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        """Passages' lexical weights as Qdrant wants them: (indices per text, values per text)."""
        return _columns(self.get_text_embedding_batch(texts))

    def qdrant_queries(self, texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        """Queries' lexical weights (with the query instruction, if any) as (indices, values) per text."""
        return _columns([self.get_query_embedding(text) for text in texts])


    def milvus(self) -> Any:
        """This embedding as llama-index-vector-stores-milvus' ``BaseSparseEmbeddingFunction`` ({token id: weight}),
        for ``MilvusVectorStore(enable_sparse=True, sparse_embedding_function=sparse.milvus())``."""
        from ._milvus import milvus_sparse

        return milvus_sparse(self)


def _columns(embeddings: list[SparseEmbedding]) -> tuple[list[list[int]], list[list[float]]]:
    items = [sorted(embedding.items()) for embedding in embeddings]
    return [[i for i, _ in pairs] for pairs in items], [[w for _, w in pairs] for pairs in items]
