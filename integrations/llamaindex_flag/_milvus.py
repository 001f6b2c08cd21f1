"""llama-index-vector-stores-milvus' sparse-function shape over :class:`~llamaindex_flag.FlagSparseEmbedding`
(imported on use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llama_index.vector_stores.milvus.utils import BaseSparseEmbeddingFunction

from flag_core.frameworks import run_async

if TYPE_CHECKING:
    from .sparse import FlagSparseEmbedding


class FlagMilvusSparseFunction(BaseSparseEmbeddingFunction):
    """BGE-M3 lexical weights as {token id: weight} for ``MilvusVectorStore``, from a FlagSparseEmbedding (same
    model, same shared encodings)."""

    def __init__(self, sparse: FlagSparseEmbedding) -> None:
        self.sparse = sparse

    def encode_queries(self, queries: list[str]) -> list[dict[int, float]]:
        return checked(queries, [self.sparse.get_query_embedding(query) for query in queries], "queries")

    def encode_documents(self, documents: list[str]) -> list[dict[int, float]]:
        return checked(documents, self.sparse.get_text_embedding_batch(documents), "documents")

    async def async_encode_queries(self, queries: list[str]) -> list[dict[int, float]]:
        return await run_async(self.encode_queries, queries)

    async def async_encode_documents(self, documents: list[str]) -> list[dict[int, float]]:
        return await run_async(self.encode_documents, documents)


def checked(texts: list[str], weights: list[dict[int, float]], name: str) -> list[dict[int, float]]:
    """``weights``, or a ValueError naming the first text BGE-M3 gives no lexical weight for (Milvus refuses an
    empty sparse vector, and would fail the whole insert without saying which text)."""
    for position, (text, row) in enumerate(zip(texts, weights, strict=True)):
        if not row:
            raise ValueError(f"{name}[{position}] ({text[:60]!r}) has no BGE-M3 lexical weight (no token outweighs "
                             "zero), and Milvus cannot store or search an empty sparse vector: leave such texts out "
                             "of the sparse field")
    return weights


def milvus_sparse(sparse: FlagSparseEmbedding) -> FlagMilvusSparseFunction:
    return FlagMilvusSparseFunction(sparse)
