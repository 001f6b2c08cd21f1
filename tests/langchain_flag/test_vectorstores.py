"""LangChain vector stores on flag_core's indexes (FlagVectorStore, FlagHybridVectorStore): LangChain's standard
vector-store suite; ids, upserts, deletes and gets; filters (flag_core's language and callables) exact against brute
force, also after save and load; maximal marginal relevance; the retrievers' files; copies."""

from __future__ import annotations

import asyncio
import copy
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.load import dumpd
from langchain_core.vectorstores import InMemoryVectorStore, VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from flag_core import IndexFileError
from flag_core.retrieval import HybridIndex
from langchain_flag import (
    FlagEmbeddings,
    FlagHybridRetriever,
    FlagHybridVectorStore,
    FlagM3Embeddings,
    FlagRetriever,
    FlagVectorStore,
)

TEXTS = [
    "The giant panda is a bear species endemic to China; it eats bamboo.",
    "Paris is the capital and most populous city of France.",
    "json.loads parses a JSON document into a Python object.",
    "Red pandas live in the eastern Himalayas and eat bamboo too.",
    "subprocess.run runs a command and waits for it to finish.",
    "Polar bears hunt seals on the Arctic sea ice.",
    "The Eiffel Tower was finished in 1889 for the World's Fair in Paris.",
    "asyncio.gather runs awaitables concurrently.",
]
TOPICS = ["bears", "cities", "python", "bears", "python", "bears", "cities", "python"]
METADATAS = [{"n": n, "topic": topic, "year": 2015 + n, "tags": [topic, f"t{n % 3}"]}
             for n, topic in enumerate(TOPICS)]
IDS = [f"doc-{n}" for n in range(len(TEXTS))]
OLD = Path(__file__).parents[1] / "fixtures" / "indexes"  # files written by flagstack 967415d

# (filter in flag_core's language, the same as a Python test of the metadata)
FILTERS: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"topic": "bears"}, lambda m: m["topic"] == "bears"),
    ({"topic": {"$in": ["cities", "python"]}}, lambda m: m["topic"] in ("cities", "python")),
    ({"year": {"$gte": 2017, "$lt": 2021}}, lambda m: 2017 <= m["year"] < 2021),
    ({"$or": [{"n": {"$lte": 1}}, {"tags": {"$contains": "t2"}}]}, lambda m: m["n"] <= 1 or "t2" in m["tags"]),
    ({"$not": {"topic": "python"}, "year": {"$ne": 2015}}, lambda m: m["topic"] != "python" and m["year"] != 2015),
    ({"topic": "no such topic"}, lambda m: False),
]
QUERIES = ["what do pandas eat?", "capital of France", "run a command"]


# ---- LangChain's standard suite ---------------------------------------------------------------------------------


class TestFlagVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> VectorStore:
        return FlagVectorStore(self.get_embeddings())


class TestFlagHybridVectorStoreStandard(VectorStoreIntegrationTests):
    """The hybrid store encodes with BGE-M3 itself (the suite's embeddings are not used): the golden test checkpoint."""

    @pytest.fixture
    def vectorstore(self, m3_path: str) -> VectorStore:
        return FlagHybridVectorStore(model_name=m3_path, devices="cpu")


# ---- dense: the store itself -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embeddings(model_path: str) -> FlagEmbeddings:
    return FlagEmbeddings(model_name=model_path, devices="cpu")


@pytest.fixture(scope="module")
def vectors(embeddings: FlagEmbeddings) -> np.ndarray:
    return np.array(embeddings.embed_documents(TEXTS))


def full_store(embeddings: FlagEmbeddings) -> FlagVectorStore:
    return FlagVectorStore.from_texts(TEXTS, embeddings, METADATAS, ids=IDS)


def brute_force(
    query: np.ndarray, vectors: np.ndarray, keep: Callable[[dict[str, Any]], bool], k: int,
    ids: list[str] | None = None,
) -> list[tuple[str, float]]:
    """The ``k`` best (id, score) by inner product among the documents ``keep`` accepts (ties: lower position)."""
    ids = ids or IDS
    scores = vectors @ query
    allowed = [i for i, metadata in enumerate(METADATAS) if keep(metadata) and IDS[i] in ids]
    ranked = sorted(allowed, key=lambda i: (-scores[i], i))[:k]
    return [(IDS[i], float(scores[i])) for i in ranked]


