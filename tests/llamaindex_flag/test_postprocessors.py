"""llamaindex_flag.FlagReranker: order by score, events, callbacks, no mutation, query engine, errors."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from flag_core import FlagReranker as CoreReranker
from llamaindex_flag import FlagEmbedding, FlagReranker

CORPUS = [
    "The giant panda is a bear species endemic to China.",
    "Pandas eat bamboo almost exclusively.",
    "Paris is the capital of France.",
    "json.loads parses JSON text into Python objects.",
    "Red pandas are not closely related to giant pandas.",
]


class Recorder(BaseEventHandler):
    events: list[Any] = Field(default_factory=list)

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def recorder() -> Any:
    handler = Recorder(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


def _nodes() -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=t, metadata={"n": i}), score=1.0 - i / 10) for i, t in enumerate(CORPUS)]


def test_reorders_by_score_without_mutating(reranker_path: str, recorder: Any) -> None:
    reranker = FlagReranker(model=reranker_path, top_n=3, devices="cpu", keep_retrieval_score=True)
    nodes = _nodes()
    before = copy.deepcopy(nodes)
    out = reranker.postprocess_nodes(nodes, query_str="what do pandas eat?")
    # the reranker reads what an embedding model would: the text with its embed-visible metadata
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    assert texts[0].startswith("n: 0")
    scores = CoreReranker(reranker_path, devices="cpu").compute_score([("what do pandas eat?", t) for t in texts])
    expected = sorted(range(len(CORPUS)), key=lambda i: -scores[i])[:3]
    assert [n.node.metadata["n"] for n in out] == expected
    assert [n.score for n in out] == pytest.approx([scores[i] for i in expected], abs=1e-6)
    assert [n.node.metadata["retrieval_score"] for n in out] == [nodes[i].score for i in expected]
    assert [(n.score, n.node.metadata) for n in nodes] == [(n.score, n.node.metadata) for n in before]
    names = [type(e).__name__ for e in recorder.events]
    assert "ReRankStartEvent" in names and "ReRankEndEvent" in names
    end = next(e for e in recorder.events if type(e).__name__ == "ReRankEndEvent")
    assert [n.node.metadata["n"] for n in end.nodes] == expected


def test_callback_event_and_errors(reranker_path: str) -> None:
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler

    debug = LlamaDebugHandler()
    reranker = FlagReranker(model=reranker_path, devices="cpu", callback_manager=CallbackManager([debug]))
    reranker.postprocess_nodes(_nodes(), query_bundle=QueryBundle("pandas"))
    assert debug.get_event_pairs(CBEventType.RERANKING)
    with pytest.raises(ValueError, match=re.escape("Missing query bundle in extra info.")):
        reranker.postprocess_nodes(_nodes())
    with pytest.raises(TypeError, match=r"nodes\[0\]"):
        reranker.postprocess_nodes([TextNode(text="x")], query_str="q")  # type: ignore[list-item]
    assert reranker.postprocess_nodes([], query_str="q") == []


def test_flagembeddingreranker_arguments(reranker_path: str) -> None:
    reranker = FlagReranker(top_n=4, model=reranker_path, use_fp16=True)
    assert reranker.top_n == 4 and reranker.client.use_fp16
    assert FlagReranker(model=reranker_path).top_n == 2


def test_query_engine_with_mock_llm(model_path: str, reranker_path: str, recorder: Any) -> None:
    from llama_index.core.llms import MockLLM

    index = VectorStoreIndex.from_documents(
        [Document(text=t) for t in CORPUS], embed_model=FlagEmbedding(model_name=model_path, devices="cpu")
    )
    reranker = FlagReranker(model=reranker_path, top_n=2, devices="cpu")
    engine = index.as_query_engine(llm=MockLLM(max_tokens=8), similarity_top_k=4, node_postprocessors=[reranker])
    response = engine.query("giant panda bears")
    start = next(e for e in recorder.events if type(e).__name__ == "ReRankStartEvent")
    candidates = [n.node.get_content() for n in start.nodes]
    scores = CoreReranker(reranker_path, devices="cpu").compute_score([("giant panda bears", t) for t in candidates])
    expected = [candidates[i] for i in sorted(range(len(candidates)), key=lambda i: -scores[i])[:2]]
    assert len(candidates) == 4
    assert [n.node.get_content() for n in response.source_nodes] == expected


async def test_async_query_engine(model_path: str, reranker_path: str) -> None:
    from llama_index.core.llms import MockLLM

    index = VectorStoreIndex.from_documents(
        [Document(text=t) for t in CORPUS], embed_model=FlagEmbedding(model_name=model_path, devices="cpu")
    )
    reranker = FlagReranker(model=reranker_path, top_n=2, devices="cpu")
    engine = index.as_query_engine(llm=MockLLM(max_tokens=8), similarity_top_k=4, node_postprocessors=[reranker])
    response = await engine.aquery("giant panda bears")
    assert len(response.source_nodes) == 2
    nodes = _nodes()
    assert await reranker.apostprocess_nodes(nodes, query_str="q") == reranker.postprocess_nodes(nodes, query_str="q")
