"""FlagReranker as a document compressor and cross-encoder, alone and in ContextualCompressionRetriever."""

from __future__ import annotations

import asyncio
import copy

import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore

from flag_core import FlagReranker as CoreReranker
from langchain_flag import FlagEmbeddings, FlagReranker

CORPUS = [
    "The giant panda is a bear species endemic to China.",
    "Pandas eat bamboo almost exclusively.",
    "Paris is the capital of France.",
    "json.loads parses JSON text into Python objects.",
    "Red pandas are not closely related to giant pandas.",
    "The Eiffel Tower is in Paris.",
]


def test_compressor_orders_by_score_and_keeps_inputs(reranker_path: str) -> None:
    reranker = FlagReranker(model_name=reranker_path, devices="cpu", top_n=3)
    docs = [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(CORPUS)]
    before = copy.deepcopy(docs)
    out = reranker.compress_documents(docs, "what do pandas eat?")
    scores = CoreReranker(reranker_path, devices="cpu").compute_score([("what do pandas eat?", t) for t in CORPUS])
    expected = sorted(range(len(CORPUS)), key=lambda i: -scores[i])[:3]
    assert [d.metadata["n"] for d in out] == expected
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx([scores[i] for i in expected], abs=1e-6)
    assert docs == before  # the caller's documents are not touched
    assert reranker.compress_documents([], "q") == []


def test_threshold_normalize_and_cross_encoder(reranker_path: str) -> None:
    reranker = FlagReranker(model_name=reranker_path, devices="cpu", top_n=None, normalize=True)
    docs = [Document(page_content=t) for t in CORPUS]
    everything = reranker.compress_documents(docs, "pandas")
    assert len(everything) == len(CORPUS) and all(0 < d.metadata["relevance_score"] < 1 for d in everything)
    cut = sorted(d.metadata["relevance_score"] for d in everything)[3]
    strict = FlagReranker(model_name=reranker_path, devices="cpu", top_n=None, normalize=True, score_threshold=cut)
    assert len(strict.compress_documents(docs, "pandas")) == 3
    pairs = [("pandas", t) for t in CORPUS[:2]]
    assert reranker.score(pairs) == CoreReranker(reranker_path, devices="cpu").compute_score(pairs, normalize=True)
    with pytest.raises(TypeError, match=r"documents\[0\]"):
        reranker.compress_documents(["not a document"], "q")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="top_n"):
        FlagReranker(model_name=reranker_path, top_n=0)


def test_inside_contextual_compression_retriever(model_path: str, reranker_path: str) -> None:
    from langchain_classic.retrievers import ContextualCompressionRetriever

    store = InMemoryVectorStore(embedding=FlagEmbeddings(model_name=model_path, devices="cpu"))
    store.add_texts(CORPUS)
    reranker = FlagReranker(model_name=reranker_path, devices="cpu", top_n=2)
    retriever = ContextualCompressionRetriever(
        base_compressor=reranker, base_retriever=store.as_retriever(search_kwargs={"k": 4})
    )
    query = "giant panda bears"
    out = retriever.invoke(query)
    candidates = [d.page_content for d in store.similarity_search(query, k=4)]
    scores = CoreReranker(reranker_path, devices="cpu").compute_score([(query, t) for t in candidates])
    assert [d.page_content for d in out] == [candidates[i] for i in sorted(range(4), key=lambda i: -scores[i])[:2]]


async def test_async_compress(reranker_path: str) -> None:
    reranker = FlagReranker(model_name=reranker_path, devices="cpu", top_n=2)
    docs = [Document(page_content=t) for t in CORPUS]
    assert await reranker.acompress_documents(docs, "paris") == reranker.compress_documents(docs, "paris")


async def test_gathered_async_compressions_share_forward_passes(reranker_path: str) -> None:
    reranker = FlagReranker(model_name=reranker_path, devices="cpu", top_n=2, gather_window_ms=500)
    docs = [Document(page_content=t) for t in CORPUS]
    queries = ["paris", "pandas", "bamboo", "france", "bears"]
    expected = [reranker.compress_documents(docs, query) for query in queries]
    passes: list[int] = []
    reranker.client.runtime.loaded.model.register_forward_hook(lambda *_: passes.append(1))
    gathered = await asyncio.gather(*(reranker.acompress_documents(docs, query) for query in queries))
    assert len(passes) == 1
    for got, want in zip(gathered, expected, strict=True):  # the same order; scores equal within fp32 rounding
        assert [d.page_content for d in got] == [d.page_content for d in want]
        assert [d.metadata["relevance_score"] for d in got] == pytest.approx(
            [d.metadata["relevance_score"] for d in want], abs=1e-6)