def found(pairs: list[tuple[Document, float]]) -> list[tuple[str | None, float]]:
    return [(doc.id, score) for doc, score in pairs]


def assert_same(got: list[tuple[str | None, float]], expected: list[tuple[str, float]], tolerance: float) -> None:
    """The same ids in the same order, with scores equal to ``tolerance``."""
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=tolerance)


def test_filtered_searches_equal_brute_force_over_the_matching_documents(
    embeddings: FlagEmbeddings, vectors: np.ndarray,
) -> None:
    store = full_store(embeddings)
    for query in QUERIES:
        q = np.array(embeddings.embed_query(query))
        for spec, keep in [*FILTERS, (None, lambda m: True)]:
            for k in (1, 3, len(TEXTS)):
                expected = brute_force(q, vectors, keep, k)
                by_mapping = found(store.similarity_search_with_score(query, k=k, filter=spec))
                assert_same(by_mapping, expected, 1e-5)
                by_callable = found(store.similarity_search_with_score(
                    query, k=k, filter=lambda doc, keep=keep: keep(doc.metadata)))
                assert by_callable == by_mapping
                assert_same(found(store.similarity_search_with_score_by_vector(q.tolist(), k=k, filter=spec)),
                            expected, 1e-5)


def test_a_callable_filter_sees_each_document_whole_and_as_a_copy(embeddings: FlagEmbeddings) -> None:
    store = full_store(embeddings)
    seen: list[Document] = []

    def keep(doc: Document) -> bool:
        seen.append(doc)
        doc.metadata["topic"] = "edited by the filter"
        return doc.id in ("doc-1", "doc-6") or "JSON" in doc.page_content

    docs = store.similarity_search("Paris", k=5, filter=keep)
    assert sorted(d.id for d in docs if d.id) == ["doc-1", "doc-2", "doc-6"]
    assert {d.id: d.page_content for d in seen} == dict(zip(IDS, TEXTS, strict=True))
    assert all(d.metadata["topic"] == TOPICS[IDS.index(d.id or "")] for d in docs)  # the store's stay
    with pytest.raises(TypeError, match="must return True or False"):
        store.similarity_search("Paris", filter=lambda doc: doc.metadata.get("topic"))  # type: ignore[arg-type,return-value]


def test_bad_filters_are_named_before_anything_is_embedded() -> None:
    class Counting(DeterministicFakeEmbedding):
        queries: int = 0

        def embed_query(self, text: str) -> list[float]:
            self.queries += 1
            return super().embed_query(text)

    counting = Counting(size=6)
    store = FlagVectorStore.from_texts(TEXTS, counting, METADATAS, ids=IDS)
    for search in (store.similarity_search, store.max_marginal_relevance_search):
        with pytest.raises(ValueError, match=r"unknown operator '\$regex'"):
            search("pandas", filter={"topic": {"$regex": "b.*"}})
        with pytest.raises(ValueError, match=r"unknown operator '\$nor'"):
            search("pandas", filter={"$nor": [{"topic": "bears"}]})
        with pytest.raises(TypeError, match="takes a list"):
            search("pandas", filter={"topic": {"$in": "bears"}})
        with pytest.raises(TypeError, match="filter must be a mapping"):
            search("pandas", filter="topic == bears")  # type: ignore[arg-type]
    assert counting.queries == 0


