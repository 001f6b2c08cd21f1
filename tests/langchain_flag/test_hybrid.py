"""LangChain's BGE-M3 classes: the hybrid retriever (flag_core's HybridIndex results, per-mode scores, async,
save/load, serialization, LangChain's retriever suite) and sparse embeddings for langchain-qdrant."""

from __future__ import annotations

import asyncio
import copy
import functools
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.load import dumpd, dumps, loads
from langchain_tests.integration_tests import RetrieversIntegrationTests

from flag_core import BGEM3FlagModel, IndexFileError
from flag_core.retrieval import HybridIndex
from flag_core.testing import build_test_m3
from langchain_flag import FlagHybridRetriever, FlagSparseEmbeddings

TEXTS = [
    "The giant panda is a bear species endemic to China; it eats bamboo.",
    "Paris is the capital and most populous city of France.",
    "json.loads parses a JSON document into a Python object.",
    "Red pandas live in the eastern Himalayas and eat bamboo too.",
    "subprocess.run runs a command and waits for it to finish.",
]


@functools.cache
def standard_m3() -> str:
    """The golden M3 checkpoint for LangChain's suite (its properties cannot take fixtures)."""
    return build_test_m3(Path(tempfile.mkdtemp()) / "m3")


def test_results_and_scores_equal_the_hybrid_index(m3_path: str) -> None:
    retriever = FlagHybridRetriever.from_texts(TEXTS, model_name=m3_path, devices="cpu", k=3,
                                               metadatas=[{"n": i} for i in range(len(TEXTS))])
    index = HybridIndex(BGEM3FlagModel(m3_path, devices="cpu"))
    index.add(TEXTS)
    for mode in ("hybrid", "dense", "sparse", "colbert"):
        docs = retriever.invoke("what do pandas eat?", mode=mode)
        hits = index.search("what do pandas eat?", k=3, mode=mode)
        assert [d.page_content for d in docs] == [h.text for h in hits]
        assert [d.metadata["relevance_score"] for d in docs] == pytest.approx([h.score for h in hits], abs=1e-6)
        assert docs[0].metadata["n"] == TEXTS.index(docs[0].page_content)
    doc = retriever.invoke("what do pandas eat?")[0]
    assert {"dense_score", "sparse_score", "colbert_score", "hybrid_score"} <= set(doc.metadata)
    assert len(retriever.invoke("pandas", k=1)) == 1
    assert len(asyncio.run(retriever.ainvoke("pandas"))) == 3


def test_save_load_serialize_and_errors(m3_path: str, tmp_path: Path) -> None:
    retriever = FlagHybridRetriever.from_texts(TEXTS, model_name=m3_path, devices="cpu", k=2, weights=(1, 1, 1))
    assert dumpd(retriever)["type"] == "not_implemented"  # documents only in memory
    retriever.save(tmp_path / "h.flag")
    loaded = FlagHybridRetriever.load(tmp_path / "h.flag", model_name=m3_path, devices="cpu", k=2, weights=(1, 1, 1))
    assert loaded.invoke("Paris") == retriever.invoke("Paris")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = loads(dumps(retriever), valid_namespaces=["langchain_flag"], allowed_objects=[FlagHybridRetriever])
    assert back.invoke("Paris") == retriever.invoke("Paris")
    with pytest.raises(IndexFileError, match="passage_max_length"):
        FlagHybridRetriever.load(tmp_path / "h.flag", model_name=m3_path, devices="cpu", passage_max_length=64)
    with pytest.raises(ValueError, match="weights"):
        FlagHybridRetriever(model_name=m3_path, weights=(0, 0, 0))
    with pytest.raises(ValueError, match="top_k"):
        FlagHybridRetriever(model_name=m3_path, top_k=3)
    with pytest.raises(TypeError, match=r"documents\[0\]"):
        retriever.add_documents(["text"])  # type: ignore[list-item]


def test_sparse_embeddings_are_qdrant_sparse_vectors(m3_path: str) -> None:
    sparse = FlagSparseEmbeddings(model_name=m3_path, devices="cpu")
    model = BGEM3FlagModel(m3_path, devices="cpu")
    expected = model.encode_corpus(TEXTS[:2], return_dense=False, return_sparse=True)["lexical_weights"]
    for vector, weights in zip(sparse.embed_documents(TEXTS[:2]), expected, strict=True):
        assert vector.indices == sorted(int(t) for t in weights) and len(set(vector.indices)) == len(vector.indices)
        assert dict(zip(vector.indices, vector.values, strict=True)) == pytest.approx(
            {int(t): w for t, w in weights.items()})
    query = sparse.embed_query("what do pandas eat?")
    assert query.indices and all(v > 0 for v in query.values)
    assert asyncio.run(sparse.aembed_query("what do pandas eat?")) == query
    with pytest.raises(TypeError, match="one str"):
        sparse.embed_query(["a"])  # type: ignore[arg-type]


