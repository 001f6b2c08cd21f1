"""llamaindex_flag.FlagRetriever: dense top-k over nodes, optional rerank, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from flag_core import IndexFileError
from llamaindex_flag import FlagEmbedding, FlagReranker, FlagRetriever

TEXTS = ["The giant panda is a bear.", "Pandas eat bamboo.", "Paris is in France.", "json.loads parses JSON."]


@pytest.fixture(scope="module")
def embed_model(model_path: str) -> FlagEmbedding:
    return FlagEmbedding(model_name=model_path, devices="cpu")


def _nodes() -> list[TextNode]:
    return [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]


def test_dense_top_k(embed_model: FlagEmbedding) -> None:
    retriever = FlagRetriever(nodes=_nodes(), embed_model=embed_model, similarity_top_k=3)
    results = retriever.retrieve("what do pandas eat?")
    assert len(results) == 3 and all(isinstance(r, NodeWithScore) for r in results)
    query = np.array(embed_model.get_query_embedding("what do pandas eat?"))
    scores = np.array(embed_model.get_text_embedding_batch(TEXTS)) @ query
    assert [r.node.node_id for r in results] == [f"n{i}" for i in np.argsort(-scores, kind="stable")[:3]]


def test_with_reranker_and_async(embed_model: FlagEmbedding, reranker_path: str) -> None:
    reranker = FlagReranker(model=reranker_path, top_n=2, devices="cpu")
    retriever = FlagRetriever(nodes=_nodes(), embed_model=embed_model, similarity_top_k=4, reranker=reranker)
    results = retriever.retrieve("pandas")
    assert len(results) == 2 and results[0].score >= results[1].score  # type: ignore[operator]
    import asyncio

    again = asyncio.run(retriever.aretrieve("pandas"))
    assert [r.node.node_id for r in again] == [r.node.node_id for r in results]


def test_save_load_and_errors(embed_model: FlagEmbedding, model_path: str, tmp_path: Path) -> None:
    retriever = FlagRetriever(nodes=_nodes(), embed_model=embed_model, similarity_top_k=2)
    retriever.save(tmp_path / "nodes.flag")
    loaded = FlagRetriever.load(tmp_path / "nodes.flag", embed_model, similarity_top_k=2)
    assert [r.node.node_id for r in loaded.retrieve("France")] == [r.node.node_id for r in retriever.retrieve("France")]
    assert loaded.retrieve("France")[0].node.get_content() == "Paris is in France."
    other = FlagEmbedding(model_name=model_path, devices="cpu", pooling_method="cls")
    with pytest.raises(IndexFileError, match="pooling_method"):
        FlagRetriever.load(tmp_path / "nodes.flag", other)
    with pytest.raises(ValueError, match="embed_model"):
        FlagRetriever(nodes=_nodes())
    with pytest.raises(TypeError, match=r"nodes\[0\]"):
        FlagRetriever(nodes=["text"], embed_model=embed_model)  # type: ignore[list-item]


def test_results_are_copies(embed_model: FlagEmbedding, reranker_path: str) -> None:
    nodes = [TextNode(text=t, id_=f"n{i}", metadata={"tags": ["original"]}) for i, t in enumerate(TEXTS)]
    retriever = FlagRetriever(nodes=nodes, embed_model=embed_model, similarity_top_k=1)
    nodes[2].metadata["tags"].append("edited by the caller after indexing")
    first = retriever.retrieve("France")
    assert first[0].node.node_id == "n2" and first[0].node.metadata["tags"] == ["original"]
    first[0].node.metadata["tags"].append("edited result")
    assert retriever.retrieve("France")[0].node.metadata["tags"] == ["original"]
    reranker = FlagReranker(model=reranker_path, top_n=1, devices="cpu")
    given = [NodeWithScore(node=TextNode(text=TEXTS[0], metadata={"tags": ["mine"]}), score=0.5)]
    out = reranker.postprocess_nodes(given, query_str="panda")
    out[0].node.metadata["tags"].append("edited result")
    assert given[0].node.metadata == {"tags": ["mine"]}
