"""BGE-M3's dense, sparse and ColBERT outputs in one Qdrant collection, written and searched through LangChain.

:class:`FlagColbertEmbeddings` gives BGE-M3's ColBERT multi-vectors (one vector per token), sharing one encoding
of each text with :class:`~langchain_flag.FlagM3Embeddings` and :class:`~langchain_flag.FlagSparseEmbeddings` of
the same settings. :class:`FlagQdrantM3Store` is ``langchain_qdrant.QdrantVectorStore`` with a third named vector,
"colbert" (a multivector compared by MaxSim), written with every point; a search has Qdrant prefetch the dense and
the sparse candidates and rank them by MaxSim (``search_mode="colbert"``) or by BGE-M3's weighted sum of the three
scores (``"hybrid"``), server-side, as :meth:`flag_core.retrieval.HybridIndex.search` ranks them. Importing this
module needs langchain-qdrant (``pip install flagstack[vectorstores]``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
from langchain_core.embeddings import Embeddings
from langchain_qdrant import QdrantVectorStore, RetrievalMode, SparseEmbeddings
from pydantic import ConfigDict, Field, PrivateAttr
from qdrant_client import QdrantClient, models

from flag_core import BGEM3FlagModel
from flag_core.frameworks import (
    M3Adapter,
    ModelName,
    check_weights,
    one_pass_model,
    qdrant_m3_query,
    run_async,
)
from flag_core.retrieval import DEFAULT_CANDIDATES, DEFAULT_WEIGHTS
from flag_core.settings import M3Fields

from .m3 import FlagM3Embeddings

__all__ = ["FlagColbertEmbeddings", "FlagQdrantM3Store", "SearchMode"]

SearchMode = Literal["dense", "sparse", "sparse+dense", "colbert", "hybrid", "rrf"]
"""How :class:`FlagQdrantM3Store` ranks the dense and sparse candidates: as ``HybridIndex.search`` in that mode
(by dense score, sparse score, their weighted sum, MaxSim, or BGE-M3's weighted sum of all three); "rrf":
langchain-qdrant's own hybrid search."""
SEARCH_MODES: tuple[str, ...] = ("dense", "sparse", "sparse+dense", "colbert", "hybrid", "rrf")


class FlagColbertEmbeddings(M3Adapter, M3Fields):
    """BGE-M3's ColBERT multi-vectors (settings: :class:`flag_core.settings.M3Fields`): per text a list of token
    vectors, exactly ``encode_corpus(..., return_colbert_vecs=True)["colbert_vecs"]`` (passages) or
    ``encode_queries`` (queries). With dense and sparse embeddings of equal settings each text is encoded once.

    Example:
        .. code-block:: python

            from langchain_flag import FlagM3Embeddings
            from langchain_flag.qdrant import FlagColbertEmbeddings

            colbert = FlagColbertEmbeddings(model_name="BAAI/bge-m3")
            rows = colbert.embed_query("what do pandas eat?")  # one vector per query token
    """

    model_name: ModelName = Field(description="hub id or local folder of the BGE-M3 model (str or os.PathLike)")

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    _model: BGEM3FlagModel = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._model = one_pass_model(self, "colbert")

    @classmethod
    def like(cls, embeddings: FlagM3Embeddings) -> FlagColbertEmbeddings:
        """The ColBERT embeddings of the same model and settings as ``embeddings``."""
        return cls(**{name: getattr(embeddings, name) for name in cls.model_fields})

    def vectors(self, texts: list[str], side: Literal["query", "passage"] = "passage") -> list[np.ndarray]:
        """flag_core's ColBERT vectors of ``texts``: a (tokens, dim) float32 array per text."""
        return self._model.one_pass.serve(texts, side, "colbert")

    def embed_documents(self, texts: list[str]) -> list[list[list[float]]]:
        """ColBERT vectors of passages (with the passage instruction, if any)."""
        return [rows.tolist() for rows in self.vectors(texts)]

    def embed_query(self, text: str) -> list[list[float]]:
        """ColBERT vectors of one query (with the query instruction, if any)."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes one str, got {type(text).__name__}")
        return list(self.vectors([text], "query")[0].tolist())

    async def aembed_documents(self, texts: list[str]) -> list[list[list[float]]]:
        """Like :meth:`embed_documents`, without blocking the event loop."""
        return await run_async(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[list[float]]:
        """Like :meth:`embed_query`, without blocking the event loop."""
        return await run_async(self.embed_query, text)


class FlagQdrantM3Store(QdrantVectorStore):
    """``langchain_qdrant.QdrantVectorStore`` over BGE-M3's three outputs: every point holds a dense vector
    (``vector_name``, default "dense"), lexical weights (``sparse_vector_name``, "sparse") and ColBERT vectors
    (``colbert_vector_name``, "colbert": a MaxSim multivector, dot product, so a score is exactly FlagEmbedding's
    MaxSim times the query's tokens). A collection that does not exist is created at the first write, with the
    sizes of its vectors. Searches (``similarity_search*``, retrievers) rank in Qdrant as
    ``HybridIndex.search(mode=search_mode, candidates=candidates, weights=weights)`` does
    (:func:`~flag_core.frameworks.qdrant_m3_query`);
    ``search_mode="rrf"`` keeps langchain-qdrant's own hybrid search.

    ``sparse_embedding`` and ``colbert_embedding`` default to those of the dense ``FlagM3Embeddings``' model
    (each text encoded once for all three). Dense vectors are compared by dot product by default (flagstack's
    dense score; equal to cosine for normalized vectors).

    Example:
        .. code-block:: python

            from qdrant_client import QdrantClient
            from langchain_flag import FlagM3Embeddings
            from langchain_flag.qdrant import FlagQdrantM3Store

            store = FlagQdrantM3Store(QdrantClient(":memory:"), "docs",
                                      FlagM3Embeddings(model_name="BAAI/bge-m3"))
            store.add_texts(texts)
            docs = store.similarity_search("what do pandas eat?", k=5)   # dense+sparse prefetch, MaxSim
    """

    def __init__(
        self,
        client: QdrantClient,
        collection_name: str,
        embedding: Embeddings,
        sparse_embedding: SparseEmbeddings | None = None,
        colbert_embedding: FlagColbertEmbeddings | None = None,
        *,
        search_mode: SearchMode = "colbert",
        candidates: int = DEFAULT_CANDIDATES,
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        vector_name: str = "dense",
        sparse_vector_name: str = "sparse",
        colbert_vector_name: str = "colbert",
        distance: models.Distance = models.Distance.DOT,
        **kwargs: Any,
    ) -> None:
        if sparse_embedding is None or colbert_embedding is None:
            if not isinstance(embedding, FlagM3Embeddings):
                raise TypeError("give sparse_embedding and colbert_embedding, or a FlagM3Embeddings as embedding "
                                "to take them from")
            sparse_embedding = sparse_embedding or embedding.sparse()  # type: ignore[assignment]
            colbert_embedding = colbert_embedding or FlagColbertEmbeddings.like(embedding)
        if search_mode not in SEARCH_MODES:
            raise ValueError(f"search_mode must be one of {list(SEARCH_MODES)}, got {search_mode!r}")
        mode = kwargs.pop("retrieval_mode", RetrievalMode.HYBRID)  # from_existing_collection passes one
        if mode != RetrievalMode.HYBRID:
            raise ValueError(f"FlagQdrantM3Store keeps dense, sparse and ColBERT vectors (retrieval_mode HYBRID), got "
                             f"retrieval_mode={mode!r}; rank by one of them with search_mode")
        if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
            raise ValueError(f"candidates must be a positive int, got {candidates!r}")
        exists = client.collection_exists(collection_name)
        if exists and kwargs.get("validate_collection_config", True):
            self._check_colbert(client, collection_name, colbert_vector_name)
        else:
            kwargs["validate_collection_config"] = False
        super().__init__(client, collection_name, embedding, retrieval_mode=RetrievalMode.HYBRID,
                         vector_name=vector_name, distance=distance, sparse_embedding=sparse_embedding,
                         sparse_vector_name=sparse_vector_name, **kwargs)
        self.colbert_embedding = colbert_embedding
        self.colbert_vector_name = colbert_vector_name
        self.search_mode: SearchMode = search_mode
        self.candidates = candidates
        self.weights = check_weights(weights)
        self._collection_ready = exists

    @classmethod
    def from_texts(  # type: ignore[override]
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict] | None = None,
        ids: Sequence[str | int] | None = None,
        collection_name: str | None = None,
        *,
        sparse_embedding: SparseEmbeddings | None = None,
        colbert_embedding: FlagColbertEmbeddings | None = None,
        client: QdrantClient | None = None,
        force_recreate: bool = False,
        batch_size: int = 64,
        store_options: dict[str, Any] | None = None,
        **client_options: Any,
    ) -> FlagQdrantM3Store:
        """A store over ``texts`` in ``client`` (or ``QdrantClient(**client_options)``: ``location=":memory:"``,
        ``path=``, ``url=``), in ``collection_name`` (a new random name if None; emptied first with
        ``force_recreate``); ``store_options`` go to the constructor (``search_mode``, ``candidates``, ...)."""
        import uuid

        if embedding is None:
            raise ValueError("embedding (a FlagM3Embeddings, or any dense Embeddings) is required")
        client = client or QdrantClient(**client_options)
        collection_name = collection_name or uuid.uuid4().hex
        if force_recreate and client.collection_exists(collection_name):
            client.delete_collection(collection_name)
        store = cls(client, collection_name, embedding, sparse_embedding, colbert_embedding, **(store_options or {}))
        store.add_texts(texts, metadatas, ids, batch_size)
        return store

    @staticmethod
    def _check_colbert(client: QdrantClient, collection_name: str, name: str) -> None:
        vectors = client.get_collection(collection_name).config.params.vectors
        params = vectors.get(name) if isinstance(vectors, dict) else None
        if params is None or params.multivector_config is None:
            raise ValueError(f"Qdrant collection {collection_name} has no multivector named {name!r}: create it "
                             "with this store, or name its ColBERT vector with colbert_vector_name")

    def _create_collection(self, dense_size: int, colbert_size: int) -> None:
        self.client.create_collection(
            self.collection_name,
            vectors_config={
                self.vector_name: models.VectorParams(size=dense_size, distance=self.distance),
                self.colbert_vector_name: models.VectorParams(
                    size=colbert_size, distance=models.Distance.DOT,
                    multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)),
            },
            sparse_vectors_config={self.sparse_vector_name: models.SparseVectorParams()},
        )
        self._collection_ready = True

    def _build_vectors(self, texts: Iterable[str]) -> list[models.VectorStruct]:
        """Dense and sparse vectors (langchain-qdrant's), and each text's ColBERT vectors; the collection is
        created first if it does not exist yet."""
        texts = list(texts)
        vectors = super()._build_vectors(texts)
        colbert = self.colbert_embedding.vectors(texts)
        if not self._collection_ready and vectors:
            dense: Any = vectors[0]
            self._create_collection(len(dense[self.vector_name]), int(colbert[0].shape[1]))
        return [{**vector, self.colbert_vector_name: rows.tolist()}  # type: ignore[dict-item]
                for vector, rows in zip(vectors, colbert, strict=True)]

    def query_arguments(self, query: str, k: int, query_filter: models.Filter | None = None) -> dict[str, Any]:
        """The prefetch, query and using of ``query_points`` for ``query`` in this store's ``search_mode``
        (:func:`flag_core.frameworks.qdrant_m3_query`)."""
        dense = self._require_embeddings("search").embed_query(query)
        lexical = self.sparse_embeddings.embed_query(query)
        colbert = self.colbert_embedding.embed_query(query)
        sparse = models.SparseVector(indices=lexical.indices, values=lexical.values)
        return qdrant_m3_query((self.vector_name, self.sparse_vector_name, self.colbert_vector_name), dense, sparse,
                               colbert, k, self.search_mode, self.candidates, self.weights, query_filter)

    @classmethod
    def from_existing_collection(  # type: ignore[override]
        cls, collection_name: str, embedding: Embeddings | None = None,
        retrieval_mode: RetrievalMode = RetrievalMode.HYBRID, **kwargs: Any,
    ) -> FlagQdrantM3Store:
        """langchain-qdrant's ``from_existing_collection`` (``location``, ``path``, ``url``, ...) with this store's
        defaults (HYBRID, vectors "dense" and "sparse", dot product): the collection must have its three vectors."""
        kwargs = {"vector_name": "dense", "sparse_vector_name": "sparse", "distance": models.Distance.DOT, **kwargs}
        return super().from_existing_collection(  # type: ignore[return-value]
            collection_name=collection_name, embedding=embedding, retrieval_mode=retrieval_mode, **kwargs)

    def _select_relevance_score_fn(self) -> Any:
        """LangChain's relevance scores (0 worst, 1 best) are not defined for this store's rankings: Qdrant's
        scores here are MaxSim sums over query tokens or weighted sums of unbounded scores, and LangChain's
        inner-product mapping would turn the best hit into the worst. Refused, never inverted."""
        if self.search_mode == "rrf":
            return super()._select_relevance_score_fn()
        raise NotImplementedError(f"relevance scores in [0, 1] are not defined for search_mode={self.search_mode!r}: "
                                  "use similarity_search_with_score (Qdrant's scores, higher is better) and a "
                                  "threshold of your own on them")

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: models.Filter | None = None,
        search_params: models.SearchParams | None = None,
        offset: int = 0,
        score_threshold: float | None = None,
        consistency: models.ReadConsistency | None = None,
        hybrid_fusion: models.FusionQuery | None = None,
        **kwargs: Any,
    ) -> list[tuple[Any, float]]:
        """The ``k`` best documents for ``query`` with Qdrant's scores, ranked server-side by ``search_mode``
        (MaxSim scores are sums over query tokens, not means)."""
        if self.search_mode == "rrf" or hybrid_fusion is not None:
            return super().similarity_search_with_score(
                query, k, filter, search_params, offset, score_threshold, consistency, hybrid_fusion, **kwargs)
        points = self.client.query_points(
            self.collection_name, **self.query_arguments(query, k + offset, filter), query_filter=filter,
            search_params=search_params, limit=k, offset=offset, with_payload=True, with_vectors=False,
            score_threshold=score_threshold, consistency=consistency, **kwargs,
        ).points
        return [(self._document_from_point(point, self.collection_name, self.content_payload_key,
                                           self.metadata_payload_key), point.score) for point in points]
