"""FlagRetriever: dense top-k, rerank, k as field and argument, vector stores, save/load."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore

from flag_core import IndexFileError
from langchain_flag import FlagEmbeddings, FlagReranker, FlagRetriever

TEXTS = [
    "The giant panda is a bear species endemic to China.",
    "Pandas eat bamboo almost exclusively.",
    "Paris is the capital of France.",
    "json.loads parses JSON text into Python objects.",
    "Red pandas are not closely related to giant pandas.",
    "The Eiffel Tower is in Paris.",
    "subprocess.run runs a command and captures its output.",
]


@pytest.fixture(scope="module")
def embeddings(model_path: str) -> FlagEmbeddings:
    return FlagEmbeddings(model_name=model_path, devices="cpu")


@pytest.fixture(scope="module")
def retriever(embeddings: FlagEmbeddings) -> FlagRetriever:
    return FlagRetriever.from_texts(TEXTS, embeddings, metadatas=[{"n": i} for i in range(len(TEXTS))], k=3)


def test_dense_top_k_is_exact(retriever: FlagRetriever, embeddings: FlagEmbeddings) -> None:
    docs = retriever.invoke("what do pandas eat?")
    query = np.array(embeddings.embed_query("what do pandas eat?"))
    scores = np.array(embeddings.embed_documents(TEXTS)) @ query
    assert [d.metadata["n"] for d in docs] == list(np.argsort(-scores, kind="stable")[:3])
    assert [d.metadata["retrieval_score"] for d in docs] == pytest.approx(sorted(scores)[::-1][:3], abs=1e-5)
    assert len(retriever.invoke("pandas", k=5)) == 5
    assert len(retriever.invoke("pandas", k=100)) == len(TEXTS)


def test_faiss_search_gives_the_same_hits(retriever: FlagRetriever, embeddings: FlagEmbeddings) -> None:
    pytest.importorskip("faiss", reason="needs the faiss extra")
    with_faiss = FlagRetriever.from_texts(TEXTS, embeddings, metadatas=[{"n": i} for i in range(len(TEXTS))], k=4,
                                          use_faiss=True)
    for query in ("what do pandas eat?", "run a command", "capital of France"):
        expected, got = retriever.invoke(query, k=4), with_faiss.invoke(query)
        assert [d.metadata["n"] for d in got] == [d.metadata["n"] for d in expected]
        assert [d.metadata["retrieval_score"] for d in got] == pytest.approx(
            [d.metadata["retrieval_score"] for d in expected], abs=1e-5)


def test_rerank_stage(embeddings: FlagEmbeddings, reranker_path: str) -> None:
    reranker = FlagReranker(model_name=reranker_path, devices="cpu")
    retriever = FlagRetriever.from_texts(TEXTS, embeddings, k=5, reranker=reranker, top_n=2)
    docs = retriever.invoke("capital of France")
    assert len(docs) == 2
    assert docs[0].metadata["relevance_score"] >= docs[1].metadata["relevance_score"]
    assert "retrieval_score" in docs[0].metadata
    dense = FlagRetriever.from_texts(TEXTS, embeddings, k=5).invoke("capital of France")
    expected = reranker.rerank_documents(dense, "capital of France", top_n=2)
    assert [d.page_content for d in docs] == [d.page_content for d in expected]
    assert len(retriever.invoke("capital of France", top_n=4)) == 4


def test_over_an_existing_vectorstore(embeddings: FlagEmbeddings) -> None:
    store = InMemoryVectorStore(embedding=embeddings)
    store.add_texts(TEXTS)
    retriever = FlagRetriever(embeddings=embeddings, vectorstore=store, k=2)
    docs = retriever.invoke("Eiffel Tower")
    assert len(docs) == 2 and docs[0].page_content == "The Eiffel Tower is in Paris."
    with pytest.raises(ValueError, match="vectorstore"):
        retriever.add_documents([Document(page_content="x")])


def test_bad_input(embeddings: FlagEmbeddings, retriever: FlagRetriever) -> None:
    with pytest.raises(ValueError, match="metadatas"):
        FlagRetriever.from_texts(TEXTS, embeddings, metadatas=[{}])
    with pytest.raises(ValueError, match="k must be"):
        retriever.invoke("pandas", k=0)
    with pytest.raises(TypeError, match=r"documents\[0\]"):
        retriever.add_documents(["text"])  # type: ignore[list-item]
    empty = FlagRetriever(embeddings=embeddings)
    assert empty.invoke("anything") == []


def test_save_load_round_trip(retriever: FlagRetriever, embeddings: FlagEmbeddings, tmp_path: Path) -> None:
    path = tmp_path / "index.flag"
    retriever.save(path)
    loaded = FlagRetriever.load(path, embeddings, k=3)
    np.testing.assert_array_equal(loaded.store.index.index.vectors, retriever.store.index.index.vectors)
    for query in ("pandas", "France", "json"):
        assert loaded.invoke(query) == retriever.invoke(query)
    assert [p.name for p in tmp_path.iterdir()] == ["index.flag"]  # no temporary file left behind


def test_load_rejects_truncated_corrupted_and_mismatched(
    retriever: FlagRetriever, embeddings: FlagEmbeddings, model_path: str, tmp_path: Path
) -> None:
    path = tmp_path / "index.flag"
    retriever.save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.flag"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError, match=r"truncated\.flag"):
        FlagRetriever.load(truncated, embeddings)
    corrupted = tmp_path / "corrupted.flag"
    flipped = bytearray(data)
    position = data.index(b"giant panda")
    flipped[position] = ord("G")
    corrupted.write_bytes(bytes(flipped))
    with pytest.raises(IndexFileError, match=r"corrupted\.flag"):
        FlagRetriever.load(corrupted, embeddings)
    other = FlagEmbeddings(model_name=model_path, devices="cpu", pooling_method="cls")
    with pytest.raises(IndexFileError, match="pooling_method"):
        FlagRetriever.load(path, other)
    with pytest.raises(IndexFileError, match="no index file"):
        FlagRetriever.load(tmp_path / "missing.flag", embeddings)


def test_metadata_that_is_not_json_is_refused_when_added(embeddings: FlagEmbeddings, tmp_path: Path) -> None:
    retriever = FlagRetriever.from_texts(["a"], embeddings)
    with pytest.raises(TypeError, match="payload 0"):  # at add (it could never be saved), not at save
        retriever.add_documents([Document(page_content="b", metadata={"when": object()})])
    assert len(retriever) == 1
    retriever.save(tmp_path / "x.flag")  # what was added can still be saved
    assert len(FlagRetriever.load(tmp_path / "x.flag", embeddings)) == 1


async def test_ainvoke_does_not_block_the_loop(embeddings: FlagEmbeddings, reranker_path: str,
                                               ticks_while: Any) -> None:
    reranker = FlagReranker(model_name=reranker_path, devices="cpu")
    retriever = FlagRetriever.from_texts(TEXTS * 10, embeddings, k=50, reranker=reranker, top_n=3)
    queries = ("pandas", "Paris", "json")
    results, ticks, elapsed = await ticks_while(asyncio.gather(*(retriever.ainvoke(q) for q in queries)))
    assert [len(r) for r in results] == [3, 3, 3]
    assert ticks >= 3 and ticks >= elapsed / 0.005 * 0.2, (ticks, elapsed)
    alone = retriever.invoke("pandas")
    # gathered calls share model runs (other batch mates): the same documents, the same scores to fp32 precision
    assert [d.page_content for d in results[0]] == [d.page_content for d in alone]
    for got, want in zip(results[0], alone, strict=True):
        assert got.metadata.keys() == want.metadata.keys()
        assert all(abs(got.metadata[key] - want.metadata[key]) <= 1e-6 for key in want.metadata)


def test_results_share_nothing_with_the_index_or_the_caller(embeddings: FlagEmbeddings, reranker_path: str) -> None:
    metadata = {"tags": ["bear"], "source": {"page": 1}}
    retriever = FlagRetriever.from_texts(TEXTS[:3], embeddings, metadatas=[metadata, {}, {}], k=1)
    metadata["tags"].append("added by the caller after indexing")
    first = retriever.invoke("giant panda")
    assert first[0].metadata["tags"] == ["bear"]
    first[0].metadata["tags"].append("edited result")
    first[0].metadata["source"]["page"] = 99
    again = retriever.invoke("giant panda")
    assert again[0].metadata["tags"] == ["bear"] and again[0].metadata["source"] == {"page": 1}
    reranker = FlagReranker(model_name=reranker_path, devices="cpu", top_n=1)
    docs = [Document(page_content=TEXTS[0], metadata={"tags": ["mine"]})]
    ranked = reranker.compress_documents(docs, "panda")
    ranked[0].metadata["tags"].append("edited result")
    assert docs[0].metadata == {"tags": ["mine"]}


def test_an_index_of_the_other_framework_is_named(embeddings: FlagEmbeddings, model_path: str, tmp_path: Path) -> None:
    from llama_index.core.schema import TextNode

    from llamaindex_flag import FlagEmbedding as LlamaEmbedding
    from llamaindex_flag import FlagRetriever as LlamaRetriever

    llama_embeddings = LlamaEmbedding(model_name=model_path, devices="cpu")
    LlamaRetriever(nodes=[TextNode(text=t) for t in TEXTS], embed_model=llama_embeddings).save(tmp_path / "l.flag")
    with pytest.raises(IndexFileError, match=r"written by llamaindex_flag\.FlagRetriever; load it with"):
        FlagRetriever.load(tmp_path / "l.flag", embeddings)
    FlagRetriever.from_texts(TEXTS, embeddings).save(tmp_path / "c.flag")
    with pytest.raises(IndexFileError, match=r"written by langchain_flag\.FlagRetriever"):
        LlamaRetriever.load(tmp_path / "c.flag", llama_embeddings)


@pytest.mark.slow  # a fresh Python process
def test_indexing_and_querying_print_at_most_one_truncation_line(model_path: str) -> None:
    import subprocess
    import sys

    script = f"""
from langchain_core.documents import Document
from langchain_flag import FlagEmbeddings, FlagRetriever

embeddings = FlagEmbeddings(model_name={model_path!r}, devices="cpu", passage_max_length=32, query_max_length=32)
retriever = FlagRetriever(embeddings=embeddings, k=3)
for part in range(4):  # 40 documents, added in four calls, every one longer than 32 tokens
    retriever.add_documents([Document(page_content=f"document {{part}}-{{i}} " + "about pandas " * 30)
                             for i in range(10)])
for q in range(5):
    retriever.invoke("a long question about pandas and bamboo forests and what they eat " * 3)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "truncated" in line]
    assert len(lines) == 1, done.stderr
