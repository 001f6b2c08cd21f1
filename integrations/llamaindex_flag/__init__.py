"""LlamaIndex components on flagstack's runtime: an embedding model, a reranking node postprocessor, a dense
retriever, and for BGE-M3 sparse embeddings and a hybrid retriever. Model logic lives in flag_core; these
classes translate types. (This package is ``llamaindex_flag``: it never ships files inside the ``llama_index``
namespace.)"""

from .embeddings import FlagEmbedding
from .hybrid import FlagHybridRetriever
from .postprocessors import FlagReranker
from .retrievers import FlagRetriever
from .sparse import FlagSparseEmbedding

__all__ = ["FlagEmbedding", "FlagHybridRetriever", "FlagReranker", "FlagRetriever", "FlagSparseEmbedding"]
