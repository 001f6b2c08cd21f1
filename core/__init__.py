"""flag_core: the shared runtime of flagstack (BGE embedders, rerankers, merging, evaluation).

Importing flag_core never imports LangChain or LlamaIndex and never touches the network.
"""

from .embedder import FlagAutoModel, FlagModel, LLMEmbedder
from .loading import ModelNotFoundError
from .registry import lookup_embedder, lookup_reranker
from .reranker import FlagAutoReranker, FlagLLMReranker, FlagReranker, LayerWiseFlagLLMReranker

__all__ = [
    "FlagAutoModel",
    "FlagAutoReranker",
    "FlagLLMReranker",
    "FlagModel",
    "FlagReranker",
    "LLMEmbedder",
    "LayerWiseFlagLLMReranker",
    "ModelNotFoundError",
    "lookup_embedder",
    "lookup_reranker",
]
__version__ = "0.1.0"
