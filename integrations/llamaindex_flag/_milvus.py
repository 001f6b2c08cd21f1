"""llama-index-vector-stores-milvus' sparse-function shape over :class:`~llamaindex_flag.FlagSparseEmbedding`
(imported on use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llama_index.vector_stores.milvus.utils import BaseSparseEmbeddingFunction

from flag_core.frameworks import require_lexical_weights, run_async

if TYPE_CHECKING:
    from .sparse import FlagSparseEmbedding


class FlagMilvusSparseFunction(BaseSparseEmbeddingFunction):
    """BGE-M3 lexical weights as {token id: weight} for ``MilvusVectorStore``, from a FlagSparseEmbedding (same
    model, same shared encodings)."""

    def __init__(self, sparse: FlagSparseEmbedding) -> None:
        self.sparse = sparse

    def encode_queries(self, queries: list[str]) -> list[dict[int, float]]:
        weights = [self.sparse.get_query_embedding(query) for query in queries]
        return require_lexical_weights(queries, weights, "queries")

    def encode_documents(self, documents: list[str]) -> list[dict[int, float]]:
        return require_lexical_weights(documents, self.sparse.get_text_embedding_batch(documents), "documents")

    async def async_encode_queries(self, queries: list[str]) -> list[dict[int, float]]:
        return await run_async(self.encode_queries, queries)

    async def async_encode_documents(self, documents: list[str]) -> list[dict[int, float]]:
        return await run_async(self.encode_documents, documents)


def milvus_sparse(sparse: FlagSparseEmbedding) -> FlagMilvusSparseFunction:
    return FlagMilvusSparseFunction(sparse)
