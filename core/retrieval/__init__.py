"""Retrieval: the exact vector index (ids, deletes, upserts, metadata filters; saved atomically and checksummed),
dense search over texts, and hybrid search over BGE-M3's dense, sparse and ColBERT outputs."""

from .dense import DenseIndex, EmbedDocuments, EmbedQuery, Entry, Hit, PayloadFormat, embedding_settings
from .filters import COMPARISONS, LOGICAL, Filter, compile_filter
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
from .index import IndexFileError, VectorIndex, Where, check_ids, new_id

__all__ = [
    "COLBERT_STORAGE",
    "COMPARISONS",
    "DEFAULT_CANDIDATES",
    "DEFAULT_COLBERT_STORAGE",
    "DEFAULT_WEIGHTS",
    "LOGICAL",
    "MODES",
    "DenseIndex",
    "EmbedDocuments",
    "EmbedQuery",
    "Entry",
    "Filter",
    "Hit",
    "HybridHit",
    "HybridIndex",
    "IndexFileError",
    "MultiVectors",
    "PayloadFormat",
    "SparseIndex",
    "VectorIndex",
    "Where",
    "check_colbert_storage",
    "check_ids",
    "check_weights",
    "compile_filter",
    "embedding_settings",
    "new_id",
]
