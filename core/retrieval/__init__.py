"""Retrieval: the exact vector index (saved atomically and checksummed), dense search over texts, and hybrid
search over BGE-M3's dense, sparse and ColBERT outputs."""

from .dense import DenseIndex, EmbedDocuments, EmbedQuery, Hit, PayloadFormat, embedding_settings
from .hybrid import HybridHit, HybridIndex, MultiVectors, SparseIndex
from .index import IndexFileError, VectorIndex

__all__ = [
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
    "embedding_settings",
]
