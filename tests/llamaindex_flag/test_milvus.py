"""BGE-M3 dense + sparse in one Milvus Lite collection through LlamaIndex's ``MilvusVectorStore``: the stored
vectors are flagstack's, each node is encoded once, and the retriever's dense, sparse and hybrid modes rank
SciFact documents as flagstack's ``HybridIndex`` scores say they must."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core.evaluation.beir import sample
from flag_core.retrieval import HybridIndex
from flag_core.retrieval.hybrid import DEFAULT_WEIGHTS
from llamaindex_flag import FlagM3Embedding

pytest.importorskip("milvus_lite", reason="Milvus Lite (pip install milvus-lite) runs the embedded Milvus")
pytest.importorskip("pymilvus", reason="pymilvus is Milvus' client")
pytest.importorskip("llama_index.vector_stores.milvus", reason="llama-index-vector-stores-milvus holds the store")

DOCS, QUERIES, K = 120, 3, 5
SETTINGS: dict[str, Any] = {"devices": "cpu", "passage_max_length": 256, "query_max_length": 64}
W_DENSE, W_SPARSE = DEFAULT_WEIGHTS[0] / sum(DEFAULT_WEIGHTS[:2]), DEFAULT_WEIGHTS[1] / sum(DEFAULT_WEIGHTS[:2])
Ranked = list[tuple[str, float]]


def assert_same_ranking(got: Ranked, want: Ranked, tol: float = 1e-5) -> None:
    """``got`` (k hits) equals ``want`` (k + 1 hits, so a tie at the cut shows): the same scores, and the same ids
    except that documents whose scores are within ``tol`` may swap."""
    k = len(got)
    assert len({doc for doc, _ in got}) == k
    assert [s for _, s in got] == pytest.approx([s for _, s in want[:k]], abs=tol)
    for i, (doc, score) in enumerate(got):
        assert doc == want[i][0] or doc in {d for d, s in want if abs(s - score) <= tol}, (got, want)


def milvus_weighted(dense: Ranked, sparse: Ranked, k: int) -> Ranked:
    """Milvus' WeightedRanker as llama-index builds it (pymilvus' norm_score=True) over each route's top ``k``: an
    IP score s counts as 0.5 + atan(s) / pi, weighted and summed over the routes that returned the document."""
    fused: dict[str, float] = {}
    for weight, route in ((W_DENSE, dense[:k]), (W_SPARSE, sparse[:k])):
        for doc, score in route:
            fused[doc] = fused.get(doc, 0.0) + weight * (0.5 + math.atan(score) / math.pi)
    return sorted(fused.items(), key=lambda item: -item[1])


@pytest.fixture
def passes() -> Iterator[Any]:
    """Counts the texts the encoder sees: ``passes(model)`` hooks its forward, the returned list sums batch rows."""
    handles: list[Any] = []
    seen = [0]

    def hook(model: Any) -> list[int]:
        def count(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
            seen[0] += int(kwargs["input_ids"].shape[0])

        handles.append(model.runtime.loaded.model.register_forward_pre_hook(count, with_kwargs=True))
        return seen

    yield hook
    for handle in handles:
        handle.remove()


def test_milvus_hybrid_store_matches_hybrid_index(m3_path: str, shared_data: Path, tmp_path: Path,
                                                  passes: Any) -> None:
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode
    from llama_index.vector_stores.milvus import MilvusVectorStore
    from pymilvus import AnnSearchRequest, Function, FunctionType, MilvusException

    corpus, queries = sample(shared_data / "scifact", QUERIES, DOCS)
    ids, texts = list(corpus), [doc["full"] for doc in corpus.values()]
    dense = FlagM3Embedding(model_name=m3_path, **SETTINGS)
    sparse = dense.sparse().milvus()
    model = dense.client
    store = MilvusVectorStore(  # Milvus Lite; a server's "http://host:19530" is wired the same way
        uri=str(tmp_path / "m.db"), dim=model.signature()["dimension"], similarity_metric="IP", overwrite=True,
        enable_sparse=True, sparse_embedding_function=sparse,
        hybrid_ranker="WeightedRanker", hybrid_ranker_params={"weights": [W_DENSE, W_SPARSE]},
    )
    # nodes without metadata: the text embedded densely is node.text, the text the store sparse-encodes (one node
    # at a time), so the sparse outputs kept from the dense batch serve it; the store embeds no probe text (dim=)
    nodes = [TextNode(text=text, id_=doc_id) for doc_id, text in zip(ids, texts, strict=True)]
    counted, before = passes(model), model.one_pass.encoded
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                             embed_model=dense)
    assert model.one_pass.encoded - before == len(texts)
    assert counted[0] == len(texts)

    # the stored vectors are flagstack's encode_corpus outputs
    out = model.encode_corpus(texts, return_dense=True, return_sparse=True)
    rows = {row["id"]: row for row in store.client.query(store.collection_name, ids=ids,
                                                         output_fields=["id", "embedding", "sparse_embedding"])}
    assert len(rows) == len(ids)
    for i, doc_id in enumerate(ids):
        assert np.abs(np.asarray(rows[doc_id]["embedding"]) - out["dense_vecs"][i]).max() <= 1e-6
        stored, expected = rows[doc_id]["sparse_embedding"], out["lexical_weights"][i]
        assert set(stored) == {int(t) for t in expected}
        assert all(abs(stored[int(t)] - w) <= 1e-6 for t, w in expected.items())

    reference = HybridIndex(model, multi_vectors=False)
    reference.add(texts, [{"doc_id": d} for d in ids])
    exact = {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}
    bge_m3 = Function(name="bge_m3_sparse_dense", input_field_names=[], function_type=FunctionType.RERANK,
                      params={"reranker": "weighted", "weights": [W_DENSE, W_SPARSE], "norm_score": False})
    for _, query, _ in queries:
        def want(mode: str, k: int = K + 1, q: str = query) -> Ranked:
            return [(h.payload["doc_id"], h.score) for h in reference.search(q, k, mode=mode)]

        def retrieve(mode: str, q: str = query) -> Ranked:
            found = index.as_retriever(vector_store_query_mode=mode, similarity_top_k=K).retrieve(q)
            return [(hit.node.node_id, float(hit.score or 0.0)) for hit in found]

        assert_same_ranking(retrieve("default"), want("dense"))
        q_sparse = sparse.encode_queries([query])[0]
        try:
            got = retrieve("sparse")
        except MilvusException as exc:  # llama-index asks drop_ratio_search=0.2 (approximate); Milvus Lite takes 0
            assert "drop_ratio_search" in str(exc)
            hits = store.client.search(store.collection_name, data=[q_sparse], anns_field="sparse_embedding",
                                       limit=K, search_params=exact)
            got = [(hit["id"], hit["distance"]) for hit in hits[0]]
        assert_same_ranking(got, want("sparse"))

        # the retriever's hybrid mode: llama-index builds WeightedRanker(*weights), whose default norm_score=True
        # maps each route's IP score through arctan, over each route's top similarity_top_k only, so it is not
        # BGE-M3's (w_sparse * sparse + w_dense * dense) / (w_sparse + w_dense): it must equal that ranker
        # computed from HybridIndex's own dense and sparse scores
        routes = milvus_weighted(want("dense", K), want("sparse", K), K)
        assert_same_ranking(retrieve("hybrid"), routes[: K + 1])
        # BGE-M3's sparse+dense from the same collection: weighted, norm_score=False, routes reaching every node
        requests = [AnnSearchRequest([dense.get_query_embedding(query)], "embedding", {"metric_type": "IP"},
                                     len(texts)),
                    AnnSearchRequest([q_sparse], "sparse_embedding", exact, len(texts))]
        hits = store.client.hybrid_search(store.collection_name, requests, ranker=bge_m3, limit=K,
                                          output_fields=["id"])
        assert_same_ranking([(hit["id"], hit["distance"]) for hit in hits[0]], want("sparse+dense"))
