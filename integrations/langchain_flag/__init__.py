"""LangChain components on flagstack's runtime: embeddings, a reranker (compressor and cross-encoder),
and a two-stage retriever. Model logic lives in flag_core; these classes translate types."""

from .embeddings import FlagEmbeddings
from .rerankers import FlagReranker
from .retrievers import FlagRetriever

__all__ = ["FlagEmbeddings", "FlagReranker", "FlagRetriever"]
