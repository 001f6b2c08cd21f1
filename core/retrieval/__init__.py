"""Retrieval: the exact vector index (saved atomically and checksummed) and dense search over texts."""

from .dense import DenseIndex, EmbedDocuments, EmbedQuery, Hit, PayloadFormat, embedding_settings
from .index import IndexFileError, VectorIndex

__all__ = [
    "DenseIndex",
    "EmbedDocuments",
    "EmbedQuery",
    "Hit",
    "IndexFileError",
    "PayloadFormat",
    "VectorIndex",
    "embedding_settings",
]
