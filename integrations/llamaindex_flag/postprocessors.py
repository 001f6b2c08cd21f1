"""FlagReranker: a LlamaIndex node postprocessor that reranks with flag_core's rerankers."""

from __future__ import annotations

from typing import Any, ClassVar

import llama_index.core.instrumentation as instrument
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, model_validator
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from flag_core import FlagReranker as CoreReranker
from flag_core import build_reranker
from flag_core.frameworks import ModelName, RebuildsModel, as_model_name, run_async
from flag_core.merge import FromMerge
from flag_core.settings import RerankerFields

dispatcher = instrument.get_dispatcher(__name__)


class FlagReranker(RebuildsModel, FromMerge, BaseNodePostprocessor, RerankerFields):
    """Reorders retrieved nodes by a BGE reranker's score of (query, node text) and keeps ``top_n``.

    Takes the constructor arguments of LlamaIndex's ``FlagEmbeddingReranker`` (``model``, ``top_n``,
    ``use_fp16``; ``model_name`` works as ``model``) plus flag_core's reranker settings
    (:class:`flag_core.settings.RerankerFields`); unknown keywords are an error. Node text is read with
    ``MetadataMode.EMBED``; the caller's nodes are never modified (the results are copies);
    ReRankStartEvent/ReRankEndEvent and the RERANKING callback event are emitted.

    Example:
        .. code-block:: python

            from llamaindex_flag import FlagReranker

            engine = index.as_query_engine(
                similarity_top_k=20, node_postprocessors=[FlagReranker(model="BAAI/bge-reranker-v2-m3", top_n=4)]
            )
    """

    model: ModelName = Field(default="BAAI/bge-reranker-large",
                             description="hub id or local folder of the reranker (str or os.PathLike)")
    top_n: int = Field(default=2, gt=0, description="nodes kept after reranking")
    keep_retrieval_score: bool = Field(default=False, description='copy the old score to metadata["retrieval_score"]')
    device: str | None = Field(default=None, description="one device (compatibility name; see devices)")

    merge_type: ClassVar[str] = "reranker"
    model_field: ClassVar[str] = "model"

    model_config = ConfigDict(extra="forbid")

    _model: CoreReranker = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _model_name(cls, values: Any) -> Any:
        """``model_name`` (the name most rerankers use) is the same as ``model``."""
        if isinstance(values, dict) and "model_name" in values:
            values = dict(values)
            name = as_model_name(values.pop("model_name"))
            if as_model_name(values.setdefault("model", name)) != name:
                raise ValueError(f"model_name={name!r} and model={values['model']!r}: give one")
        return values

    def model_post_init(self, context: Any, /) -> None:
        settings = self.model_settings()
        if self.device is not None and self.devices is None:  # LlamaIndex's name for it
            settings = type(settings)(**{**dict(settings), "devices": self.device})  # checked
        self._model = build_reranker(self.model, settings)

    @classmethod
    def class_name(cls) -> str:
        return "FlagReranker"

    @property
    def client(self) -> CoreReranker:
        """The flag_core reranker doing the work."""
        return self._model

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("Missing query bundle in extra info.")
        for i, item in enumerate(nodes):
            if not isinstance(item, NodeWithScore):
                raise TypeError(f"nodes[{i}] is {type(item).__name__}, expected NodeWithScore")
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=self.model))
        if not nodes:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            return []
        texts = [item.node.get_content(metadata_mode=MetadataMode.EMBED) for item in nodes]
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            ranked = self._model.rerank(query_bundle.query_str, texts, top_n=self.top_n, normalize=self.normalize)
            reranked = []
            for index, score in ranked:  # scores are tied to nodes by index, never by sorted position
                node = nodes[index].node.model_copy(deep=True)  # the caller's nodes stay theirs
                if self.keep_retrieval_score:
                    node.metadata["retrieval_score"] = nodes[index].score
                reranked.append(NodeWithScore(node=node, score=score))
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    async def apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None, query_str: str | None = None
    ) -> list[NodeWithScore]:
        """Like ``postprocess_nodes``, in a worker thread so the event loop keeps running."""
        return await run_async(self.postprocess_nodes, nodes, query_bundle, query_str)
