"""FlagRetriever: dense top-k over LlamaIndex nodes (flag_core's exact index), then an optional rerank."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.storage.docstore.utils import doc_to_json, json_to_doc

from flag_core.frameworks import check_positive_int, run_async
from flag_core.retrieval import DenseIndex, PayloadFormat, embedding_settings

from .postprocessors import FlagReranker

PAYLOADS = PayloadFormat("llamaindex_flag.FlagRetriever", keys=("node",))


class FlagRetriever(BaseRetriever):
    """The ``similarity_top_k`` nodes nearest to the query by inner product, then (with a ``reranker``) its
    ``top_n`` best. Uses the same index as ``langchain_flag.FlagRetriever`` (flag_core's DenseIndex).

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
        self._dense = self._new_index()
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        if nodes:
            self.add_nodes(nodes)

    def _new_index(self) -> DenseIndex:
        return DenseIndex(
            self.embed_model.get_text_embedding_batch,
            self.embed_model.get_query_embedding,
            embedding_settings(self.embed_model),
            self.use_faiss,
            PAYLOADS,
        )

    def __len__(self) -> int:
        return len(self._dense)

    def add_nodes(self, nodes: Sequence[BaseNode]) -> None:
        """Embed (with ``MetadataMode.EMBED``) and index more nodes."""
        nodes = list(nodes)
        for i, node in enumerate(nodes):
            if not isinstance(node, BaseNode):
                raise TypeError(f"nodes[{i}] is {type(node).__name__}, expected a LlamaIndex node")
        texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
        self._dense.add(texts, [{"node": doc_to_json(node)} for node in nodes])  # the index keeps its own copy

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write vectors, nodes and embedding settings to one file, atomically."""
        self._dense.save(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], embed_model: BaseEmbedding, **kwargs: Any) -> FlagRetriever:
        """Read a file written by :meth:`save` (same embedding settings, or :class:`flag_core.IndexFileError`)."""
        retriever = cls(embed_model=embed_model, **kwargs)
        fresh = retriever._new_index()
        retriever._dense = DenseIndex.load(path, fresh.embed_documents, fresh.embed_query, fresh.settings,
                                           retriever.use_faiss, PAYLOADS)
        return retriever

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self._dense.search(query_bundle.query_str, self.similarity_top_k)
        # each hit's node is rebuilt from the index's copy: results are the caller's to edit
        results = [NodeWithScore(node=json_to_doc(hit.payload["node"]), score=hit.score) for hit in hits]
        if self.reranker is not None:
            return self.reranker.postprocess_nodes(results, query_bundle)
        return results

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await run_async(self._retrieve, query_bundle)
