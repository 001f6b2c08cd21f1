"""flag_core: the shared runtime of flagstack (BGE embedders, rerankers, merging, evaluation).

Importing flag_core never imports LangChain or LlamaIndex and never touches the network.
"""

from .embedder import FlagAutoModel, FlagModel, LLMEmbedder
from .index import IndexFileError, VectorIndex
from .loading import ModelNotFoundError
from .registry import lookup_embedder, lookup_reranker
from .reranker import FlagAutoReranker, FlagLLMReranker, FlagReranker, LayerWiseFlagLLMReranker
from .shared import build_embedder, build_reranker

__all__ = [
    "FlagAutoModel",
    "FlagAutoReranker",
    "FlagLLMReranker",
    "FlagModel",
    "FlagReranker",
    "IndexFileError",
    "LLMEmbedder",
    "LayerWiseFlagLLMReranker",
    "ModelNotFoundError",
    "VectorIndex",
    "build_embedder",
    "build_reranker",
    "lookup_embedder",
    "lookup_reranker",
]
__version__ = "0.1.0"
