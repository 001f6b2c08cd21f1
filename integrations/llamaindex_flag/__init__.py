"""LlamaIndex components on flagstack's runtime: an embedding model, a reranking node postprocessor, embedded vector
stores (exact dense, and BGE-M3 hybrid) with the dense and hybrid retrievers that view them, and for BGE-M3 dense and
sparse embeddings that share one encoding of each text in a hybrid vector store (Qdrant, Milvus). Model logic
lives in flag_core; these classes translate types. (This package is ``llamaindex_flag``: it never ships files
inside the ``llama_index`` namespace.)"""

from .embeddings import FlagEmbedding
from .hybrid import FlagHybridRetriever
from .m3 import FlagM3Embedding
from .postprocessors import FlagReranker
from .retrievers import FlagRetriever
from .sparse import FlagSparseEmbedding
from .vector_stores import FlagHybridVectorStore, FlagVectorStore

__all__ = [
    "FlagEmbedding",
    "FlagHybridRetriever",
    "FlagHybridVectorStore",
    "FlagM3Embedding",
    "FlagReranker",
    "FlagRetriever",
    "FlagSparseEmbedding",
    "FlagVectorStore",
]