def test_upsert_delete_and_get_by_id(embeddings: FlagEmbeddings, vectors: np.ndarray) -> None:
    store = full_store(embeddings)
    assert store.ids == IDS and len(store) == len(TEXTS) and "doc-3" in store
    # adding under an id the store holds replaces that document (its text, metadata and vector)
    assert store.add_texts(["Pandas sleep in trees."], [{"topic": "bears", "n": 3, "year": 2030, "tags": []}],
                           ids=["doc-3"]) == ["doc-3"]
    assert len(store) == len(TEXTS)
    assert store.get_by_ids(["doc-3"]) == [Document(id="doc-3", page_content="Pandas sleep in trees.",
                                                    metadata={"topic": "bears", "n": 3, "year": 2030, "tags": []})]
    assert store.similarity_search("Pandas sleep in trees.", k=1, filter={"year": 2030})[0].id == "doc-3"
    assert store.similarity_search("anything", k=8, filter={"year": 2018}) == []  # the old doc-3 is gone
    # Document.id is the id unless ids= is given; None makes one
    made = store.add_documents([Document(page_content="Koalas eat eucalyptus.", id="koala"),
                                Document(page_content="Sloths are slow.")])
    assert made[0] == "koala" and len(made[1]) == 36 and made[1] in store
    assert store.add_documents([Document(page_content="x", id="ignored")], ids=["given"]) == ["given"]
    # get_by_ids: the order given, missing ids and repeats left out
    assert [d.id for d in store.get_by_ids(["koala", "missing", "doc-0", "koala"])] == ["koala", "doc-0"]
    # delete: missing ids are passed over, a str is a TypeError, None is a ValueError
    assert store.delete(["doc-0", "missing", "doc-0"]) is True
    assert "doc-0" not in store and len(store) == len(TEXTS) + 2
    with pytest.raises(TypeError, match="wrap one id in a list"):
        store.delete("doc-1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="give the ids to delete"):
        store.delete()
    assert "doc-1" in store
    with pytest.raises(TypeError, match="wrap one id in a list"):
        store.get_by_ids("doc-1")
    # ids checked before anything is embedded or stored
    before = store.revision
    with pytest.raises(ValueError, match="given twice"):
        store.add_texts(["a", "b"], ids=["same", "same"])
    with pytest.raises(ValueError, match="given twice"):
        store.add_documents([Document(page_content="a", id="same"), Document(page_content="b", id="same")])
    with pytest.raises(ValueError, match="2 entries but 1 ids"):
        store.add_texts(["a", "b"], ids=["one"])
    with pytest.raises(TypeError, match="payload 0 cannot be saved as JSON"):
        store.add_texts(["a"], [{"when": object()}])
    with pytest.raises(TypeError, match=r"documents\[0\] is str"):
        store.add_documents(["text"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="unexpected keyword arguments: upsert"):
        store.add_texts(["a"], upsert=True)
    assert store.revision == before and len(store) == len(TEXTS) + 2
    # what remains is searched exactly: brute force over the remaining original documents
    q = np.array(embeddings.embed_query("bears"))
    remaining = [i for i in IDS if i in store and i != "doc-3"]
    hits = store.similarity_search_with_score("bears", k=3, filter={"n": {"$in": [1, 2, 4, 5, 6, 7]}})
    assert_same(found(hits), brute_force(q, vectors, lambda m: m["n"] != 3, 3, remaining), 1e-5)


def test_documents_are_copies(embeddings: FlagEmbeddings) -> None:
    metadata = {"tags": ["bear"], "source": {"page": 1}}
    document = Document(page_content=TEXTS[0], metadata=metadata, id="panda")
    store = FlagVectorStore(embeddings)
    store.add_documents([document])
    assert document == Document(page_content=TEXTS[0], metadata={"tags": ["bear"], "source": {"page": 1}},
                                id="panda")  # the caller's document is not changed
    metadata["tags"].append("added by the caller after adding")
    for fetch in (lambda: store.similarity_search("panda", k=1), lambda: store.get_by_ids(["panda"]),
                  lambda: store.max_marginal_relevance_search("panda", k=1),
                  lambda: [doc for doc, _ in store.similarity_search_with_relevance_scores("panda", k=1)]):
        doc = fetch()[0]
        assert doc.metadata == {"tags": ["bear"], "source": {"page": 1}}
        doc.metadata["tags"].append("edited result")
        doc.metadata["source"]["page"] = 99
    assert store.get_by_ids(["panda"])[0].metadata == {"tags": ["bear"], "source": {"page": 1}}


def test_save_and_load_keep_ids_filters_and_edits(embeddings: FlagEmbeddings, model_path: str,
                                                  tmp_path: Path) -> None:
    store = full_store(embeddings)
    store.delete(["doc-2"])
    store.add_texts(["Pandas sleep in trees."], [{"topic": "bears", "n": 3, "year": 2030, "tags": []}], ids=["doc-3"])
    store.save(tmp_path / "s.flag")
    loaded = FlagVectorStore.load(tmp_path / "s.flag", embeddings)
    assert loaded.ids == store.ids and loaded.get_by_ids(loaded.ids) == store.get_by_ids(store.ids)
    for query in QUERIES:
        for spec, _ in FILTERS:
            assert found(loaded.similarity_search_with_score(query, k=4, filter=spec)) == found(
                store.similarity_search_with_score(query, k=4, filter=spec))
    loaded.delete(["doc-0"])
    loaded.add_texts(["Another bear."], [{"topic": "bears", "n": 9, "year": 2040, "tags": []}], ids=["doc-9"])
    loaded.save(tmp_path / "s.flag")
    again = FlagVectorStore.load(tmp_path / "s.flag", embeddings)
    assert again.ids == loaded.ids and "doc-0" not in again
    assert [d.id for d in again.similarity_search("bear", k=8, filter={"topic": "bears"})] == [
        d.id for d in loaded.similarity_search("bear", k=8, filter={"topic": "bears"})]
    # a damaged or mismatched file is an IndexFileError naming it
    data = (tmp_path / "s.flag").read_bytes()
    (tmp_path / "cut.flag").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError, match=r"cut\.flag"):
        FlagVectorStore.load(tmp_path / "cut.flag", embeddings)
    with pytest.raises(IndexFileError, match="pooling_method"):
        FlagVectorStore.load(tmp_path / "s.flag", FlagEmbeddings(model_name=model_path, devices="cpu",
                                                                 pooling_method="cls"))
    with pytest.raises(IndexFileError, match="no index file"):
        FlagVectorStore.load(tmp_path / "missing.flag", embeddings)


def test_the_retrievers_files_and_the_stores_are_one_format(embeddings: FlagEmbeddings, tmp_path: Path) -> None:
    retriever = FlagRetriever.from_texts(TEXTS, embeddings, metadatas=METADATAS, ids=IDS, k=3)
    retriever.save(tmp_path / "r.flag")
    store = FlagVectorStore.load(tmp_path / "r.flag", embeddings)
    assert store.ids == IDS and store.get_by_ids(["doc-1"])[0].metadata == METADATAS[1]
    assert [d.id for d in store.similarity_search("pandas", k=3)] == [d.id for d in retriever.invoke("pandas")]
    store.delete(["doc-0"])
    store.save(tmp_path / "s.flag")
    back = FlagRetriever.load(tmp_path / "s.flag", embeddings, k=3)
    assert len(back) == len(TEXTS) - 1 and "doc-0" not in {d.id for d in back.invoke("giant panda", k=8)}
    # the files of 967415d (no ids): the ids their documents had, new ones where they had none
    old = FlagVectorStore.load(OLD / "langchain-dense-967415d.flag", embeddings)
    assert old.ids[:2] == ["lc-0", "lc-1"] and old.ids[3] == "lc-3" and len(old.ids[2]) == 36
    assert [d.page_content for d in old.similarity_search("bamboo", k=4, filter={"topic": "bears"})] == [
        d.page_content for d in old.similarity_search("bamboo", k=4) if d.metadata["topic"] == "bears"]
    with pytest.raises(IndexFileError, match=r"written by llamaindex_flag\.FlagRetriever"):
        FlagVectorStore.load(OLD / "llamaindex-dense-967415d.flag", embeddings)


def test_maximal_marginal_relevance_is_langchains(embeddings: FlagEmbeddings) -> None:
    """The same picks as LangChain's InMemoryVectorStore (its cosine is our inner product for unit vectors)."""
    texts = [*TEXTS, "Giant pandas eat bamboo in China.", "The giant panda eats bamboo; it lives in China."]
    store = FlagVectorStore.from_texts(texts, embeddings)
    reference = InMemoryVectorStore(embedding=embeddings)
    reference.add_texts(texts)
    for query in ("what do giant pandas eat?", "Paris"):
        for lambda_mult in (0.0, 0.25, 0.5, 1.0):
            ours = store.max_marginal_relevance_search(query, k=3, fetch_k=6, lambda_mult=lambda_mult)
            theirs = reference.max_marginal_relevance_search(query, k=3, fetch_k=6, lambda_mult=lambda_mult)
            assert [d.page_content for d in ours] == [d.page_content for d in theirs], (query, lambda_mult)
    # similarity alone is the plain ranking; some diversity leaves out a near duplicate
    plain = [d.page_content for d in store.similarity_search("what do giant pandas eat?", k=3)]
    assert [d.page_content for d in store.max_marginal_relevance_search(
        "what do giant pandas eat?", k=3, fetch_k=10, lambda_mult=1.0)] == plain
    by_vector = store.max_marginal_relevance_search_by_vector(
        embeddings.embed_query("what do giant pandas eat?"), k=3, fetch_k=10, lambda_mult=1.0)
    assert [d.page_content for d in by_vector] == plain
    bears = store.max_marginal_relevance_search("what do giant pandas eat?", k=2, filter={"n": {"$exists": True}})
    assert bears == []  # from_texts without metadata: nothing has "n"
    with pytest.raises(ValueError, match="lambda_mult must be a number from 0 to 1"):
        store.max_marginal_relevance_search("pandas", lambda_mult=1.5)
    with pytest.raises(ValueError, match="fetch_k must be"):
        store.max_marginal_relevance_search("pandas", fetch_k=0)
    assert FlagVectorStore(embeddings).max_marginal_relevance_search("pandas") == []


def test_relevance_scores_retrievers_and_async(embeddings: FlagEmbeddings, vectors: np.ndarray) -> None:
    store = full_store(embeddings)
    scored = [(doc, (1 + score) / 2) for doc, score in store.similarity_search_with_score("pandas", k=8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all within LangChain's 0 to 1, though some cosines are below 0
        assert store.similarity_search_with_relevance_scores("pandas", k=8) == scored
    assert min(score for _, score in scored) < 0.5
    assert store.similarity_search_with_relevance_scores("pandas", k=8, score_threshold=scored[1][1]) == scored[:2]
    own = FlagVectorStore(embeddings, relevance_score_fn=lambda s: max(s, 0.0))
    own.add_texts(TEXTS[:2])
    assert own.similarity_search_with_relevance_scores(TEXTS[0], k=1)[0][1] == pytest.approx(1.0, abs=1e-5)
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"topic": "python"}})
    assert [d.id for d in retriever.invoke("run a command")] == [d.id for d in store.similarity_search(
        "run a command", k=2, filter={"topic": "python"})]
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 5})
    assert len(mmr.invoke("bears")) == 2

    async def run() -> None:
        assert await store.asimilarity_search("pandas", k=3, filter={"topic": "bears"}) == store.similarity_search(
            "pandas", k=3, filter={"topic": "bears"})
        assert await store.asimilarity_search_with_score("pandas", k=2) == store.similarity_search_with_score(
            "pandas", k=2)
        assert await store.amax_marginal_relevance_search("pandas", k=2) == store.max_marginal_relevance_search(
            "pandas", k=2)
        assert await store.aget_by_ids(["doc-1"]) == store.get_by_ids(["doc-1"])
        assert await store.aadd_texts(["Sloths are slow."], ids=["sloth"]) == ["sloth"]
        assert await store.adelete(["sloth"]) is True and "sloth" not in store
        other = await FlagVectorStore.afrom_texts(TEXTS[:2], embeddings, ids=IDS[:2])
        assert other.ids == IDS[:2]

    asyncio.run(run())


