"""FlagM3Embedding (BGE-M3's dense side) with FlagSparseEmbedding: one model, one encoding of each text in a
hybrid Qdrant store built by ``VectorStoreIndex``."""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest
from llama_index.core.schema import TextNode

from flag_core import BGEM3FlagModel
from llamaindex_flag import FlagM3Embedding, FlagSparseEmbedding

TEXTS = [f"document {i}: {'giant pandas eat bamboo ' * (1 + i % 4)}in the forests of Sichuan" for i in range(24)]


def encoded_rows(model: BGEM3FlagModel) -> list[int]:
    """Grows by each forward pass's batch rows (texts sent to the encoder)."""
    rows: list[int] = []
    model.runtime.loaded.model.register_forward_hook(
        lambda module, args, kwargs, output: rows.append(int(kwargs["input_ids"].shape[0])), with_kwargs=True)
    return rows


def test_dense_vectors_equal_bge_m3s_and_the_sparse_side_shares_the_model(m3_path: str) -> None:
    dense = FlagM3Embedding(model_name=m3_path, devices="cpu", query_instruction_for_retrieval="Q: ",
                            embed_batch_size=5)
    sparse = dense.sparse()
    assert isinstance(sparse, FlagSparseEmbedding) and sparse.client is dense.client
    assert sparse.embed_batch_size == 5 and sparse.query_instruction_for_retrieval == "Q: "
    model = BGEM3FlagModel(m3_path, devices="cpu", query_instruction_for_retrieval="Q: ")
    np.testing.assert_allclose(dense.get_text_embedding_batch(TEXTS), model.encode_corpus(TEXTS)["dense_vecs"],
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(dense.get_query_embedding("pandas?"), model.encode_queries("pandas?")["dense_vecs"],
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(asyncio.run(dense.aget_query_embedding("pandas?")), dense.get_query_embedding("pandas?"),
                               atol=1e-6, rtol=0)
    assert dense.to_dict()["class_name"] == "FlagM3Embedding"
    assert pickle.loads(pickle.dumps(dense)).client is dense.client
    with pytest.raises(TypeError, match="must be a str"):
        dense.get_query_embedding(["a"])  # type: ignore[arg-type]


def test_a_qdrant_hybrid_store_encodes_each_text_once(m3_path: str) -> None:
    pytest.importorskip("llama_index.vector_stores.qdrant", reason="needs the vectorstores extra")
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    dense = FlagM3Embedding(model_name=m3_path, devices="cpu", use_fp16=False, embed_batch_size=10)
    sparse = dense.sparse()
    client = QdrantClient(location=":memory:")
    store = QdrantVectorStore(client=client, collection_name="one-pass", enable_hybrid=True, batch_size=7,
                              sparse_doc_fn=sparse.qdrant_documents, sparse_query_fn=sparse.qdrant_queries)
    rows = encoded_rows(dense.client)
    nodes = [TextNode(text=text, id_=f"00000000-0000-0000-0000-{i:012d}") for i, text in enumerate(TEXTS)]
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                             embed_model=dense)
    assert sum(rows) == len(TEXTS) == dense.one_pass.encoded  # N texts' worth, not 2N
    assert dense.one_pass.pending == 0  # every kept sparse output was asked for
    model = BGEM3FlagModel(m3_path, devices="cpu", use_fp16=False)
    expected = model.encode_corpus(TEXTS, return_sparse=True)
    points = {p.id: p for p in client.scroll("one-pass", limit=100, with_vectors=True)[0]}
    for i, (vector, weights) in enumerate(zip(expected["dense_vecs"], expected["lexical_weights"], strict=True)):
        stored = points[nodes[i].node_id].vector
        assert isinstance(stored, dict)
        np.testing.assert_allclose(stored["text-dense"], vector, atol=1e-6, rtol=0)
        kept = stored["text-sparse-new"] if "text-sparse-new" in stored else stored["text-sparse"]
        assert dict(zip(kept.indices, kept.values, strict=True)) == pytest.approx(  # type: ignore[union-attr]
            {int(t): w for t, w in weights.items()}, abs=1e-6)
    rows.clear()
    retriever = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=3, sparse_top_k=3)
    assert len(retriever.retrieve("where do giant pandas live?")) == 3
    assert sum(rows) == 1  # the query: one encoding for its dense and sparse vectors


def test_milvus_function_refuses_a_text_without_lexical_weights_naming_it(m3_path: str) -> None:
    pytest.importorskip("llama_index.vector_stores.milvus", reason="needs the milvus extra")
    function = FlagSparseEmbedding(model_name=m3_path, devices="cpu").milvus()
    assert function.encode_documents(["Giant pandas eat bamboo."])[0]
    with pytest.raises(ValueError, match=r"documents\[1\] \(''\) has no BGE-M3 lexical weight"):
        function.encode_documents(["Giant pandas eat bamboo.", ""])


def test_a_setting_assigned_later_is_the_one_the_model_runs_with(m3_path: str) -> None:
    dense = FlagM3Embedding(model_name=m3_path, devices="cpu")
    dense.query_instruction_for_retrieval = "Represent: "
    model = BGEM3FlagModel(m3_path, devices="cpu", query_instruction_for_retrieval="Represent: ")
    np.testing.assert_allclose(dense.get_query_embedding("pandas"), model.encode_queries("pandas")["dense_vecs"],
                               atol=1e-6)