class TestFlagHybridRetrieverIntegration(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> Any:
        return FlagHybridRetriever.from_texts

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"texts": TEXTS, "model_name": standard_m3(), "devices": "cpu"}

    @property
    def retriever_query_example(self) -> str:
        return "what do pandas eat?"


def test_documents_keep_their_ids(m3_path: str) -> None:
    retriever = FlagHybridRetriever.from_documents(
        [Document(page_content=t, id=f"d{i}") for i, t in enumerate(TEXTS)], model_name=m3_path, devices="cpu", k=1)
    assert retriever.invoke("Paris")[0].id == "d1"


@pytest.mark.parametrize(
    "clone", [copy.deepcopy, lambda obj: pickle.loads(pickle.dumps(obj))], ids=["deepcopy", "pickle"]
)
def test_copies_keep_the_documents_and_share_the_model(m3_path: str, clone: Any) -> None:
    retriever = FlagHybridRetriever.from_texts(TEXTS, model_name=m3_path, devices="cpu", k=2, mode="sparse+dense")
    copied = clone(retriever)
    assert copied._index.model is retriever._index.model  # rebuilt through build_m3: the same loaded model
    assert copied.invoke("what do pandas eat?") == retriever.invoke("what do pandas eat?")
    assert copied.mode == "sparse+dense" and copied.k == 2
    copied.add_documents([Document(page_content="Pandas sleep a lot.")])
    assert (len(copied), len(retriever)) == (len(TEXTS) + 1, len(TEXTS))  # a copy, not a view