async def test_async_searches_do_not_block_the_loop(embeddings: FlagEmbeddings, ticks_while: Any) -> None:
    store = FlagVectorStore.from_texts(TEXTS * 20, embeddings)
    queries = ("pandas", "Paris", "json", "bears")
    results, ticks, elapsed = await ticks_while(asyncio.gather(*(store.asimilarity_search(q, k=3) for q in queries)))
    assert [len(r) for r in results] == [3] * 4
    assert ticks >= 3 and ticks >= elapsed / 0.005 * 0.2, (ticks, elapsed)


# ---- FlagRetriever over its store ----------------------------------------------------------------------------------


def test_the_retriever_searches_its_store_with_filters(embeddings: FlagEmbeddings) -> None:
    retriever = FlagRetriever.from_texts(TEXTS, embeddings, metadatas=METADATAS, ids=IDS, k=3)
    assert isinstance(retriever.store, FlagVectorStore)
    for spec, keep in FILTERS:
        docs = retriever.invoke("pandas", filter=spec)
        expected = retriever.store.similarity_search_with_score("pandas", k=3, filter=spec)
        assert [(d.id, d.metadata["retrieval_score"]) for d in docs] == found(expected)
        assert all(keep({k: v for k, v in d.metadata.items() if k != "retrieval_score"}) for d in docs)
    assert [d.id for d in retriever.invoke("pandas", filter=lambda doc: doc.id == "doc-4")] == ["doc-4"]
    retriever.store.delete(["doc-0"])  # the store is the retriever's index
    assert "doc-0" not in {d.id for d in retriever.invoke("giant panda", k=8)}
    assert retriever.add_documents([Document(page_content="Pandas sleep.", id="doc-3")]) == [len(TEXTS) - 2]
    assert retriever.invoke("Pandas sleep.", k=1)[0].page_content == "Pandas sleep."
    other = InMemoryVectorStore(embedding=embeddings)
    other.add_texts(TEXTS, METADATAS, ids=IDS)
    over = FlagRetriever(embeddings=embeddings, vectorstore=other, k=8)
    assert over.store is other
    assert {d.id for d in over.invoke("pandas", filter=lambda doc: doc.metadata["topic"] == "bears")} == {
        "doc-0", "doc-3", "doc-5"}


