"""FlagM3Embeddings (BGE-M3's dense side) with FlagSparseEmbeddings: one model, one encoding of each text in a
hybrid Qdrant store; LangChain's embeddings suites."""

from __future__ import annotations

import asyncio
import functools
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.load import dumpd, load
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from flag_core import BGEM3FlagModel
from flag_core.testing import build_test_m3
from langchain_flag import FlagEmbeddings, FlagM3Embeddings, FlagSparseEmbeddings

TEXTS = [f"document {i}: {'giant pandas eat bamboo ' * (1 + i % 4)}in the forests of Sichuan" for i in range(24)]


@functools.cache
def standard_m3() -> str:
    """The golden M3 checkpoint for LangChain's suites (their properties cannot take fixtures)."""
    return build_test_m3(Path(tempfile.mkdtemp()) / "m3")


def encoded_rows(model: BGEM3FlagModel) -> list[int]:
    """Grows by each forward pass's batch rows (texts sent to the encoder)."""
    rows: list[int] = []
    model.runtime.loaded.model.register_forward_hook(
        lambda module, args, kwargs, output: rows.append(int(kwargs["input_ids"].shape[0])), with_kwargs=True)
    return rows


def test_dense_vectors_equal_bge_m3s_and_the_sparse_side_shares_the_model(m3_path: str) -> None:
    dense = FlagM3Embeddings(model_name=m3_path, devices="cpu", query_instruction_for_retrieval="Q: ")
    sparse = dense.sparse()
    assert sparse.client is dense.client and sparse.query_instruction_for_retrieval == "Q: "
    assert FlagSparseEmbeddings(model_name=m3_path, devices="cpu", query_instruction_for_retrieval="Q: ").client \
        is dense.client
    model = BGEM3FlagModel(m3_path, devices="cpu", query_instruction_for_retrieval="Q: ")
    np.testing.assert_allclose(dense.embed_documents(TEXTS[:4]), model.encode_corpus(TEXTS[:4])["dense_vecs"],
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(dense.embed_query("pandas?"), model.encode_queries("pandas?")["dense_vecs"],
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(asyncio.run(dense.aembed_query("pandas?")), dense.embed_query("pandas?"), atol=1e-6)
    # FlagEmbeddings on the same checkpoint is the same dense output (a second model, without the shared pass)
    np.testing.assert_allclose(FlagEmbeddings(model_name=m3_path, devices="cpu").embed_documents(TEXTS[:4]),
                               dense.embed_documents(TEXTS[:4]), atol=1e-6, rtol=0)
    with pytest.raises(TypeError, match="one str"):
        dense.embed_query(["a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        dense.embed_documents(["a", 2])  # type: ignore[list-item]


def test_serializes_and_copies_sharing_the_model(m3_path: str) -> None:
    dense = FlagM3Embeddings(model_name=m3_path, devices="cpu", batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load is beta and says so
        again = load(dumpd(dense), valid_namespaces=["langchain_flag"], allowed_objects=[FlagM3Embeddings])
    assert isinstance(again, FlagM3Embeddings) and again.batch_size == 8 and again.client is dense.client
    assert pickle.loads(pickle.dumps(dense)).client is dense.client


def test_a_qdrant_hybrid_store_encodes_each_text_once(m3_path: str) -> None:
    pytest.importorskip("langchain_qdrant", reason="needs langchain-qdrant (the vectorstores extra)")
    from langchain_qdrant import QdrantVectorStore, RetrievalMode, SparseEmbeddings, SparseVector

    dense = FlagM3Embeddings(model_name=m3_path, devices="cpu", use_fp16=False)
    sparse = dense.sparse()
    assert isinstance(sparse, SparseEmbeddings) and isinstance(sparse.embed_query("pandas"), SparseVector)
    dense.one_pass.clear()
    rows = encoded_rows(dense.client)
    encoded = dense.one_pass.encoded
    store = QdrantVectorStore.from_texts(TEXTS, embedding=dense, sparse_embedding=sparse, location=":memory:",
                                         retrieval_mode=RetrievalMode.HYBRID, collection_name="one-pass")
    # N texts' worth of encoding, not 2N; the one more is the store's "dummy_text" (it learns the dense size)
    assert sum(rows) == len(TEXTS) + 1 == dense.one_pass.encoded - encoded
    model = BGEM3FlagModel(m3_path, devices="cpu", use_fp16=False)
    expected = model.encode_corpus(TEXTS, return_sparse=True)
    points = {p.payload["page_content"]: p for p in store.client.scroll("one-pass", limit=100, with_vectors=True)[0]}
    for text, vector, weights in zip(TEXTS, expected["dense_vecs"], expected["lexical_weights"], strict=True):
        stored: Any = points[text].vector
        np.testing.assert_allclose(stored["" if "" in stored else store.vector_name], vector, atol=1e-6, rtol=0)
        kept = stored[store.sparse_vector_name]
        assert dict(zip(kept.indices, kept.values, strict=True)) == pytest.approx(
            {int(t): w for t, w in weights.items()}, abs=1e-6)
    rows.clear()
    hits = store.similarity_search("where do giant pandas live?", k=3)
    assert len(hits) == 3 and sum(rows) == 1  # the query: one encoding for its dense and sparse vectors


class TestFlagM3EmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[FlagM3Embeddings]:
        return FlagM3Embeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model_name": standard_m3(), "devices": "cpu"}


class TestFlagM3EmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[FlagM3Embeddings]:
        return FlagM3Embeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model_name": standard_m3(), "devices": "cpu"}


def test_a_setting_assigned_later_is_the_one_the_model_runs_with(m3_path: str) -> None:
    dense = FlagM3Embeddings(model_name=m3_path, devices="cpu")
    dense.query_instruction_for_retrieval = "Represent: "
    model = BGEM3FlagModel(m3_path, devices="cpu", query_instruction_for_retrieval="Represent: ")
    np.testing.assert_allclose(dense.embed_query("pandas"), model.encode_queries("pandas")["dense_vecs"], atol=1e-6)
    dense.truncate_dim = 8
    assert len(dense.embed_query("pandas")) == 8 and dense.client.truncate_dim == 8
    with pytest.raises(ValueError, match="batch_size"):
        dense.batch_size = -3
    assert dense.batch_size == dense.client.batch_size > 0  # refused: the old value stays, field and model agree
    embeddings = FlagEmbeddings(model_name=m3_path, devices="cpu")
    embeddings.query_instruction_for_retrieval = "Q: "
    assert embeddings.client.query_instruction_for_retrieval == "Q: "


def test_milvus_shape_refuses_a_text_without_lexical_weights_naming_it(m3_path: str) -> None:
    pytest.importorskip("langchain_milvus", reason="needs langchain-milvus (the milvus extra)")
    milvus = FlagSparseEmbeddings(model_name=m3_path, devices="cpu").milvus()
    assert milvus.embed_documents(["Giant pandas eat bamboo."])[0]
    with pytest.raises(ValueError, match=r"texts\[1\] \(''\) has no BGE-M3 lexical weight"):
        milvus.embed_documents(["Giant pandas eat bamboo.", ""])


def test_a_model_name_assigned_later_is_the_model_that_runs(m3_path: str, model_path: str) -> None:
    embeddings = FlagEmbeddings(model_name=model_path, devices="cpu")
    before = embeddings.client
    embeddings.model_name = m3_path
    assert embeddings.client is not before and embeddings.client.model_name_or_path == m3_path
