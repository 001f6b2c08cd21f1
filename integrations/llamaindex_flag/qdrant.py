"""BGE-M3's dense, sparse and ColBERT outputs in one Qdrant collection, written and searched through LlamaIndex.

:class:`FlagColbertEmbedding` gives BGE-M3's ColBERT multi-vectors, sharing one encoding of each text with
:class:`~llamaindex_flag.FlagM3Embedding` and :class:`~llamaindex_flag.FlagSparseEmbedding` of the same settings.
:class:`FlagQdrantM3VectorStore` is ``llama_index.vector_stores.qdrant.QdrantVectorStore`` (hybrid) with a third
named vector, "colbert" (a MaxSim multivector), written with every node; a hybrid query
(``vector_store_query_mode="hybrid"``) has Qdrant prefetch the dense and the sparse candidates and rank them by
MaxSim (``search_mode="colbert"``) or by BGE-M3's weighted sum of the three scores (``"hybrid"``), server-side, as
:meth:`flag_core.retrieval.HybridIndex.search` ranks them. Importing this module needs
llama-index-vector-stores-qdrant (``pip install flagstack[vectorstores]``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode, VectorStoreQueryResult
from llama_index.vector_stores.qdrant import QdrantVectorStore
from llama_index.vector_stores.qdrant.base import DOCUMENT_ID_KEY
from qdrant_client import models

from flag_core import BGEM3FlagModel
from flag_core.frameworks import (
    M3Adapter,
    ModelName,
    check_mode,
    check_weights,
    one_pass_model,
    qdrant_m3_query,
)
from flag_core.retrieval import DEFAULT_CANDIDATES, DEFAULT_WEIGHTS
from flag_core.settings import M3Fields

from .m3 import FlagM3Embedding
from .sparse import FlagSparseEmbedding

__all__ = ["FlagColbertEmbedding", "FlagQdrantM3VectorStore"]


def _pending_variable() -> contextvars.ContextVar[dict[str, np.ndarray] | None]:
    return contextvars.ContextVar("flagstack_pending_colbert", default=None)


class FlagColbertEmbedding(M3Adapter, M3Fields):
    """BGE-M3's ColBERT multi-vectors for LlamaIndex stores (settings: :class:`flag_core.settings.M3Fields`): per
    text a (tokens, dim) float32 array, exactly ``encode_corpus`` / ``encode_queries``' ``colbert_vecs``. With a
    :class:`~llamaindex_flag.FlagM3Embedding` of equal settings each text is encoded once for both."""

    model_name: ModelName = Field(description="hub id or local folder of the BGE-M3 model (str or os.PathLike)")

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    _model: BGEM3FlagModel = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._model = one_pass_model(self, "colbert")

    @classmethod
    def like(cls, embedding: FlagM3Embedding | FlagSparseEmbedding) -> FlagColbertEmbedding:
        """The ColBERT embedding of the same model and settings as ``embedding``."""
        return cls(**{name: getattr(embedding, name) for name in cls.model_fields})

    def documents(self, texts: list[str]) -> list[np.ndarray]:
        """ColBERT vectors of passages (with the passage instruction, if any)."""
        return self._model.one_pass.serve(texts, "passage", "colbert")

    def queries(self, texts: list[str]) -> list[np.ndarray]:
        """ColBERT vectors of queries (with the query instruction, if any)."""
        return self._model.one_pass.serve(texts, "query", "colbert")


class FlagQdrantM3VectorStore(QdrantVectorStore):
    """LlamaIndex's hybrid ``QdrantVectorStore`` over BGE-M3's three outputs: every point holds the node's dense
    vector (``dense_vector_name``, default "dense"), its lexical weights (``sparse_vector_name``, "sparse") and its
    ColBERT vectors (``colbert_vector_name``, "colbert": a MaxSim multivector, dot product, so a score is exactly
    FlagEmbedding's MaxSim times the query's tokens), all of the node's embed text. A hybrid query
    (``index.as_retriever(vector_store_query_mode="hybrid")``) ranks in Qdrant as
    ``HybridIndex.search(mode=search_mode, candidates=candidates, weights=weights)`` does
    (:func:`~flag_core.frameworks.qdrant_m3_query`); other
    query modes are the base store's. The collection is created at the first write (dense vectors compared by
    ``dense_distance``, dot product by default: flagstack's dense score).

    ``sparse`` and ``colbert`` default to those of ``embedding``'s model (the ``embed_model`` of the index: each
    text is encoded once for all three outputs).

    Example:
        .. code-block:: python

            from llamaindex_flag import FlagM3Embedding
            from llamaindex_flag.qdrant import FlagQdrantM3VectorStore

            dense = FlagM3Embedding(model_name="BAAI/bge-m3")
            store = FlagQdrantM3VectorStore("docs", client=QdrantClient(":memory:"), embedding=dense)
            index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                                     embed_model=dense)
            hits = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=5).retrieve("pandas?")
    """

    colbert_vector_name: str = "colbert"
    search_mode: Literal["dense", "sparse", "sparse+dense", "colbert", "hybrid"] = "colbert"
    candidates: int = Field(default=DEFAULT_CANDIDATES, gt=0)
    weights: tuple[float, float, float] = DEFAULT_WEIGHTS
    dense_distance: models.Distance = models.Distance.DOT

    _colbert: FlagColbertEmbedding = PrivateAttr()
    _sparse: FlagSparseEmbedding = PrivateAttr()
    # the ColBERT vectors of the nodes an add() is writing, for _build_points: per thread and per asyncio task
    # (a context variable), so concurrent adds to one store never see each other's
    _pending_colbert: contextvars.ContextVar[dict[str, np.ndarray] | None] = PrivateAttr(
        default_factory=lambda: _pending_variable())

    def __init__(
        self,
        collection_name: str,
        embedding: FlagM3Embedding | None = None,
        *,
        sparse: FlagSparseEmbedding | None = None,
        colbert: FlagColbertEmbedding | None = None,
        search_mode: Literal["dense", "sparse", "sparse+dense", "colbert", "hybrid"] = "colbert",
        candidates: int = DEFAULT_CANDIDATES,
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        colbert_vector_name: str = "colbert",
        dense_distance: models.Distance = models.Distance.DOT,
        dense_vector_name: str = "dense",
        sparse_vector_name: str = "sparse",
        **kwargs: Any,
    ) -> None:
        if sparse is None or colbert is None:
            if embedding is None:
                raise TypeError("give sparse and colbert, or the FlagM3Embedding to take them from as embedding")
            sparse = sparse or embedding.sparse()
            colbert = colbert or FlagColbertEmbedding.like(embedding)
        super().__init__(collection_name, enable_hybrid=True, sparse_doc_fn=sparse.qdrant_documents,
                         sparse_query_fn=sparse.qdrant_queries, dense_vector_name=dense_vector_name,
                         sparse_vector_name=sparse_vector_name, **kwargs)
        self.colbert_vector_name = colbert_vector_name
        self.search_mode = check_mode(search_mode)  # type: ignore[assignment]
        self.candidates = candidates
        self.weights = check_weights(weights)
        self.dense_distance = dense_distance
        self._sparse, self._colbert = sparse, colbert
        if self._collection_initialized:
            self._check_colbert()

    @classmethod
    def class_name(cls) -> str:
        return "FlagQdrantM3VectorStore"

    @property
    def colbert(self) -> FlagColbertEmbedding:
        """The ColBERT embedding of the store's points and queries."""
        return self._colbert

    def _check_colbert(self) -> None:
        vectors = self._client.get_collection(self.collection_name).config.params.vectors
        params = vectors.get(self.colbert_vector_name) if isinstance(vectors, dict) else None
        if params is None or params.multivector_config is None:
            raise ValueError(f"Qdrant collection {self.collection_name} has no multivector named "
                             f"{self.colbert_vector_name!r}: create it with this store, or set colbert_vector_name")

    # writing ----------------------------------------------------------------------------------

    def add(self, nodes: list[BaseNode], shard_identifier: Any | None = None,  # type: ignore[override]
            **add_kwargs: Any) -> list[str]:
        """Write ``nodes`` (embedded by the index's embed model) with their lexical weights and ColBERT vectors."""
        token = self._pending_colbert.set(self._colbert_of(nodes))
        try:
            return super().add(nodes, shard_identifier, **add_kwargs)
        finally:
            self._pending_colbert.reset(token)

    async def async_add(self, nodes: list[BaseNode], shard_identifier: Any | None = None,  # type: ignore[override]
                        **kwargs: Any) -> list[str]:
        """Like :meth:`add`, through the async client."""
        token = self._pending_colbert.set(self._colbert_of(nodes))
        try:
            return await super().async_add(nodes, shard_identifier, **kwargs)
        finally:
            self._pending_colbert.reset(token)

    def _colbert_of(self, nodes: list[BaseNode]) -> dict[str, np.ndarray]:
        texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
        return {node.node_id: rows for node, rows in zip(nodes, self._colbert.documents(texts), strict=True)}

    def _collection_options(self, vector_size: int) -> dict[str, Any]:
        colbert_size = next(iter((self._pending_colbert.get() or {}).values())).shape[1]
        return {
            "collection_name": self.collection_name,
            "vectors_config": {
                self.dense_vector_name: self._dense_config or models.VectorParams(size=vector_size,
                                                                                  distance=self.dense_distance),
                self.colbert_vector_name: models.VectorParams(
                    size=colbert_size, distance=models.Distance.DOT,
                    multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)),
            },
            "sparse_vectors_config": {self.sparse_vector_name: self._sparse_config or models.SparseVectorParams()},
            "quantization_config": self._quantization_config, "shard_number": self._shard_number,
            "replication_factor": self._replication_factor, "sharding_method": self._sharding_method,
            "write_consistency_factor": self._write_consistency_factor,
        }

    def _create_collection(self, collection_name: str, vector_size: int) -> None:
        self._client.create_collection(**self._collection_options(vector_size))
        if self._shard_keys:
            self._create_shard_keys()
        if self.index_doc_id:  # the base store's payload index, for deleting by document
            self._client.create_payload_index(collection_name, field_name=DOCUMENT_ID_KEY,
                                              field_schema=models.PayloadSchemaType.KEYWORD)
        if self._payload_indexes:
            self._create_payload_indexes()
        self._collection_initialized = True

    async def _acreate_collection(self, collection_name: str, vector_size: int) -> None:
        self._ensure_async_client()
        await self._aclient.create_collection(**self._collection_options(vector_size))
        if self._shard_keys:
            await self._acreate_shard_keys()
        if self.index_doc_id:
            await self._aclient.create_payload_index(collection_name, field_name=DOCUMENT_ID_KEY,
                                                     field_schema=models.PayloadSchemaType.KEYWORD)
        if self._payload_indexes:
            await self._acreate_payload_indexes()
        self._collection_initialized = True

    def _build_points(self, nodes: list[BaseNode], sparse_vector_name: str) -> tuple[list[Any], list[str]]:
        points, ids = super()._build_points(nodes, sparse_vector_name)
        for point in points:
            rows = (self._pending_colbert.get() or {}).get(str(point.id))
            if rows is None:
                raise ValueError(f"node {point.id} was not written through add(): it has no ColBERT vectors")
            point.vector[self.colbert_vector_name] = rows.tolist()
        return points, ids

    # querying ---------------------------------------------------------------------------------

    def _m3_arguments(self, query: VectorStoreQuery, **kwargs: Any) -> dict[str, Any] | None:
        if query.mode != VectorStoreQueryMode.HYBRID or query.query_str is None or query.query_embedding is None:
            return None
        qdrant_filter = kwargs.get("qdrant_filters") or self._build_query_filter(query)
        indices, values = self._sparse.qdrant_queries([query.query_str])
        colbert = self._colbert.queries([query.query_str])[0].tolist()
        names = (self.dense_vector_name, self.sparse_vector_name, self.colbert_vector_name)
        sparse = models.SparseVector(indices=indices[0], values=values[0])
        arguments = qdrant_m3_query(names, list(query.query_embedding), sparse, colbert, query.similarity_top_k,
                                    self.search_mode, self.candidates, self.weights, qdrant_filter)
        return {**arguments, "collection_name": self.collection_name, "query_filter": qdrant_filter,
                "limit": query.similarity_top_k, "with_payload": True}

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """A hybrid query ranked in Qdrant by ``search_mode`` (see the class); other modes: the base store's."""
        arguments = self._m3_arguments(query, **kwargs)
        if arguments is None:
            return super().query(query, **kwargs)
        return self.parse_to_query_result(self._client.query_points(**arguments).points)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Like :meth:`query`, through the async client."""
        arguments = self._m3_arguments(query, **kwargs)
        if arguments is None:
            return await super().aquery(query, **kwargs)
        self._ensure_async_client()
        return self.parse_to_query_result((await self._aclient.query_points(**arguments)).points)