def test_the_retriever_knows_its_file_is_stale_after_a_delete_and_an_add(
    embeddings: FlagEmbeddings, tmp_path: Path,
) -> None:
    """Same size, other documents: the file no longer holds them (a size comparison said it did)."""
    retriever = FlagRetriever.from_texts(TEXTS, embeddings, ids=IDS)
    retriever.save(tmp_path / "r.flag")
    assert dumpd(retriever)["type"] == "constructor"
    retriever.store.delete(["doc-0"])
    retriever.add_documents([Document(page_content="Something else.", id="new")])
    assert len(retriever) == len(TEXTS) and dumpd(retriever)["type"] == "not_implemented"
    retriever.save(tmp_path / "r.flag")
    assert dumpd(retriever)["type"] == "constructor"
    retriever.store.delete(list(retriever.store.ids))  # empty, but the file holds documents
    assert dumpd(retriever)["type"] == "not_implemented"


# ---- hybrid ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hybrid(m3_path: str) -> FlagHybridVectorStore:
    return FlagHybridVectorStore.from_texts(TEXTS, None, METADATAS, ids=IDS, model_name=m3_path, devices="cpu",
                                            candidates=len(TEXTS))


def hits_of(store: FlagHybridVectorStore, query: str, **options: Any) -> list[tuple[str, float]]:
    return [(doc.page_content, round(score, 5)) for doc, score in store.similarity_search_with_score(query, **options)]


