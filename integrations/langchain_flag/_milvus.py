"""langchain-milvus' sparse-embedding shape over :class:`~langchain_flag.FlagSparseEmbeddings` (imported on use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_milvus.utils.sparse import BaseSparseEmbedding

from flag_core.frameworks import run_async

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
        return checked([query], [weight_dict(self.sparse.lexical_weights([query], "query")[0])], "query")[0]

    def embed_documents(self, texts: list[str]) -> list[dict[int, float]]:
        return checked(texts, [weight_dict(w) for w in self.sparse.lexical_weights(texts)], "texts")

    async def aembed_query(self, query: str) -> dict[int, float]:
        return await run_async(self.embed_query, query)

    async def aembed_documents(self, texts: list[str]) -> list[dict[int, float]]:
        return await run_async(self.embed_documents, texts)


def checked(texts: list[str], weights: list[dict[int, float]], name: str) -> list[dict[int, float]]:
    """``weights``, or a ValueError naming the first text BGE-M3 gives no lexical weight for (Milvus refuses an
    empty sparse vector, and would fail the whole insert without saying which text)."""
    for position, (text, row) in enumerate(zip(texts, weights, strict=True)):
        if not row:
            where = "the query" if name == "query" else f"texts[{position}]"
            raise ValueError(f"{where} ({text[:60]!r}) has no BGE-M3 lexical weight (no token outweighs zero), and "
                             "Milvus cannot store or search an empty sparse vector: leave such texts out of the "
                             "sparse field")
    return weights


def milvus_sparse(sparse: FlagSparseEmbeddings) -> FlagMilvusSparseEmbeddings:
    return FlagMilvusSparseEmbeddings(sparse)
