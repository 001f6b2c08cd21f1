"""LlamaIndex components on flagstack's runtime: an embedding model, a reranking node postprocessor and a
dense retriever. Model logic lives in flag_core; these classes translate types. (This package is
``llamaindex_flag``: it never ships files inside the ``llama_index`` namespace.)"""

from .embeddings import FlagEmbedding
from .postprocessors import FlagReranker
from .retrievers import FlagRetriever

__all__ = ["FlagEmbedding", "FlagReranker", "FlagRetriever"]