def test_hybrid_filters_equal_a_store_of_the_matching_documents(hybrid: FlagHybridVectorStore, m3_path: str) -> None:
    """With every document a candidate, a filtered search ranks as a store holding only the matching documents."""
    for spec, keep in FILTERS[:5]:
        matching = [i for i, metadata in enumerate(METADATAS) if keep(metadata)]
        alone = FlagHybridVectorStore.from_texts([TEXTS[i] for i in matching], None, [METADATAS[i] for i in matching],
                                                 model_name=m3_path, devices="cpu", candidates=len(TEXTS))
        for query in QUERIES:
            for mode in ("hybrid", "dense", "sparse", "colbert", "sparse+dense"):
                expected = hits_of(alone, query, k=3, mode=mode)
                assert hits_of(hybrid, query, k=3, mode=mode, filter=spec) == expected, (spec, query, mode)
                assert hits_of(hybrid, query, k=3, mode=mode,
                               filter=lambda doc, keep=keep: keep(doc.metadata)) == expected
    assert hybrid.similarity_search("pandas", filter=FILTERS[5][0]) == []
    with pytest.raises(ValueError, match=r"unknown operator '\$regex'"):
        hybrid.similarity_search("pandas", filter={"topic": {"$regex": "b"}})


def test_hybrid_store_is_the_hybrid_index_with_ids(hybrid: FlagHybridVectorStore, m3_path: str) -> None:
    index = HybridIndex(hybrid.index.model)
    index.add(TEXTS)
    for mode in ("hybrid", "dense", "sparse", "colbert"):
        assert hits_of(hybrid, "what do pandas eat?", k=4, mode=mode) == [
            (hit.text, round(hit.score, 5)) for hit in index.search("what do pandas eat?", k=4, mode=mode,
                                                                     candidates=len(TEXTS))]
    assert hits_of(hybrid, "pandas", k=3, weights=(1, 0, 0), mode="hybrid") == hits_of(hybrid, "pandas", k=3,
                                                                                         mode="dense")
    # by vector: the dense mode's ranking of that query
    vector = hybrid.embeddings.embed_query("what do pandas eat?")
    assert isinstance(hybrid.embeddings, FlagM3Embeddings) and hybrid.embeddings.model_name == m3_path
    by_vector = hybrid.similarity_search_with_score_by_vector(vector, k=4, filter={"topic": {"$ne": "python"}})
    assert [(d.page_content, round(s, 5)) for d, s in by_vector] == hits_of(
        hybrid, "what do pandas eat?", k=4, mode="dense", filter={"topic": {"$ne": "python"}})
    # maximal marginal relevance over the BGE-M3 dense vectors: similarity alone is the dense ranking
    plain = [d.page_content for d in hybrid.similarity_search("what do pandas eat?", k=3, mode="dense")]
    assert [d.page_content for d in hybrid.max_marginal_relevance_search(
        "what do pandas eat?", k=3, fetch_k=len(TEXTS), lambda_mult=1.0)] == plain
    assert [d.page_content for d in hybrid.max_marginal_relevance_search_by_vector(
        vector, k=3, fetch_k=len(TEXTS), lambda_mult=1.0)] == plain
    diverse = hybrid.max_marginal_relevance_search("pandas", k=3, fetch_k=6, lambda_mult=0.0, filter={"n": {"$lt": 6}})
    assert len({d.id for d in diverse}) == 3 and all((d.metadata["n"] < 6) for d in diverse)
    with pytest.raises(ValueError, match="mode"):
        hybrid.similarity_search("pandas", mode="bm25")
    with pytest.raises(ValueError, match="weights"):
        hybrid.similarity_search("pandas", weights=(0, 0, 0))
    with pytest.raises(TypeError, match="unexpected keyword arguments: top_k"):
        hybrid.similarity_search("pandas", top_k=3)


