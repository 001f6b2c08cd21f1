"""Retrieval: the exact vector index (saved atomically and checksummed), dense search over texts, and hybrid
search over BGE-M3's dense, sparse and ColBERT outputs."""

from .dense import DenseIndex, EmbedDocuments, EmbedQuery, Hit, PayloadFormat, embedding_settings
from .hybrid import (
    COLBERT_STORAGE,
    DEFAULT_CANDIDATES,
    DEFAULT_COLBERT_STORAGE,
    DEFAULT_WEIGHTS,
    MODES,
    HybridHit,
    HybridIndex,
    MultiVectors,
    SparseIndex,
    check_colbert_storage,
    check_weights,
)
from .index import IndexFileError, VectorIndex

__all__ = [
    "COLBERT_STORAGE",
    "DEFAULT_CANDIDATES",
    "DEFAULT_COLBERT_STORAGE",
    "DEFAULT_WEIGHTS",
    "MODES",
    "DenseIndex",
    "EmbedDocuments",
    "EmbedQuery",
    "Hit",
    "HybridHit",
    "HybridIndex",
    "IndexFileError",
    "MultiVectors",
    "PayloadFormat",
    "SparseIndex",
    "VectorIndex",
    "check_colbert_storage",
    "check_weights",
    "embedding_settings",
]
