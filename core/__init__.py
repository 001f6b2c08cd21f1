"""flag_core: the shared runtime of flagstack (BGE embedders, rerankers, merging, evaluation).

Importing flag_core never imports LangChain or LlamaIndex and never touches the network.
"""

from .embedder import FlagAutoModel, FlagModel, LLMEmbedder
from .loading import ModelNotFoundError
from .registry import lookup_embedder, lookup_reranker

__all__ = [
    "FlagAutoModel",
    "FlagModel",
    "LLMEmbedder",
    "ModelNotFoundError",
    "lookup_embedder",
    "lookup_reranker",
]
__version__ = "0.1.0"
