"""flag_core: the shared runtime of flagstack (BGE embedders, rerankers, merging, evaluation).

Layers, lowest first (a layer imports only the ones before it):

- ``flag_core.inference``: models, runtimes, batching, pooling, loading, devices, workers, backends
- ``flag_core.retrieval``: the vector index and dense search
- ``flag_core.evaluation``, ``flag_core.training``, ``flag_core.merge``: what is built on inference
- ``flag_core.cli``: the ``flagstack`` command

The drop-in names (FlagEmbedding's classes and the helpers below) are importable from ``flag_core`` itself.
Importing flag_core never imports LangChain or LlamaIndex and never touches the network.
"""

from .inference.embedder import FlagAutoModel, FlagModel, LLMEmbedder
from .inference.m3 import BGEM3FlagModel
from .inference.model_files import ModelNotFoundError
from .inference.registry import lookup_embedder, lookup_reranker
from .inference.reranker import FlagAutoReranker, FlagLLMReranker, FlagReranker, LayerWiseFlagLLMReranker
from .inference.shared import build_embedder, build_m3, build_reranker
from .retrieval.index import IndexFileError, VectorIndex

__all__ = [
    "BGEM3FlagModel",
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
    "build_m3",
    "build_reranker",
    "lookup_embedder",
    "lookup_reranker",
]
__version__ = "0.1.0"
