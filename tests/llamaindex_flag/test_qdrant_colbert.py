"""FlagQdrantM3VectorStore: dense, sparse and ColBERT vectors of BGE-M3 in one Qdrant collection (local mode),
written with one encoding of each node's text, ranked by Qdrant as flagstack's HybridIndex ranks."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("llama_index.vector_stores.qdrant", reason="needs llama-index-vector-stores-qdrant")
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from qdrant_client import AsyncQdrantClient, QdrantClient

from flag_core import build_m3
from flag_core.evaluation.beir import sample
from flag_core.retrieval import HybridIndex
from llamaindex_flag import FlagM3Embedding
from llamaindex_flag.qdrant import FlagColbertEmbedding, FlagQdrantM3VectorStore

SETTINGS: dict[str, Any] = {"devices": "cpu", "passage_max_length": 256, "query_max_length": 64}
CANDIDATES = 8


def index_of(store: FlagQdrantM3VectorStore, nodes: list[TextNode], dense: FlagM3Embedding) -> VectorStoreIndex:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
        return VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                                embed_model=dense)


def test_one_encoding_per_node_and_qdrant_ranks_as_flagstack(m3_path: str, shared_data: Path) -> None:
    corpus, queries = sample(shared_data / "scifact", 6, 80)
    ids, texts = list(corpus), [doc["full"] for doc in corpus.values()]
    model = build_m3(m3_path, **SETTINGS)
    out = model.encode_corpus(texts, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    reference = HybridIndex(model, colbert_storage="float32")  # Qdrant stores float32
    reference.add(texts, [{"doc_id": d} for d in ids])

    dense = FlagM3Embedding(model_name=m3_path, embed_batch_size=len(texts), **SETTINGS)  # one batch, as above
    client = QdrantClient(location=":memory:")
    store = FlagQdrantM3VectorStore("m3", dense, client=client, candidates=CANDIDATES, batch_size=len(texts))
    assert store.colbert.client is dense.client
    points = [f"00000000-0000-0000-0000-{i:012d}" for i in range(len(ids))]
    nodes = [TextNode(text=text, id_=point, metadata={"scifact_id": doc_id},
                      excluded_embed_metadata_keys=["scifact_id"]) for doc_id, text, point in zip(ids, texts, points,
                                                                                                   strict=True)]
    one_pass = dense.one_pass
    one_pass.clear()
    before = one_pass.encoded
    index = index_of(store, nodes, dense)
    assert one_pass.encoded - before == len(texts)

    stored = {str(p.id): p.vector for p in client.retrieve("m3", points, with_vectors=True)}
    for i, point in enumerate(points):
        vector: Any = stored[point]
        np.testing.assert_allclose(vector["dense"], out["dense_vecs"][i], atol=1e-6)
        weights = dict(zip(vector["sparse"].indices, vector["sparse"].values, strict=True))
        expected = {int(t): w for t, w in out["lexical_weights"][i].items()}
        assert weights.keys() == expected.keys()
        np.testing.assert_allclose([weights[t] for t in expected], list(expected.values()), atol=1e-6)
        np.testing.assert_allclose(vector["colbert"], out["colbert_vecs"][i], atol=1e-6)

    retriever = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=5)
    for mode in ("dense", "sparse", "sparse+dense", "colbert", "hybrid"):
        store.search_mode = mode  # type: ignore[assignment]
        for _, query, _ in queries:
            before = one_pass.encoded
            found = [hit.node.metadata["scifact_id"] for hit in retriever.retrieve(query)]
            assert one_pass.encoded - before == 1  # one encoding of the query for all three outputs
            wanted = [hit.payload["doc_id"] for hit in reference.search(query, 5, mode=mode, candidates=CANDIDATES)]
            assert found == wanted, (mode, query)
    dense_only = index.as_retriever(similarity_top_k=3).retrieve(queries[0][1])  # the base store's dense search
    assert [hit.node.metadata["scifact_id"] for hit in dense_only] == \
        [hit.payload["doc_id"] for hit in reference.search(queries[0][1], 3, mode="dense", candidates=CANDIDATES)]


def test_async_add_and_query_and_an_existing_collection(m3_path: str, tmp_path: Path) -> None:
    dense = FlagM3Embedding(model_name=m3_path, **SETTINGS)
    texts = ["Giant pandas eat bamboo.", "Paris is the capital of France.", "Red pandas live in the Himalayas."]
    nodes = [TextNode(text=text) for text in texts]
    store = FlagQdrantM3VectorStore("docs", dense, aclient=AsyncQdrantClient(location=":memory:"), candidates=2)

    async def run() -> list[str]:
        index = VectorStoreIndex([], storage_context=StorageContext.from_defaults(vector_store=store),
                                 embed_model=dense)
        await index.ainsert_nodes(nodes)
        hits = await index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=1).aretrieve("France")
        return [hit.node.get_content() for hit in hits]

    assert asyncio.run(run()) == [texts[1]]
    client = QdrantClient(path=str(tmp_path / "q"))
    FlagQdrantM3VectorStore("docs", dense, client=client).add(
        [TextNode(text=t, embedding=e) for t, e in zip(texts, dense.get_text_embedding_batch(texts), strict=True)])
    again = FlagQdrantM3VectorStore("docs", dense, client=client, search_mode="hybrid")  # checks the collection
    hits = VectorStoreIndex.from_vector_store(again, embed_model=dense).as_retriever(
        vector_store_query_mode="hybrid", similarity_top_k=1).retrieve("what do pandas eat?")
    assert hits[0].node.get_content() == texts[0]
    client.create_collection("plain", vectors_config={})
    with pytest.raises(ValueError, match="no multivector named 'colbert'"):
        FlagQdrantM3VectorStore("plain", dense, client=client)
    with pytest.raises(TypeError, match="sparse and colbert"):
        FlagQdrantM3VectorStore("docs", client=client)
    client.close()


def test_colbert_embedding_equals_bge_m3s(m3_path: str) -> None:
    colbert = FlagColbertEmbedding(model_name=m3_path, **SETTINGS)
    model = build_m3(m3_path, **SETTINGS)
    texts = ["Giant pandas eat bamboo.", "json.loads parses JSON."]
    for got, want in zip(colbert.documents(texts), model.encode_corpus(texts, return_colbert_vecs=True)["colbert_vecs"],
                         strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(colbert.queries(["pandas?"])[0],
                               model.encode_queries(["pandas?"], return_colbert_vecs=True)["colbert_vecs"][0],
                               atol=1e-6)


def test_two_threads_adding_to_one_store_each_write_their_own_colbert_vectors(m3_path: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    dense = FlagM3Embedding(model_name=m3_path, **SETTINGS)
    store = FlagQdrantM3VectorStore("threads", dense, client=QdrantClient(location=":memory:"))
    texts = [f"thread text {i}: {'giant pandas eat bamboo ' * (1 + i % 3)}" for i in range(24)]
    nodes = [TextNode(text=text, id_=f"00000000-0000-0000-0000-{i:012d}") for i, text in enumerate(texts)]
    for node, vector in zip(nodes, dense.get_text_embedding_batch(texts), strict=True):
        node.embedding = vector
    store.add(nodes[:1])  # the collection exists before the threads race
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda i: store.add(nodes[i:i + 3]), range(1, len(nodes), 3)))
    expected = build_m3(m3_path, **SETTINGS).encode_corpus(texts, return_colbert_vecs=True)["colbert_vecs"]
    stored = {str(p.id): p.vector for p in store.client.scroll("threads", limit=100, with_vectors=True)[0]}
    assert len(stored) == len(nodes)
    for node, rows in zip(nodes, expected, strict=True):
        np.testing.assert_allclose(stored[node.node_id]["colbert"], rows, atol=1e-5)  # type: ignore[index]