def test_index_path_is_absolute_so_loads_works_from_anywhere(
    m3_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    retriever = FlagHybridRetriever.from_texts(TEXTS, model_name=m3_path, devices="cpu", k=2)
    retriever.save("h.flag")  # relative to the working directory
    assert Path(retriever.index_path or "").is_absolute()
    assert Path(retriever.index_path or "").resolve() == (tmp_path / "h.flag").resolve()
    text = dumps(retriever)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = loads(text, valid_namespaces=["langchain_flag"], allowed_objects=[FlagHybridRetriever])
    assert back.invoke("Paris") == retriever.invoke("Paris")
    monkeypatch.chdir(tmp_path)
    given = FlagHybridRetriever(model_name=m3_path, devices="cpu", index_path="h.flag")  # relative at construction
    assert Path(given.index_path or "").is_absolute() and len(given) == len(TEXTS)


def test_crafted_payloads_fail_at_load_not_at_search(m3_path: str, tmp_path: Path) -> None:
    import json
    import zipfile

    from flag_core.retrieval.archive import write_archive

    retriever = FlagHybridRetriever.from_texts(TEXTS[:2], model_name=m3_path, devices="cpu", k=2)
    retriever.save(tmp_path / "h.flag")
    with zipfile.ZipFile(tmp_path / "h.flag") as archive:
        manifest = json.loads(archive.read("manifest.json"))
        parts = {name: archive.read(name) for name in archive.namelist() if name != "manifest.json"}
    del manifest["sha256"]
    rows = [json.loads(line) for line in parts["payloads.jsonl"].decode().split("\n") if line]
    for bad in ({"metadata": ["not", "a", "dict"], "id": None}, {"metadata": {}, "id": 5}):
        rows[1]["payload"] = bad
        parts["payloads.jsonl"] = "".join(json.dumps(row) + "\n" for row in rows).encode()
        write_archive(tmp_path / "crafted.flag", manifest, parts)
        with pytest.raises(IndexFileError, match=r"crafted\.flag: entry 1"):
            FlagHybridRetriever.load(tmp_path / "crafted.flag", model_name=m3_path, devices="cpu")


def test_dumpd_loads_gives_an_equal_retriever_sharing_the_model(m3_path: str, tmp_path: Path) -> None:
    retriever = FlagHybridRetriever.from_texts(TEXTS, model_name=m3_path, devices="cpu", k=2, mode="sparse+dense",
                                               weights=(1, 1, 0), candidates=3, passage_max_length=128)
    assert copy.deepcopy(retriever) == retriever
    retriever.save(tmp_path / "h.flag")
    data = dumpd(retriever)
    assert data["type"] == "constructor" and data["kwargs"]["index_path"] == str(tmp_path / "h.flag")
    assert data["kwargs"]["passage_max_length"] == 128 and data["kwargs"]["mode"] == "sparse+dense"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = loads(dumps(retriever), valid_namespaces=["langchain_flag"], allowed_objects=[FlagHybridRetriever])
    assert back == retriever and back._index.model is retriever._index.model
    assert back.invoke("Paris") == retriever.invoke("Paris")
    back.add_documents([Document(page_content="Pandas sleep a lot.")])
    assert back != retriever and dumpd(back)["type"] == "not_implemented"


def test_per_call_k_and_mode_are_checked_before_encoding(m3_path: str) -> None:
    retriever = FlagHybridRetriever.from_texts(TEXTS, model_name=m3_path, devices="cpu", k=2)
    index = HybridIndex(BGEM3FlagModel(m3_path, devices="cpu"))
    index.add(TEXTS)
    docs = retriever.invoke("what do pandas eat?", k=3, mode="sparse+dense")
    assert [d.page_content for d in docs] == [h.text for h in index.search("what do pandas eat?", 3, "sparse+dense")]
    assert len(retriever.invoke("pandas")) == 2 and retriever.mode == "hybrid"  # per call only
    with pytest.raises(ValueError, match="mode must be one of"):
        retriever.invoke("pandas", mode="bm25")
    with pytest.raises(ValueError, match="k must be a positive int"):
        retriever.invoke("pandas", k=0)
    with pytest.raises(TypeError, match="k must be a positive int"):
        retriever.invoke("pandas", k=True)


def test_flagembeddings_mode_name_is_an_alias_of_hybrid(m3_path: str) -> None:
    retriever = FlagHybridRetriever.from_texts(TEXTS, model_name=m3_path, devices="cpu", k=2,
                                               mode="colbert+sparse+dense")
    assert retriever.mode == "hybrid"  # kept by its canonical name
    assert retriever.invoke("pandas", mode="colbert+sparse+dense") == retriever.invoke("pandas", mode="hybrid")


def test_a_model_setting_assigned_to_a_built_retriever_is_refused(m3_path: str) -> None:
    retriever = FlagHybridRetriever.from_texts(TEXTS, model_name=m3_path, devices="cpu")
    with pytest.raises(AttributeError, match="passage_max_length decides the model"):
        retriever.passage_max_length = 8
    assert retriever.passage_max_length != 8
    retriever.k = 2  # a search setting: read at every call
    assert len(retriever.invoke("what do pandas eat?")) == 2


def test_colbert_storage_is_a_setting_kept_in_the_file(m3_path: str, tmp_path: Path) -> None:
    """``colbert_storage`` goes to the index as ``candidates`` and ``weights`` go to its searches; the file keeps
    the kind (None: the file's), a kind given converts it, and serialization carries the field."""
    retriever = FlagHybridRetriever.from_texts(TEXTS, model_name=m3_path, devices="cpu", k=2, colbert_storage="int8")
    assert retriever._index.colbert_storage == "int8"
    assert FlagHybridRetriever(model_name=m3_path, devices="cpu")._index.colbert_storage == "float16"
    retriever.save(tmp_path / "h.flag")
    again = FlagHybridRetriever(model_name=m3_path, devices="cpu", k=2, index_path=tmp_path / "h.flag")
    assert again.colbert_storage is None and again._index.colbert_storage == "int8"
    assert again.invoke("pandas") == retriever.invoke("pandas")
    converted = FlagHybridRetriever.load(tmp_path / "h.flag", model_name=m3_path, devices="cpu",
                                         colbert_storage="binary")
    assert converted._index.colbert_storage == "binary"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = loads(dumps(retriever), valid_namespaces=["langchain_flag"], allowed_objects=[FlagHybridRetriever])
    assert back == retriever and back.colbert_storage == "int8" and back._index.colbert_storage == "int8"
    assert copy.deepcopy(retriever)._index.colbert_storage == "int8"
    assert pickle.loads(pickle.dumps(retriever))._index.colbert_storage == "int8"
    with pytest.raises(ValueError, match="colbert_storage must be one of"):
        FlagHybridRetriever(model_name=m3_path, devices="cpu", colbert_storage="int2")


def test_colbert_storage_of_a_built_retriever_is_not_assigned_silently(m3_path: str) -> None:
    retriever = FlagHybridRetriever.from_texts(TEXTS[:2], model_name=m3_path, devices="cpu")
    with pytest.raises(AttributeError, match="colbert_storage decides"):
        retriever.colbert_storage = "int8"
