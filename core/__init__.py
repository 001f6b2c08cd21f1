"""flag_core: the shared runtime of flagstack (BGE embedders, rerankers, merging, evaluation).

Layers, lowest first (a layer imports only the ones before it):

- ``flag_core.inference``: models, runtimes, batching, pooling, loading, devices, workers, backends
- ``flag_core.retrieval``: the vector index and dense search
- ``flag_core.evaluation``, ``flag_core.training``, ``flag_core.merge``: what is built on inference
- ``flag_core.serving``: ``flagstack serve`` (the HTTP server; FastAPI is imported only when an app is built)
- ``flag_core.cli``: the ``flagstack`` command

The drop-in names (FlagEmbedding's classes and the helpers below) are importable from ``flag_core`` itself.
Importing flag_core never imports LangChain or LlamaIndex and never touches the network.

Public modules (the names in their ``__all__``, or for a module without one its own top-level names not
starting with "_"); every other submodule is internal and may change without notice. The framework adapters
import only from these (``tests/test_public_api.py`` holds them to it):

- ``flag_core``: the drop-in classes, ``build_embedder`` / ``build_m3`` / ``build_reranker``, the registry
- ``flag_core.settings``: the settings fields the adapter classes inherit (``EmbedderFields``, ``RerankerFields``,
  ``M3Fields``)
- ``flag_core.frameworks``: what the adapters share (copies that rebuild the model, the hybrid retrievers' index
  and per-call options, ``ModelName``, ``as_model_name``, ``check_positive_int``)
- ``flag_core.retrieval``: the indexes (dense, hybrid) and their constants (``MODES``, ``DEFAULT_WEIGHTS``, ...)
- ``flag_core.merge``: model merging (LM-Cocktail), ``FromMerge`` for framework classes
- ``flag_core.migration``: the Hugging Face classes' arguments translated into flagstack's settings
"""

from .inference.embedder import FlagAutoModel, FlagModel, LLMEmbedder
from .inference.gather import QueueFull
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
    "QueueFull",
    "VectorIndex",
    "build_embedder",
    "build_m3",
    "build_reranker",
    "lookup_embedder",
    "lookup_reranker",
]
__version__ = "0.1.0"
