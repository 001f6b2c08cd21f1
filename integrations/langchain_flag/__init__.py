"""LangChain components on flagstack's runtime: embeddings, a reranker (compressor and cross-encoder), a
two-stage retriever, and for BGE-M3 a hybrid retriever and sparse embeddings for langchain-qdrant. Model logic
lives in flag_core; these classes translate types."""

from typing import Any

from .embeddings import FlagEmbeddings
from .hybrid import FlagHybridRetriever
from .rerankers import FlagReranker
from .retrievers import FlagRetriever

__all__ = ["FlagEmbeddings", "FlagHybridRetriever", "FlagReranker", "FlagRetriever", "FlagSparseEmbeddings"]


def __getattr__(name: str) -> Any:
    if name == "FlagSparseEmbeddings":  # needs langchain-qdrant (the vectorstores extra), so imported on use
        from .sparse import FlagSparseEmbeddings

        return FlagSparseEmbeddings
    raise AttributeError(f"module 'langchain_flag' has no attribute {name!r}")