def test_hybrid_upsert_delete_save_load_and_the_retrievers_files(m3_path: str, tmp_path: Path) -> None:
    store = FlagHybridVectorStore.from_documents(
        [Document(page_content=t, metadata=m, id=i) for t, m, i in zip(TEXTS, METADATAS, IDS, strict=True)],
        model_name=m3_path, devices="cpu", mode="sparse+dense")
    store.add_texts(["Pandas sleep in trees."], [{"topic": "bears", "n": 3, "year": 2030}], ids=["doc-3"])
    store.delete(["doc-0", "missing"])
    assert len(store) == len(TEXTS) - 1 and store.ids[-1] == "doc-3"
    assert len(store.index.sparse) == len(store.index.colbert) == len(store)
    with pytest.raises(TypeError, match="wrap one id in a list"):
        store.delete("doc-1")  # type: ignore[arg-type]
    store.save(tmp_path / "h.flag")
    loaded = FlagHybridVectorStore.load(tmp_path / "h.flag", model_name=m3_path, devices="cpu", mode="sparse+dense")
    assert loaded == store and loaded.ids == store.ids
    for spec, _ in FILTERS:
        assert hits_of(loaded, "bamboo", k=4, filter=spec) == hits_of(store, "bamboo", k=4, filter=spec)
    # the retriever reads the store's file and the store the retriever's
    retriever = FlagHybridRetriever.load(tmp_path / "h.flag", model_name=m3_path, devices="cpu", k=4,
                                         mode="sparse+dense")
    assert [d.id for d in retriever.invoke("bamboo")] == [d.id for d in store.similarity_search("bamboo", k=4)]
    retriever.save(tmp_path / "r.flag")
    assert FlagHybridVectorStore.load(tmp_path / "r.flag", model_name=m3_path, devices="cpu").ids == store.ids
    old = FlagHybridVectorStore.load(OLD / "langchain-hybrid-967415d.flag", model_name=m3_path)
    assert old.ids[:2] == ["lc-0", "lc-1"] and old.ids[3] == "lc-3"
    assert {d.metadata["topic"] for d in old.similarity_search("bamboo", k=4, filter={"topic": "bears"})} == {"bears"}
    with pytest.raises(IndexFileError, match="passage_max_length"):
        FlagHybridVectorStore.load(tmp_path / "h.flag", model_name=m3_path, devices="cpu", passage_max_length=64)
    with pytest.raises(IndexFileError, match="not a flagstack-hybrid-index file"):
        FlagHybridVectorStore.load(OLD / "langchain-dense-967415d.flag", model_name=m3_path)
    # copies hold the documents and share the model
    for clone in (copy.deepcopy, lambda obj: pickle.loads(pickle.dumps(obj))):
        copied = clone(store)
        assert copied == store and copied.index.model is store.index.model
        copied.delete(["doc-1"])
        assert "doc-1" in store


