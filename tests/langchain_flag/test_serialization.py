"""LangChain serialization: dumpd/loads round-trips settings (the retriever's index by path), and deepcopy and
pickle give objects that share the loaded model instead of copying weights."""

from __future__ import annotations

import copy
import pickle
import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain_core.load import dumpd, dumps, loads

from langchain_flag import FlagEmbeddings, FlagReranker, FlagRetriever

TEXTS = ["The giant panda is a bear.", "Pandas eat bamboo.", "Paris is in France.", "json.loads parses JSON."]
ALLOWED = [FlagEmbeddings, FlagReranker, FlagRetriever]


def roundtrip(obj: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # loads is beta and warns about its allowed_objects default
        return loads(dumps(obj), valid_namespaces=["langchain_flag"], allowed_objects=ALLOWED)


def test_embeddings_and_reranker_roundtrip(model_path: str, reranker_path: str) -> None:
    embeddings = FlagEmbeddings(model_name=model_path, devices="cpu", query_instruction_for_retrieval="q: ",
                                encode_kwargs={"batch_size": 8})
    back = roundtrip(embeddings)
    assert isinstance(back, FlagEmbeddings) and back == embeddings and back.client is embeddings.client
    assert back.embed_query("pandas") == embeddings.embed_query("pandas")
    reranker = FlagReranker(model_name=reranker_path, devices="cpu", top_n=2, normalize=True)
    again = roundtrip(reranker)
    assert again == reranker and again.client is reranker.client
    assert dumpd(reranker)["kwargs"]["normalize"] is True


def test_retriever_roundtrips_by_path_never_inline(model_path: str, reranker_path: str, tmp_path: Path) -> None:
    embeddings = FlagEmbeddings(model_name=model_path, devices="cpu")
    retriever = FlagRetriever.from_texts(TEXTS, embeddings, k=3, top_n=2,
                                         reranker=FlagReranker(model_name=reranker_path, devices="cpu"))
    assert dumpd(retriever)["type"] == "not_implemented"  # its documents are only in memory
    retriever.save(tmp_path / "index.flag")
    data = dumpd(retriever)
    assert data["type"] == "constructor" and data["kwargs"]["index_path"] == str(tmp_path / "index.flag")
    assert "Paris" not in dumps(retriever)  # the index is referred to, not inlined
    back = roundtrip(retriever)
    assert [d.page_content for d in back.invoke("pandas")] == [d.page_content for d in retriever.invoke("pandas")]
    retriever.add_documents([])
    assert dumpd(retriever)["type"] == "constructor"
    from langchain_core.documents import Document

    retriever.add_documents([Document(page_content="added after saving")])
    assert dumpd(retriever)["type"] == "not_implemented"  # the file no longer holds everything


@pytest.mark.parametrize(
    "clone", [copy.deepcopy, lambda obj: pickle.loads(pickle.dumps(obj))], ids=["deepcopy", "pickle"]
)
def test_copies_share_the_model(model_path: str, reranker_path: str, clone: Any) -> None:
    embeddings = FlagEmbeddings(model_name=model_path, devices=["cpu"], query_instruction_for_retrieval="q: ")
    copied = clone(embeddings)
    assert copied == embeddings and copied.client is embeddings.client
    assert copied.embed_query("pandas") == embeddings.embed_query("pandas")
    reranker = FlagReranker(model_name=reranker_path, devices="cpu", top_n=1)
    other = clone(reranker)
    assert other == reranker and other.client is reranker.client
    assert other.score([("q", "p")]) == reranker.score([("q", "p")])


def test_path_model_names_and_numpy_integers(
    model_path: str, reranker_path: str, m3_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model name may be any os.PathLike (kept as a str: the same shared model, the same dumps); counts may be
    numpy integers, per call too; a relative index_path is kept absolute."""
    import numpy as np
    from langchain_core.documents import Document

    from langchain_flag import FlagHybridRetriever, FlagSparseEmbeddings

    embeddings = FlagEmbeddings(model_name=Path(model_path), devices="cpu", batch_size=np.int64(8))
    assert embeddings.model_name == model_path and embeddings == FlagEmbeddings(model_name=model_path, devices="cpu",
                                                                                batch_size=8)
    assert embeddings.client is FlagEmbeddings(model_name=model_path, devices="cpu", batch_size=8).client
    assert dumpd(embeddings)["kwargs"]["model_name"] == model_path
    reranker = FlagReranker(model_name=Path(reranker_path), devices="cpu", top_n=np.int64(2))
    assert reranker.model_name == reranker_path
    docs = [Document(page_content=t) for t in TEXTS]
    assert len(reranker.compress_documents(docs, "pandas")) == 2
    assert len(reranker.rerank_documents(docs, "pandas", top_n=np.int64(1))) == 1
    assert FlagSparseEmbeddings(model_name=Path(m3_path), devices="cpu").model_name == m3_path
    hybrid = FlagHybridRetriever.from_texts(TEXTS, model_name=Path(m3_path), devices="cpu", k=np.int64(2),
                                            candidates=np.int64(3))
    assert hybrid.model_name == m3_path and len(hybrid.invoke("pandas")) == 2
    assert len(hybrid.invoke("pandas", k=np.int64(1))) == 1
    retriever = FlagRetriever.from_texts(TEXTS, embeddings, k=np.int64(3), reranker=reranker, top_n=np.int64(2))
    assert len(retriever.invoke("pandas")) == 2
    assert len(retriever.invoke("pandas", k=np.int64(2), top_n=np.int64(1))) == 1
    plain = FlagRetriever.from_texts(TEXTS, embeddings)
    assert len(plain.invoke("pandas", k=np.int64(2))) == 2
    monkeypatch.chdir(tmp_path)
    plain.save("dense.flag")
    assert Path(plain.index_path or "").is_absolute()
    text = dumps(plain)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert [d.page_content for d in roundtrip(plain).invoke("pandas")] == [d.page_content for d in
                                                                           plain.invoke("pandas")]
    assert text == dumps(plain)
