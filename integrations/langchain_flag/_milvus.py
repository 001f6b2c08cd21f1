"""langchain-milvus' sparse-embedding shape over :class:`~langchain_flag.FlagSparseEmbeddings` (imported on use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_milvus.utils.sparse import BaseSparseEmbedding

from flag_core.frameworks import require_lexical_weights, run_async

from .sparse import weight_dict

if TYPE_CHECKING:
    from .sparse import FlagSparseEmbeddings


class FlagMilvusSparseEmbeddings(BaseSparseEmbedding):
    """BGE-M3 lexical weights as {token id: weight} for langchain-milvus, from a FlagSparseEmbeddings (same model,
    same shared encodings)."""

    def __init__(self, sparse: FlagSparseEmbeddings) -> None:
        self.sparse = sparse

    def embed_query(self, query: str) -> dict[int, float]:
        if not isinstance(query, str):
            raise TypeError(f"embed_query takes one str, got {type(query).__name__}")
        weights = [weight_dict(self.sparse.lexical_weights([query], "query")[0])]
        return require_lexical_weights([query], weights, "the query")[0]

    def embed_documents(self, texts: list[str]) -> list[dict[int, float]]:
        return require_lexical_weights(texts, [weight_dict(w) for w in self.sparse.lexical_weights(texts)], "texts")

    async def aembed_query(self, query: str) -> dict[int, float]:
        return await run_async(self.embed_query, query)

    async def aembed_documents(self, texts: list[str]) -> list[dict[int, float]]:
        return await run_async(self.embed_documents, texts)


def milvus_sparse(sparse: FlagSparseEmbeddings) -> FlagMilvusSparseEmbeddings:
    return FlagMilvusSparseEmbeddings(sparse)