def test_hybrid_settings_come_from_the_embeddings_or_keywords(m3_path: str, model_path: str) -> None:
    dense = FlagM3Embeddings(model_name=m3_path, devices="cpu", passage_max_length=64)
    store = FlagHybridVectorStore.from_texts(TEXTS[:3], dense, ids=IDS[:3])
    assert store.passage_max_length == 64 and store.model_name == m3_path and store.ids == IDS[:3]
    with pytest.raises(ValueError, match="passage_max_length given both"):
        FlagHybridVectorStore.from_texts(TEXTS[:1], dense, passage_max_length=32)
    with pytest.raises(TypeError, match="encodes with BGE-M3 itself"):
        FlagHybridVectorStore.from_texts(TEXTS[:1], FlagEmbeddings(model_name=model_path, devices="cpu"),
                                         model_name=m3_path)
    with pytest.raises(AttributeError, match="build another one"):
        store.passage_max_length = 128


def test_the_hybrid_retriever_and_its_vectorstore_share_one_index(m3_path: str) -> None:
    retriever = FlagHybridRetriever.from_texts(TEXTS, metadatas=METADATAS, ids=IDS, model_name=m3_path,
                                               devices="cpu", k=3, candidates=len(TEXTS))
    store = retriever.vectorstore
    assert isinstance(store, FlagHybridVectorStore) and store.index is retriever._index
    assert retriever.vectorstore is store  # built once, while the settings stay
    retriever.mode = "dense"
    assert retriever.vectorstore.mode == "dense" and retriever.vectorstore.index is store.index
    retriever.mode = "hybrid"
    for spec, _ in FILTERS:
        docs = retriever.invoke("bamboo", filter=spec)
        assert [(d.page_content, round(d.metadata["relevance_score"], 5)) for d in docs] == hits_of(
            store, "bamboo", k=3, filter=spec)
    store.delete(["doc-0"])
    store.add_texts(["Pandas sleep in trees."], [{"topic": "bears"}], ids=["doc-3"])
    assert "doc-0" not in {d.id for d in retriever.invoke("giant panda bamboo", k=8)}
    assert retriever.invoke("Pandas sleep in trees.", k=1, mode="dense")[0].id == "doc-3"
    assert retriever.invoke("bamboo", mode="dense", filter=lambda doc: doc.id == "doc-5")[0].id == "doc-5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert dumpd(retriever)["type"] == "not_implemented"
    lc = store.as_retriever(search_kwargs={"k": 2, "filter": {"topic": "python"}, "mode": "dense"})
    assert [d.id for d in lc.invoke("run a command")] == [d.id for d in store.similarity_search(
        "run a command", k=2, filter={"topic": "python"}, mode="dense")]

    async def run() -> None:
        assert await store.asimilarity_search("bamboo", k=2) == store.similarity_search("bamboo", k=2)
        assert await store.aadd_texts(["x"], ids=["x"]) == ["x"] and "x" in retriever.vectorstore

    asyncio.run(run())


def test_a_document_added_while_saving_keeps_serialization_honest(
    embeddings: FlagEmbeddings, m3_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A document added by another thread while the file is written is not in the file: the retrievers then say
    they are not in their file (dumpd gives "not implemented"), never a constructor form that would lose it."""
    from flag_core.retrieval import hybrid as hybrid_module
    from flag_core.retrieval import index as index_module

    retriever = FlagRetriever.from_texts(TEXTS[:2], embeddings)
    hybrid = FlagHybridRetriever.from_texts(TEXTS[:2], model_name=m3_path, devices="cpu")
    for module, holder in ((index_module, retriever), (hybrid_module, hybrid)):
        written = module.write_archive

        def add_meanwhile(*args: Any, holder: Any = holder, written: Any = written, **kwargs: Any) -> None:
            holder.add_documents([Document(page_content="added while saving", id="late")])
            written(*args, **kwargs)

        monkeypatch.setattr(module, "write_archive", add_meanwhile)
        holder.save(tmp_path / f"{type(holder).__name__}.flag")
        monkeypatch.undo()
        assert len(holder) == 3 and not holder.in_file()
        assert dumpd(holder)["type"] == "not_implemented"
