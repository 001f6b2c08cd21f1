"""BGE-M3 dense + sparse in one Milvus Lite collection through ``langchain_milvus.Milvus``: the stored vectors are
flagstack's, each text is encoded once, and Milvus' dense, sparse and weighted hybrid searches rank SciFact
documents as flagstack's ``HybridIndex`` does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core.evaluation.beir import sample
from flag_core.retrieval import HybridIndex
from flag_core.retrieval.hybrid import DEFAULT_WEIGHTS
from langchain_flag import FlagM3Embeddings

pytest.importorskip("milvus_lite", reason="Milvus Lite (pip install milvus-lite) runs the embedded Milvus")
pytest.importorskip("pymilvus", reason="pymilvus is Milvus' client")
pytest.importorskip("langchain_milvus", reason="langchain-milvus holds LangChain's Milvus store")

pytestmark = pytest.mark.filterwarnings("ignore:.*ORM-style PyMilvus API:FutureWarning")  # langchain-milvus' use
DOCS, QUERIES, K = 120, 3, 5
SETTINGS: dict[str, Any] = {"devices": "cpu", "passage_max_length": 256, "query_max_length": 64}
W_DENSE, W_SPARSE = DEFAULT_WEIGHTS[0], DEFAULT_WEIGHTS[1]
Ranked = list[tuple[str, float]]


def assert_same_ranking(got: Ranked, want: Ranked, tol: float = 1e-5) -> None:
    """``got`` (k hits) equals ``want`` (k + 1 hits, so a tie at the cut shows): the same scores, and the same ids
    except that documents whose scores are within ``tol`` may swap."""
    k = len(got)
    assert len({doc for doc, _ in got}) == k
    assert [s for _, s in got] == pytest.approx([s for _, s in want[:k]], abs=tol)
    for i, (doc, score) in enumerate(got):
        assert doc == want[i][0] or doc in {d for d, s in want if abs(s - score) <= tol}, (got, want)


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
    from langchain_milvus import Milvus
    from pymilvus import Function, FunctionType, connections

    corpus, queries = sample(shared_data / "scifact", QUERIES, DOCS)
    ids, texts = list(corpus), [doc["full"] for doc in corpus.values()]
    dense = FlagM3Embeddings(model_name=m3_path, **SETTINGS)
    sparse = dense.sparse()
    model = dense.client
    uri = str(tmp_path / "milvus.db")  # Milvus Lite; a server's "http://host:19530" is wired the same way
    store = Milvus(
        embedding_function=[dense, sparse.milvus()], vector_field=["dense", "sparse"],
        connection_args={"uri": uri}, collection_name="scifact", drop_old=True,
        index_params=[{"index_type": "FLAT", "metric_type": "IP", "params": {}},  # exact: HybridIndex is exact
                      {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "IP",
                       "params": {"drop_ratio_build": 0.0}}],  # langchain-milvus' default drops 20% of weights
        search_params=[{"metric_type": "IP", "params": {}},
                       {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}],
    )
    if not connections.has_connection(store.alias):
        # langchain-milvus 0.3.3 opens an ORM Collection under MilvusClient's alias, which pymilvus 2.6's newer
        # releases (2.6.10 in langchain-ai/langchain-milvus#130, 2.6.17 here) no longer register: register it,
        # or add_texts fails with "should create connection first"
        connections.connect(alias=store.alias, uri=uri)

    # one pass: N texts reach the encoder once for both fields (langchain-milvus embeds no probe text: it takes
    # the dimension from the first batch)
    counted, before = passes(model), model.one_pass.encoded
    store.add_texts(texts, ids=ids)
    assert model.one_pass.encoded - before == len(texts)
    assert counted[0] == len(texts)

    # the stored vectors are flagstack's encode_corpus outputs
    out = model.encode_corpus(texts, return_dense=True, return_sparse=True)
    rows = {row["pk"]: row for row in store.client.query("scifact", ids=ids, output_fields=["pk", "dense", "sparse"])}
    assert len(rows) == len(ids)
    for i, doc_id in enumerate(ids):
        assert np.abs(np.asarray(rows[doc_id]["dense"]) - out["dense_vecs"][i]).max() <= 1e-6
        stored, expected = rows[doc_id]["sparse"], out["lexical_weights"][i]
        assert set(stored) == {int(t) for t in expected}
        assert all(abs(stored[int(t)] - w) <= 1e-6 for t, w in expected.items())

    # Milvus' searches rank as HybridIndex does. Each field alone: a plain search of that field. Sparse+dense:
    # HybridIndex fuses (w_sparse * sparse + w_dense * dense) / (w_sparse + w_dense) over every candidate; Milvus'
    # weighted reranker with norm_score=False sums w_i * score_i over the routes, so normalized weights and routes
    # that reach every document (fetch_k) give the same scores. (ranker_type="weighted" builds pymilvus'
    # WeightedRanker with norm_score=True, which maps each score through arctan first: another ranking.)
    reference = HybridIndex(model, multi_vectors=False)
    reference.add(texts, [{"doc_id": d} for d in ids])
    fused = Function(name="bge_m3_sparse_dense", input_field_names=[], function_type=FunctionType.RERANK,
                     params={"reranker": "weighted", "norm_score": False,
                             "weights": [W_DENSE / (W_DENSE + W_SPARSE), W_SPARSE / (W_DENSE + W_SPARSE)]})
    for _, query, _ in queries:
        def want(mode: str, q: str = query) -> Ranked:
            return [(h.payload["doc_id"], h.score) for h in reference.search(q, K + 1, mode=mode)]

        for field, vector in (("dense", dense.embed_query(query)), ("sparse", sparse.milvus().embed_query(query))):
            hits = store.client.search("scifact", data=[vector], anns_field=field, limit=K,
                                       search_params=store.search_params[store.vector_fields.index(field)])
            assert_same_ranking([(hit["pk"], hit["distance"]) for hit in hits[0]], want(field))
        docs = store.similarity_search_with_score(query, k=K, fetch_k=len(texts), reranker=fused)
        assert_same_ranking([(doc.metadata["pk"], score) for doc, score in docs], want("sparse+dense"))
