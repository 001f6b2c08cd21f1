"""LangChain components on flagstack's runtime: embeddings, a reranker (compressor and cross-encoder), a
two-stage retriever, vector stores (dense, and BGE-M3 hybrid) on flag_core's exact indexes, and for BGE-M3 a hybrid
retriever and dense and sparse embeddings for hybrid vector stores
(Qdrant, Milvus) that share one encoding of each text. Model logic lives in flag_core; these classes translate
types. No vector-store package is needed to import any of them."""

from .embeddings import FlagEmbeddings
from .hybrid import FlagHybridRetriever
from .m3 import FlagM3Embeddings
from .rerankers import FlagReranker
from .retrievers import FlagRetriever
from .sparse import FlagSparseEmbeddings
from .vectorstores import FlagHybridVectorStore, FlagVectorStore

__all__ = [
    "FlagEmbeddings",
    "FlagHybridRetriever",
    "FlagHybridVectorStore",
    "FlagM3Embeddings",
    "FlagReranker",
    "FlagRetriever",
    "FlagSparseEmbeddings",
    "FlagVectorStore",
]
