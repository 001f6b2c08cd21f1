"""FlagRetriever: dense top-k over LlamaIndex nodes (a view of :class:`~llamaindex_flag.FlagVectorStore`, which holds
flag_core's exact index), then an optional rerank."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import VectorStoreQuery

from flag_core.frameworks import check_positive_int, run_async

from ._nodes import DENSE_PAYLOADS, checked_nodes
from .postprocessors import FlagReranker
from .vector_stores import FlagVectorStore

PAYLOADS = DENSE_PAYLOADS  # FlagVectorStore's: the two share files


class FlagRetriever(BaseRetriever):
    """The ``similarity_top_k`` nodes nearest to the query by inner product, then (with a ``reranker``) its
    ``top_n`` best. It embeds nodes and queries with ``embed_model`` and searches through a
    :class:`~llamaindex_flag.FlagVectorStore` (``vector_store``: flag_core's DenseIndex, as ``langchain_flag``'s
    retriever), so its files are the store's. A node added again (same id) replaces the one stored.

    Example:
        .. code-block:: python

            from llamaindex_flag import FlagEmbedding, FlagReranker, FlagRetriever

            retriever = FlagRetriever(
                nodes=nodes, embed_model=FlagEmbedding(model_name="BAAI/bge-base-en-v1.5"), similarity_top_k=20,
                reranker=FlagReranker(model="BAAI/bge-reranker-v2-m3", top_n=4),
            )
            results = retriever.retrieve("what do pandas eat?")
    """

    def __init__(
        self,
        nodes: Sequence[BaseNode] | None = None,
        embed_model: BaseEmbedding | None = None,
        similarity_top_k: int = 2,
        reranker: FlagReranker | None = None,
        use_faiss: bool = False,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if embed_model is None:
            raise ValueError("embed_model is required, e.g. FlagEmbedding(model_name=...)")
        self.embed_model = embed_model
        self.similarity_top_k = check_positive_int(similarity_top_k, "similarity_top_k", allow_none=False)
        self.reranker = reranker
        self.use_faiss = use_faiss
        self._store = FlagVectorStore(embed_model=embed_model, use_faiss=use_faiss)
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        if nodes:
            self.add_nodes(nodes)

    @property
    def vector_store(self) -> FlagVectorStore:
        """The store this retriever searches (its nodes; ``VectorStoreIndex.from_vector_store`` takes it)."""
        return self._store

    def __len__(self) -> int:
        return len(self._store)

    def add_nodes(self, nodes: Sequence[BaseNode]) -> None:
        """Embed (with ``MetadataMode.EMBED``) and index more nodes; a node whose id is stored replaces it."""
        nodes = checked_nodes(nodes)
        texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
        if texts:
            self._store.add(nodes, embeddings=self.embed_model.get_text_embedding_batch(texts))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write vectors, nodes and embedding settings to one file, atomically."""
        self._store.persist(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], embed_model: BaseEmbedding, **kwargs: Any) -> FlagRetriever:
        """Read a file written by :meth:`save` or ``FlagVectorStore.persist`` (same embedding settings, or
        :class:`flag_core.IndexFileError`)."""
        retriever = cls(embed_model=embed_model, **kwargs)
        retriever._store = FlagVectorStore.from_persist_path(path, embed_model=embed_model,
                                                             use_faiss=retriever.use_faiss)
        return retriever

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        vector = self.embed_model.get_query_embedding(query_bundle.query_str)
        found = self._store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=self.similarity_top_k))
        # the store's nodes are new objects, rebuilt from its copy: results are the caller's to edit
        results = [NodeWithScore(node=node, score=score)
                   for node, score in zip(found.nodes or [], found.similarities or [], strict=True)]
        if self.reranker is not None:
            return self.reranker.postprocess_nodes(results, query_bundle)
        return results

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await run_async(self._retrieve, query_bundle)
