"""FlagQdrantM3Store: dense, sparse and ColBERT vectors of BGE-M3 in one Qdrant collection (local mode), written
with one encoding of each text, ranked by Qdrant as flagstack's HybridIndex ranks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_qdrant", reason="needs langchain-qdrant (the vectorstores extra)")
from qdrant_client import QdrantClient

from flag_core import build_m3
from flag_core.evaluation.beir import sample
from flag_core.retrieval import HybridIndex
from langchain_flag import FlagM3Embeddings
from langchain_flag.qdrant import FlagColbertEmbeddings, FlagQdrantM3Store

SETTINGS: dict[str, Any] = {"devices": "cpu", "passage_max_length": 256, "query_max_length": 64}
CANDIDATES = 8


@pytest.fixture(scope="module")
def scifact(shared_data: Path) -> tuple[list[str], list[str], list[str]]:
    """80 SciFact documents (ids, texts) and 6 judged queries."""
    corpus, queries = sample(shared_data / "scifact", 6, 80)
    return list(corpus), [doc["full"] for doc in corpus.values()], [text for _, text, _ in queries]


@pytest.fixture(scope="module")
def reference(m3_path: str, scifact: tuple[list[str], list[str], list[str]]) -> tuple[dict[str, Any], HybridIndex]:
    ids, texts, _ = scifact
    model = build_m3(m3_path, **SETTINGS)
    out = model.encode_corpus(texts, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    index = HybridIndex(model, colbert_storage="float32")  # Qdrant stores float32
    index.add(texts, [{"doc_id": d} for d in ids])
    return out, index


def test_one_encoding_per_text_and_stored_vectors_equal_bge_m3s(
    m3_path: str, scifact: tuple[list[str], list[str], list[str]], reference: tuple[dict[str, Any], HybridIndex]
) -> None:
    ids, texts, queries = scifact
    out, index = reference
    dense = FlagM3Embeddings(model_name=m3_path, **SETTINGS)
    client = QdrantClient(location=":memory:")
    store = FlagQdrantM3Store(client, "m3", dense, candidates=CANDIDATES)
    assert store.colbert_embedding.client is dense.client is store.sparse_embeddings.client  # type: ignore[attr-defined]
    one_pass = dense.one_pass
    one_pass.clear()
    before = one_pass.encoded
    points = [f"00000000-0000-0000-0000-{i:012d}" for i in range(len(ids))]
    store.add_texts(texts, [{"doc_id": d} for d in ids], ids=points, batch_size=len(texts))  # one batch, as above
    assert one_pass.encoded - before == len(texts)  # the collection is created from the first batch: no dummy text

    params = client.get_collection("m3").config.params.vectors
    assert isinstance(params, dict) and params["colbert"].multivector_config is not None
    stored = {str(p.id): p.vector for p in client.retrieve("m3", points, with_vectors=True)}
    for i, point in enumerate(points):
        vector: Any = stored[point]
        np.testing.assert_allclose(vector["dense"], out["dense_vecs"][i], atol=1e-6)
        weights = dict(zip(vector["sparse"].indices, vector["sparse"].values, strict=True))
        expected = {int(t): w for t, w in out["lexical_weights"][i].items()}
        assert weights.keys() == expected.keys()
        np.testing.assert_allclose([weights[t] for t in expected], list(expected.values()), atol=1e-6)
        np.testing.assert_allclose(vector["colbert"], out["colbert_vecs"][i], atol=1e-6)

    for mode in ("dense", "sparse", "sparse+dense", "colbert", "hybrid"):
        store.search_mode = mode  # type: ignore[assignment]
        for query in queries:
            before = one_pass.encoded
            found = [doc.metadata["doc_id"] for doc in store.similarity_search(query, k=5)]
            assert one_pass.encoded - before == 1  # one encoding of the query for all three outputs
            expected_ids = [hit.payload["doc_id"] for hit in index.search(query, 5, mode=mode, candidates=CANDIDATES)]
            assert found == expected_ids, (mode, query)
    store.search_mode = "colbert"
    hits = store.similarity_search_with_score(queries[0], k=3)
    best = index.search(queries[0], 3, mode="colbert", candidates=CANDIDATES)
    n_tokens = len(store.colbert_embedding.vectors([queries[0]], "query")[0])
    np.testing.assert_allclose([score for _, score in hits], [h.score * n_tokens for h in best], rtol=1e-5)


def test_from_texts_and_an_existing_collection(m3_path: str, tmp_path: Path) -> None:
    dense = FlagM3Embeddings(model_name=m3_path, **SETTINGS)
    texts = ["Giant pandas eat bamboo.", "Paris is the capital of France.", "Red pandas live in the Himalayas."]
    store = FlagQdrantM3Store.from_texts(texts, dense, collection_name="docs", path=str(tmp_path / "q"),
                                         store_options={"candidates": 2})
    assert store.similarity_search("capital of France", k=1)[0].page_content == texts[1]
    again = FlagQdrantM3Store(store.client, "docs", dense, search_mode="hybrid")  # validates the collection
    assert again.similarity_search("what do pandas eat?", k=1)[0].page_content == texts[0]
    with pytest.raises(NotImplementedError, match="relevance scores"):  # refused, never inverted
        store.similarity_search_with_relevance_scores("capital of France", k=1)
    with pytest.raises(ValueError, match="retrieval_mode"):
        FlagQdrantM3Store(store.client, "docs", dense, retrieval_mode="dense")
    store.client.create_collection("plain", vectors_config={})
    with pytest.raises(ValueError, match="no multivector named 'colbert'"):
        FlagQdrantM3Store(store.client, "plain", dense)
    with pytest.raises(TypeError, match="colbert_embedding"):
        FlagQdrantM3Store(store.client, "docs", object())  # type: ignore[arg-type]
    store.client.close()
    reopened = FlagQdrantM3Store.from_existing_collection(embedding=dense, collection_name="docs",
                                                          path=str(tmp_path / "q"))
    assert reopened.similarity_search("capital of France", k=1)[0].page_content == texts[1]
    reopened.client.close()


def test_colbert_embeddings_equal_bge_m3s(m3_path: str) -> None:
    colbert = FlagColbertEmbeddings(model_name=m3_path, **SETTINGS)
    model = build_m3(m3_path, **SETTINGS)
    texts = ["Giant pandas eat bamboo.", "json.loads parses JSON."]
    rows = colbert.embed_documents(texts)
    for got, want in zip(rows, model.encode_corpus(texts, return_colbert_vecs=True)["colbert_vecs"], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(colbert.embed_query("pandas?"),
                               model.encode_queries(["pandas?"], return_colbert_vecs=True)["colbert_vecs"][0],
                               atol=1e-6)
    with pytest.raises(TypeError):
        colbert.embed_query(["not", "a", "str"])  # type: ignore[arg-type]


def test_sparse_mode_returns_only_documents_sharing_a_token_as_the_index_does(m3_path: str) -> None:
    texts = ["Giant pandas eat bamboo.", "Paris is the capital of France.", "Red pandas live in the Himalayas.",
             "JSON is parsed by json.loads.", "Bamboo grows fast in China."]
    dense = FlagM3Embeddings(model_name=m3_path, **SETTINGS)
    store = FlagQdrantM3Store.from_texts(texts, dense, collection_name="s", location=":memory:",
                                         store_options={"search_mode": "sparse", "candidates": 5})
    index = HybridIndex(build_m3(m3_path, **SETTINGS))
    index.add(texts)
    for query in ("pandas bamboo food", "capital city"):
        got = [(doc.page_content, score) for doc, score in store.similarity_search_with_score(query, k=5)]
        want = [(hit.text, hit.score) for hit in index.search(query, 5, mode="sparse", candidates=5)]
        assert [text for text, _ in got] == [text for text, _ in want], (query, got, want)
        assert all(score > 0 for _, score in got)
