"""llamaindex_flag's vector stores: FlagVectorStore (exact dense) and FlagHybridVectorStore (BGE-M3) under LlamaIndex's
VectorStoreIndex (insert, query, query engine, delete_ref_doc, filters, persist and reload), filters held to brute
force and to LlamaIndex's own filter semantics, node-level calls, copies, async, and the files they share with the
retrievers."""

from __future__ import annotations

import asyncio
import copy
import itertools
import pickle
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever
from llama_index.core.llms import MockLLM
from llama_index.core.schema import BaseNode, IndexNode, MetadataMode, NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn

from flag_core import BGEM3FlagModel, IndexFileError
from flag_core.retrieval import HybridIndex
from llamaindex_flag import (
    FlagEmbedding,
    FlagHybridRetriever,
    FlagHybridVectorStore,
    FlagRetriever,
    FlagVectorStore,
)

OLD = Path(__file__).parents[1] / "fixtures" / "indexes"
QUERY = "what do pandas eat?"
TOPICS = ["bears", "cities", "python", "bears", "cities", "python", "bears", "food", "food", "python", "bears",
          "cities"]
TEXTS = [
    "The giant panda is a bear species endemic to China; it eats bamboo.",
    "Paris is the capital and most populous city of France.",
    "json.loads parses a JSON document into a Python object.",
    "Red pandas live in the eastern Himalayas and eat bamboo too.",
    "Berlin is the capital of Germany, on the river Spree.",
    "A Python list comprehension builds a list from an iterable.",
    "Polar bears hunt seals on the Arctic sea ice.",
    "Bamboo shoots are eaten in many Asian dishes.",
    "Bread is baked from flour, water, salt and yeast.",
    "asyncio runs coroutines on an event loop in Python.",
    "Brown bears eat berries, roots, fish and insects.",
    "Tokyo is the most populous metropolitan area in the world.",
]
DOCS = [Document(text=text, id_=f"doc-{i}",
                 metadata={"topic": TOPICS[i], "year": 2000 + i, "score": i / 4, "tags": [TOPICS[i], f"t{i % 3}"]})
        for i, text in enumerate(TEXTS)]
# filters with the predicate they mean, over the documents' metadata
CASES: list[tuple[MetadataFilters, Callable[[dict[str, Any]], bool]]] = [
    (MetadataFilters(filters=[MetadataFilter(key="topic", value="bears")]), lambda m: m["topic"] == "bears"),
    (MetadataFilters(filters=[MetadataFilter(key="topic", value=["food", "cities"], operator=FilterOperator.IN)]),
     lambda m: m["topic"] in ("food", "cities")),
    (MetadataFilters(filters=[MetadataFilter(key="year", value=2003, operator=FilterOperator.GT),
                              MetadataFilter(key="year", value=2009, operator=FilterOperator.LTE)]),
     lambda m: 2003 < m["year"] <= 2009),
    (MetadataFilters(filters=[MetadataFilter(key="score", value=1.0, operator=FilterOperator.LT),
                              MetadataFilter(key="topic", value="bears")], condition=FilterCondition.OR),
     lambda m: m["score"] < 1.0 or m["topic"] == "bears"),
    (MetadataFilters(filters=[
        MetadataFilter(key="topic", value="bears", operator=FilterOperator.NE),
        MetadataFilters(filters=[MetadataFilter(key="year", value=2002, operator=FilterOperator.LT),
                                 MetadataFilter(key="tags", value="t2", operator=FilterOperator.CONTAINS)],
                        condition=FilterCondition.OR)]),
     lambda m: m["topic"] != "bears" and (m["year"] < 2002 or "t2" in m["tags"])),
    (MetadataFilters(filters=[MetadataFilter(key="topic", value=["python", "cities"], operator=FilterOperator.IN)],
                     condition=FilterCondition.NOT), lambda m: m["topic"] not in ("python", "cities")),
    (MetadataFilters(filters=[MetadataFilter(key="year", value=1999, operator=FilterOperator.LT)]), lambda m: False),
]


@pytest.fixture(scope="module")
def embed_model(model_path: str) -> FlagEmbedding:
    return FlagEmbedding(model_name=model_path, devices="cpu")


def _index(store: Any, embed_model: FlagEmbedding, docs: list[Document] = DOCS) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store),
                                           embed_model=embed_model)


def _ranked(results: list[Any]) -> list[tuple[str, float]]:
    return [(r.node.ref_doc_id, r.score) for r in results]


def _same_ranking(got: list[tuple[str, float]], want: list[tuple[str, float]], tol: float = 1e-5) -> None:
    assert [doc for doc, _ in got] == [doc for doc, _ in want]
    assert [score for _, score in got] == pytest.approx([score for _, score in want], abs=tol)


def _brute_force(embed_model: FlagEmbedding, query: str, keep: Callable[[dict[str, Any]], bool], k: int
                 ) -> list[tuple[str, float]]:
    """The top k documents by inner product among those whose metadata ``keep`` accepts (one node a document)."""
    docs = [doc for doc in DOCS if keep(doc.metadata)]
    if not docs:
        return []
    vectors = np.array(embed_model.get_text_embedding_batch([d.get_content(MetadataMode.EMBED) for d in docs]))
    scores = vectors @ np.array(embed_model.get_query_embedding(query))
    order = np.argsort(-scores, kind="stable")[:k]
    return [(docs[i].doc_id, float(scores[i])) for i in order]


# ---- FlagVectorStore under VectorStoreIndex -------------------------------------------------------------------------


def test_dense_store_under_vector_store_index(embed_model: FlagEmbedding, tmp_path: Path) -> None:
    store = FlagVectorStore(embed_model=embed_model)
    assert store  # an empty store is a store: StorageContext.from_defaults keeps it
    index = _index(store, embed_model)
    assert len(store) == len(DOCS) and not index.docstore.docs  # the store keeps the text, no docstore copy
    _same_ranking(_ranked(index.as_retriever(similarity_top_k=3).retrieve(QUERY)),
                  _brute_force(embed_model, QUERY, lambda m: True, 3))
    response = index.as_query_engine(llm=MockLLM(), similarity_top_k=2).query(QUERY)
    assert [n.node.ref_doc_id for n in response.source_nodes] == [d for d, _ in _brute_force(
        embed_model, QUERY, lambda m: True, 2)]
    assert "bamboo" in str(response)  # MockLLM echoes the prompt, which holds the retrieved text

    for filters, keep in CASES:  # exact: the filtered ranking is brute force over the matching documents
        _same_ranking(_ranked(index.as_retriever(similarity_top_k=4, filters=filters).retrieve(QUERY)),
                      _brute_force(embed_model, QUERY, keep, 4))
    restricted = index.as_retriever(similarity_top_k=4, doc_ids=["doc-7", "doc-1"]).retrieve(QUERY)
    assert [r.node.ref_doc_id for r in restricted] == ["doc-7", "doc-1"]

    index.insert(Document(text="Giant pandas eat bamboo for up to 14 hours a day.", id_="doc-new",
                          metadata={"topic": "bears", "year": 2020, "score": 0.0, "tags": []}))
    assert len(store) == len(DOCS) + 1
    assert index.as_retriever(similarity_top_k=1).retrieve(QUERY)[0].node.ref_doc_id == "doc-new"
    index.delete_ref_doc("doc-new")
    index.delete_ref_doc("doc-0")
    assert len(store) == len(DOCS) - 1
    assert {n.ref_doc_id for n in store.get_nodes()} == {d.doc_id for d in DOCS} - {"doc-0"}

    # persist and reload: the same nodes, results and filters
    store.persist(str(tmp_path / "saved" / "dense.flag"))  # the folder is made
    again = FlagVectorStore.from_persist_path(tmp_path / "saved" / "dense.flag", embed_model=embed_model)
    assert again.client.ids == store.client.ids and again.settings == store.settings
    reloaded = VectorStoreIndex.from_vector_store(again, embed_model=embed_model)
    for filters, _ in [(None, None), *CASES]:
        _same_ranking(_ranked(reloaded.as_retriever(similarity_top_k=5, filters=filters).retrieve(QUERY)),
                      _ranked(index.as_retriever(similarity_top_k=5, filters=filters).retrieve(QUERY)), tol=0)
    reloaded.delete_ref_doc("doc-3")
    assert "doc-3" not in {n.ref_doc_id for n in again.get_nodes()} and len(again) == len(DOCS) - 2
    assert len(store) == len(DOCS) - 1  # the two stores are separate

    # a file of other embedding settings, a damaged file
    other = FlagEmbedding(model_name=embed_model.model_name, devices="cpu", pooling_method="cls")
    with pytest.raises(IndexFileError, match="pooling_method"):
        FlagVectorStore.from_persist_path(tmp_path / "saved" / "dense.flag", embed_model=other)
    data = (tmp_path / "saved" / "dense.flag").read_bytes()
    (tmp_path / "damaged.flag").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError, match=r"damaged\.flag"):
        FlagVectorStore.from_persist_path(tmp_path / "damaged.flag")


def test_dense_mmr(embed_model: FlagEmbedding) -> None:
    store = FlagVectorStore()
    index = _index(store, embed_model)
    nodes = store.get_nodes()
    vectors = store.client.index.vectors
    query = embed_model.get_query_embedding(QUERY)
    # over every node (mmr_prefetch_k = all), exactly LlamaIndex's MMR (as its SimpleVectorStore runs it)
    want_scores, want_ids = get_top_k_mmr_embeddings(query, vectors.tolist(), similarity_top_k=4,
                                                     embedding_ids=store.client.ids, mmr_threshold=0.3)
    found = store.query(VectorStoreQuery(query_embedding=query, similarity_top_k=4, mode="mmr"),
                        mmr_threshold=0.3, mmr_prefetch_k=len(nodes))
    assert found.ids == want_ids and found.similarities == pytest.approx(want_scores, abs=1e-6)
    retrieved = index.as_retriever(similarity_top_k=4, vector_store_query_mode="mmr",
                                   vector_store_kwargs={"mmr_threshold": 0.3, "mmr_prefetch_k": 12}).retrieve(QUERY)
    assert [r.node.node_id for r in retrieved] == want_ids
    # threshold 1: relevance only, the plain ranking; filters apply before MMR
    plain = store.query(VectorStoreQuery(query_embedding=query, similarity_top_k=3))
    assert store.query(VectorStoreQuery(query_embedding=query, similarity_top_k=3, mode="mmr",
                                        mmr_threshold=1.0)).ids == plain.ids
    bears = MetadataFilters(filters=[MetadataFilter(key="topic", value="bears")])
    picked = store.get_nodes(store.query(VectorStoreQuery(query_embedding=query, similarity_top_k=3, mode="mmr",
                                                          filters=bears)).ids)
    assert len(picked) == 3 and {n.metadata["topic"] for n in picked} == {"bears"}
    with pytest.raises(ValueError, match="not both"):
        store.query(VectorStoreQuery(query_embedding=query, mode="mmr"), mmr_prefetch_k=5, mmr_prefetch_factor=2)


# ---- filters: the mapping, held to LlamaIndex's own semantics --------------------------------------------------------

ODD_METADATA: list[dict[str, Any]] = [
    {"n": 1, "s": "alpha beta", "l": ["a", "b"], "f": 0.5},
    {"n": 2, "s": "beta", "l": ["b", 3], "f": None},
    {"n": 3.0, "s": "", "l": [], "f": 1.5},
    {"n": -1, "l": ["c"], "f": 2},
    {"s": "gamma alpha", "f": "text"},
    {"n": None, "s": None, "l": None},
    {"n": 10, "s": "ALPHA", "l": ["alpha", "a"], "f": 0},
]
ODD_FILTERS = [
    MetadataFilter(key="n", value=1),
    MetadataFilter(key="n", value=3),
    MetadataFilter(key="s", value="beta"),
    MetadataFilter(key="n", value=1, operator=FilterOperator.NE),
    MetadataFilter(key="n", value=1, operator=FilterOperator.GT),
    MetadataFilter(key="n", value=2, operator=FilterOperator.GTE),
    MetadataFilter(key="f", value=1.5, operator=FilterOperator.LT),
    MetadataFilter(key="f", value=0.5, operator=FilterOperator.LTE),
    MetadataFilter(key="s", value="b", operator=FilterOperator.GTE),
    MetadataFilter(key="n", value=[1, 10], operator=FilterOperator.IN),
    MetadataFilter(key="s", value=["beta", ""], operator=FilterOperator.IN),
    MetadataFilter(key="n", value=[1, 10], operator=FilterOperator.NIN),
    MetadataFilter(key="l", value="a", operator=FilterOperator.CONTAINS),
    MetadataFilter(key="l", value=3, operator=FilterOperator.CONTAINS),
    MetadataFilter(key="s", value="alpha", operator=FilterOperator.CONTAINS),
    MetadataFilter(key="s", value="alpha", operator=FilterOperator.TEXT_MATCH),
    MetadataFilter(key="s", value="", operator=FilterOperator.TEXT_MATCH),
    MetadataFilter(key="l", value="a", operator=FilterOperator.TEXT_MATCH),
    MetadataFilter(key="n", value=1, operator=FilterOperator.CONTAINS),
    MetadataFilter(key="l", value=["a", "c"], operator=FilterOperator.ANY),
    MetadataFilter(key="l", value=["a", "b"], operator=FilterOperator.ALL),
    MetadataFilter(key="s", value=["alpha", "beta"], operator=FilterOperator.ALL),
    MetadataFilter(key="l", value=[], operator=FilterOperator.ANY),
    MetadataFilter(key="l", value=[], operator=FilterOperator.ALL),
    MetadataFilter(key="l", value=None, operator=FilterOperator.IS_EMPTY),
    MetadataFilter(key="s", value=None, operator=FilterOperator.IS_EMPTY),
    MetadataFilter(key="missing", value=None, operator=FilterOperator.IS_EMPTY),
    MetadataFilter(key="missing", value="x", operator=FilterOperator.NE),
    MetadataFilter(key="n", value=None),  # null matches no field: nothing (IS_EMPTY finds null and missing)
    MetadataFilter(key="n", value=None, operator=FilterOperator.NE),  # every node, null and missing fields too
    MetadataFilter(key="missing", value=None, operator=FilterOperator.NE),
]


@pytest.fixture
def odd_store() -> FlagVectorStore:
    rng = np.random.default_rng(0)
    store = FlagVectorStore()
    store.add([TextNode(text=f"node {i}", id_=f"o{i}", metadata=m, embedding=rng.normal(size=8).tolist())
               for i, m in enumerate(ODD_METADATA)])
    return store


def _reference(filters: MetadataFilters) -> list[str]:
    """The nodes LlamaIndex's own filter function accepts, leaf by leaf (a TypeError it raises for a field of another
    type is "no match": flagstack's rule), the leaves combined by the condition as LlamaIndex combines them."""

    def leaf(item: MetadataFilter, i: int) -> bool:
        try:
            return build_metadata_filter_fn(lambda j: ODD_METADATA[int(j)], MetadataFilters(filters=[item]))(str(i))
        except TypeError:
            return False

    def accepts(i: int) -> bool:
        matches = [leaf(item, i) for item in filters.filters]  # type: ignore[arg-type]
        if filters.condition == FilterCondition.OR:
            return any(matches)
        return not any(matches) if filters.condition == FilterCondition.NOT else all(matches)

    return [f"o{i}" for i in range(len(ODD_METADATA)) if accepts(i)]


@pytest.mark.parametrize("item", ODD_FILTERS, ids=lambda f: f"{f.key}-{f.operator.name}-{f.value}")
def test_every_operator_means_what_llamaindex_means(odd_store: FlagVectorStore, item: MetadataFilter) -> None:
    filters = MetadataFilters(filters=[item])
    assert [n.node_id for n in odd_store.get_nodes(filters=filters)] == _reference(filters)


def test_conditions_and_nesting_mean_what_llamaindex_means(odd_store: FlagVectorStore) -> None:
    for first, second in itertools.combinations(ODD_FILTERS[::3], 2):
        for condition in FilterCondition:
            filters = MetadataFilters(filters=[first, second], condition=condition)
            assert [n.node_id for n in odd_store.get_nodes(filters=filters)] == _reference(filters), filters
    # nested (LlamaIndex's reference refuses nesting): composed by hand
    inner = MetadataFilters(filters=[ODD_FILTERS[4], ODD_FILTERS[12]], condition=FilterCondition.OR)
    outer = MetadataFilters(filters=[ODD_FILTERS[3], inner], condition=FilterCondition.NOT)
    want = set(_reference(MetadataFilters(filters=[ODD_FILTERS[3]]))) | set(_reference(inner))
    assert [n.node_id for n in odd_store.get_nodes(filters=outer)] == [f"o{i}" for i in range(7)
                                                                       if f"o{i}" not in want]
    assert len(odd_store.get_nodes(filters=MetadataFilters(filters=[]))) == len(ODD_METADATA)


def test_unmappable_filters_are_refused(odd_store: FlagVectorStore) -> None:
    query = VectorStoreQuery(query_embedding=[0.0] * 8, similarity_top_k=2)
    bad = [
        (MetadataFilter.model_construct(key="s", value="a.*", operator="regex"), "'regex' cannot be mapped"),
        (MetadataFilter(key="s", value="alpha", operator=FilterOperator.TEXT_MATCH_INSENSITIVE),
         "TEXT_MATCH_INSENSITIVE cannot be mapped"),
        (MetadataFilter(key="n", value=[1, 2], operator=FilterOperator.GT), "GT compares a number or a str"),
        (MetadataFilter(key="n", value=1, operator=FilterOperator.IN), "IN takes a list"),
        (MetadataFilter(key="l", value="a", operator=FilterOperator.ANY), "ANY takes a list"),
        (MetadataFilter(key="s", value=3, operator=FilterOperator.TEXT_MATCH), "TEXT_MATCH needs a str"),
    ]
    for item, message in bad:
        filters = MetadataFilters(filters=[item])
        for call in (lambda f=filters: odd_store.query(VectorStoreQuery(query_embedding=[0.0] * 8, filters=f)),
                     lambda f=filters: odd_store.get_nodes(filters=f),
                     lambda f=filters: odd_store.delete_nodes(filters=f)):
            with pytest.raises(ValueError, match=message):
                call()
    with pytest.raises(ValueError, match="FilterCondition 'xor'"):
        odd_store.get_nodes(filters=MetadataFilters.model_construct(filters=[ODD_FILTERS[0]], condition="xor"))
    assert len(odd_store) == len(ODD_METADATA)  # nothing was deleted
    with pytest.raises(ValueError, match="'svm'"):
        odd_store.query(VectorStoreQuery(query_embedding=[0.0] * 8, mode="svm"))
    with pytest.raises(ValueError, match="query_embedding"):
        odd_store.query(VectorStoreQuery(query_str="text only"))
    with pytest.raises(TypeError, match="'alpha'"):
        odd_store.query(query, alpha=0.5)
    with pytest.raises(ValueError, match="has no embedding"):
        odd_store.add([TextNode(text="x", id_="no-vector")])
    with pytest.raises(TypeError, match=r"nodes\[0\]"):
        odd_store.add(["text"])  # type: ignore[list-item]


def test_ref_doc_keys_filter_the_source_document_as_simple_vector_store(embed_model: FlagEmbedding) -> None:
    """ref_doc_id, doc_id and document_id name the node's source document, as in LlamaIndex's SimpleVectorStore
    (where they sit beside the metadata, over a metadata field so named)."""
    docs = [*DOCS, Document(text="A panda's day is mostly bamboo.", id_="doc-x", metadata={"doc_id": "doc-1"})]
    stores = {"simple": SimpleVectorStore(), "flag": FlagVectorStore(embed_model=embed_model)}
    indexes = {name: _index(store, embed_model, docs) for name, store in stores.items()}
    for key in ("ref_doc_id", "doc_id", "document_id"):
        for filters in (
            MetadataFilters(filters=[MetadataFilter(key=key, value="doc-1")]),
            MetadataFilters(filters=[MetadataFilter(key=key, value="doc-1", operator=FilterOperator.NE)]),
            MetadataFilters(filters=[MetadataFilter(key=key, value=["doc-0", "doc-x"], operator=FilterOperator.IN)]),
            MetadataFilters(filters=[MetadataFilter(key=key, value=["doc-0", "doc-3"], operator=FilterOperator.NIN),
                                     MetadataFilter(key="topic", value="bears")]),
        ):
            found = {name: sorted(r.node.ref_doc_id for r in index.as_retriever(similarity_top_k=len(docs),
                                                                                   filters=filters).retrieve(QUERY))
                     for name, index in indexes.items()}
            assert found["flag"] == found["simple"] != [], (key, filters)
    assert found["flag"] == ["doc-10", "doc-6"]
    store = indexes["flag"].vector_store
    assert [n.ref_doc_id for n in store.get_nodes(filters=MetadataFilters(filters=[MetadataFilter(
        key="doc_id", value="doc-1")]))] == ["doc-1"]  # not doc-x, whose metadata holds a "doc_id"


def test_a_dotted_key_names_a_field_whole_else_nested_metadata() -> None:
    """"file.name" is a metadata field named so where there is one (as LlamaIndex reads a key), else nested metadata
    (flag_core's reading)."""
    store = FlagVectorStore()
    store.add([TextNode(text="a", id_="literal", metadata={"file.name": "a.txt"}, embedding=[1.0, 0.0]),
               TextNode(text="b", id_="nested", metadata={"file": {"name": "a.txt"}}, embedding=[0.0, 1.0]),
               TextNode(text="c", id_="both", metadata={"file.name": "c.txt", "file": {"name": "a.txt"}},
                        embedding=[1.0, 1.0]),
               TextNode(text="d", id_="none", metadata={"file": "a.txt"}, embedding=[1.0, 0.5])])
    a_txt = MetadataFilters(filters=[MetadataFilter(key="file.name", value="a.txt")])
    assert [n.node_id for n in store.get_nodes(filters=a_txt)] == ["literal", "nested"]
    assert store.query(VectorStoreQuery(query_embedding=[1.0, 0.0], similarity_top_k=4, filters=a_txt)).ids == \
        ["literal", "nested"]
    c_txt = MetadataFilters(filters=[MetadataFilter(key="file.name", value="c.txt")])
    literal = {n.node_id: n.metadata for n in store.get_nodes() if "file.name" in n.metadata}
    assert [n.node_id for n in store.get_nodes(filters=c_txt)] == \
        [i for i in literal if build_metadata_filter_fn(literal.__getitem__, c_txt)(i)] == ["both"]
    missing = MetadataFilters(filters=[MetadataFilter(key="file.name", value=None, operator=FilterOperator.IS_EMPTY)])
    assert [n.node_id for n in store.get_nodes(filters=missing)] == ["none"]


# ---- node-level calls, copies, async ---------------------------------------------------------------------------------


def _node(i: int, doc: str, vector: list[float], **metadata: Any) -> TextNode:
    return TextNode(text=f"text {i}", id_=f"n{i}", metadata={"i": i, **metadata}, embedding=vector,
                    relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc)})


def test_get_delete_clear_and_replace() -> None:
    vectors = np.eye(6).tolist()
    store = FlagVectorStore()
    assert store.add([_node(i, f"d{i % 2}", vectors[i], tags=["x"]) for i in range(6)]) == [f"n{i}" for i in range(6)]
    assert [n.node_id for n in store.get_nodes(["n4", "missing", "n1", "n4"])] == ["n4", "n1"]
    even = MetadataFilters(filters=[MetadataFilter(key="i", value=[0, 2, 4], operator=FilterOperator.IN)])
    assert [n.node_id for n in store.get_nodes(filters=even)] == ["n0", "n2", "n4"]
    assert [n.node_id for n in store.get_nodes(["n5", "n2", "n1"], filters=even)] == ["n2"]
    assert store.get_nodes([]) == []
    assert store.get_nodes(["n3"])[0].embedding is None  # the vector is the index's, not repeated in the node

    store.add([_node(3, "d1", vectors[0], tags=["replaced"])])  # the same id: replaced, not added
    assert len(store) == 6 and store.get_nodes(["n3"])[0].metadata["tags"] == ["replaced"]
    hits = store.query(VectorStoreQuery(query_embedding=vectors[0], similarity_top_k=2))
    assert hits.ids == ["n0", "n3"] and hits.similarities == pytest.approx([1.0, 1.0])
    assert store.query(VectorStoreQuery(query_embedding=vectors[0], similarity_top_k=2, node_ids=["n1", "n3"])).ids \
        == ["n3", "n1"]

    store.delete_nodes(["n1", "n2", "n5"], filters=even)  # the ids that the filter accepts: n2
    assert store.client.ids == ["n0", "n1", "n4", "n5", "n3"]
    store.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="tags", value="replaced",
                                                                       operator=FilterOperator.CONTAINS)]))
    store.delete("d0")  # every node of source document d0
    assert store.client.ids == ["n1", "n5"]
    store.delete_nodes([])  # an empty list deletes nothing
    assert len(store) == 2
    store.clear()
    assert len(store) == 0 and store.query(VectorStoreQuery(query_embedding=vectors[0])).ids == []
    store.add([TextNode(text="new size", id_="x", embedding=[1.0, 0.0])])  # a cleared store takes any dimension
    assert store.get_nodes()[0].get_content() == "new size"
    with pytest.raises(TypeError, match="wrap it in a list"):
        store.get_nodes("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword"):
        store.delete("d0", everything=True)


def test_nodes_are_copies() -> None:
    node = TextNode(text="a", id_="a", metadata={"tags": ["original"]}, embedding=[1.0, 0.0])
    store = FlagVectorStore()
    store.add([node])
    node.metadata["tags"].append("edited by the caller after adding")
    assert node.embedding == [1.0, 0.0]  # the caller's node is untouched
    found = store.query(VectorStoreQuery(query_embedding=[1.0, 0.0])).nodes
    assert found is not None and found[0].metadata["tags"] == ["original"]
    found[0].metadata["tags"].append("edited result")
    store.get_nodes()[0].metadata["tags"].append("edited too")
    assert store.get_nodes(["a"])[0].metadata["tags"] == ["original"]
    for clone in (copy.deepcopy(store), pickle.loads(pickle.dumps(store))):  # copies carry the nodes, apart
        assert clone.get_nodes()[0].metadata["tags"] == ["original"]
        clone.add([TextNode(text="b", id_="b", embedding=[0.0, 1.0])])
    assert len(store) == 1 and len(clone) == 2


def test_dense_to_dict_refuses_a_store_holding_nodes(tmp_path: Path) -> None:
    """to_dict carries the fields only: with nodes it would lose them, persisted or not (from_persist_path reads
    them back)."""
    store = FlagVectorStore(use_faiss=True)
    back = FlagVectorStore.from_dict(store.to_dict())  # an empty store: nothing to lose
    assert back.use_faiss and len(back) == 0 and FlagVectorStore.from_json(store.to_json()).use_faiss
    store.add([TextNode(text="a", id_="a", embedding=[1.0, 0.0])])
    for call in (store.to_dict, store.to_json):
        with pytest.raises(ValueError, match=r"holds 1 node\(s\).*from_persist_path"):
            call()
    store.persist(str(tmp_path / "a.flag"))
    with pytest.raises(ValueError, match="from_persist_path"):
        store.to_dict()
    assert FlagVectorStore.from_persist_path(tmp_path / "a.flag").client.ids == ["a"]
    store.clear()
    assert store.to_dict()["class_name"] == "FlagVectorStore"


def test_index_nodes_restrict_index_queries_as_over_llamaindex_qdrant(embed_model: FlagEmbedding) -> None:
    """VectorStoreIndex gives a store that keeps text the ids of its IndexNodes as query.node_ids; the store reads
    them as a restriction, as LlamaIndex's Qdrant store does (and Milvus's, by its source): once an IndexNode is
    inserted, index.as_retriever() finds only IndexNodes, and VectorIndexRetriever(index) every node."""
    pytest.importorskip("llama_index.vector_stores.qdrant", reason="needs llama-index-vector-stores-qdrant")
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    ids = [str(uuid.UUID(int=i + 1)) for i in range(5)]  # Qdrant takes UUIDs as point ids
    found = {}
    for name, store in (("flag", FlagVectorStore()),
                        ("qdrant", QdrantVectorStore(client=QdrantClient(location=":memory:"), collection_name="c"))):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
            index = VectorStoreIndex([TextNode(text=t, id_=ids[i]) for i, t in enumerate(TEXTS[:4])],
                                     storage_context=StorageContext.from_defaults(vector_store=store),
                                     embed_model=embed_model)
        before = [r.node.node_id for r in index.as_retriever(similarity_top_k=3).retrieve(QUERY)]
        index.insert_nodes([IndexNode(text="A summary of the city of Paris.", index_id="paris", id_=ids[4])])
        after = [r.node.node_id for r in index.as_retriever(similarity_top_k=3).retrieve(QUERY)]
        every = [r.node.node_id for r in VectorIndexRetriever(index, similarity_top_k=3).retrieve(QUERY)]
        found[name] = (before, after, every)
    assert found["flag"] == found["qdrant"]
    before, after, every = found["flag"]
    assert after == [ids[4]] and every == before and ids[4] not in before


async def test_async_calls_do_not_block_the_loop(ticks_while: Any) -> None:
    store = FlagVectorStore()
    dense = store.client
    threads: list[int] = []

    def slowly(function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.get_ident())
            time.sleep(0.15)
            return function(*args, **kwargs)
        return run

    dense.add_embedded = slowly(dense.add_embedded)  # type: ignore[method-assign]
    dense.search_by_vector = slowly(dense.search_by_vector)  # type: ignore[method-assign]
    dense.find = slowly(dense.find)  # type: ignore[method-assign]
    nodes = [_node(i, f"d{i % 2}", [float(i), 1.0]) for i in range(4)]
    ids, ticks, _ = await ticks_while(store.async_add(nodes))
    assert ids == ["n0", "n1", "n2", "n3"] and ticks >= 10
    found, ticks, _ = await ticks_while(store.aquery(VectorStoreQuery(query_embedding=[1.0, 0.0], similarity_top_k=1)))
    assert found.ids == ["n3"] and ticks >= 10
    _, ticks, _ = await ticks_while(store.adelete("d1"))
    assert ticks >= 10 and store.client.ids == ["n0", "n2"]
    assert len(await store.aget_nodes(["n0"])) == 1
    await store.adelete_nodes(["n0"])
    await store.aclear()
    assert len(store) == 0 and threading.get_ident() not in threads


# ---- files shared with the retrievers, and the retrievers as views ---------------------------------------------------


def test_retriever_files_load_into_the_store(embed_model: FlagEmbedding, tmp_path: Path) -> None:
    nodes = [TextNode(text=t, id_=f"n{i}", metadata={"topic": TOPICS[i]}) for i, t in enumerate(TEXTS[:6])]
    retriever = FlagRetriever(nodes=nodes, embed_model=embed_model, similarity_top_k=3)
    assert retriever.vector_store.client.ids == [f"n{i}" for i in range(6)]
    retriever.save(tmp_path / "retriever.flag")
    store = FlagVectorStore.from_persist_path(tmp_path / "retriever.flag", embed_model=embed_model)
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
    assert [r.node.node_id for r in index.as_retriever(similarity_top_k=3).retrieve(QUERY)] == \
        [r.node.node_id for r in retriever.retrieve(QUERY)]
    # and back: a store's file is a retriever's (a store read without embed_model keeps the file's settings)
    store = FlagVectorStore.from_persist_path(tmp_path / "retriever.flag")
    assert store.settings == retriever.vector_store.settings != {}
    store.delete_nodes(["n0"])
    store.persist(str(tmp_path / "store.flag"))
    loaded = FlagRetriever.load(tmp_path / "store.flag", embed_model, similarity_top_k=3)
    assert len(loaded) == 5 and "n0" not in [r.node.node_id for r in loaded.retrieve(QUERY)]
    # the retriever's own store answers VectorStoreIndex too
    view = VectorStoreIndex.from_vector_store(loaded.vector_store, embed_model=embed_model)
    assert [r.node.node_id for r in view.as_retriever(similarity_top_k=3).retrieve(QUERY)] == \
        [r.node.node_id for r in loaded.retrieve(QUERY)]


def test_a_file_written_before_ids_loads(embed_model: FlagEmbedding) -> None:
    """A FlagRetriever file of 967415d (version 1, no ids): each entry's id is its node's id, and filters work."""
    store = FlagVectorStore.from_persist_path(OLD / "llamaindex-dense-967415d.flag", embed_model=embed_model)
    assert store.client.ids == ["node-0", "node-1", "node-2", "node-3"]
    bears = MetadataFilters(filters=[MetadataFilter(key="topic", value="bears")])
    assert [n.node_id for n in store.get_nodes(filters=bears)] == ["node-0", "node-3"]
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
    assert {r.node.node_id for r in index.as_retriever(similarity_top_k=2, filters=bears).retrieve(QUERY)} == \
        {"node-0", "node-3"}


def test_entries_keyed_by_other_ids_are_keyed_by_node(embed_model: FlagEmbedding, tmp_path: Path) -> None:
    """A file whose entry ids are not its nodes' ids (the retrievers before they used node ids; a node added twice)
    loads keyed by node id, the repeated node under its own entry id."""
    from flag_core.retrieval import DenseIndex, embedding_settings
    from llamaindex_flag._nodes import DENSE_PAYLOADS, node_payload

    dense = DenseIndex(embed_model.get_text_embedding_batch, embed_model.get_query_embedding,
                       embedding_settings(embed_model), payload_format=DENSE_PAYLOADS)
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS[:3])] + [TextNode(text=TEXTS[3], id_="n0")]
    dense.add([n.get_content(MetadataMode.EMBED) for n in nodes], [node_payload(n) for n in nodes])  # random ids
    dense.save(tmp_path / "old.flag")
    store = FlagVectorStore.from_persist_path(tmp_path / "old.flag")
    ids = store.client.ids
    assert ids[:3] == ["n0", "n1", "n2"] and ids[3] == dense.ids[3]
    assert [n.node_id for n in store.get_nodes()] == ids  # a node's id always names its entry
    store.delete_nodes([ids[3]])
    assert [n.get_content() for n in store.get_nodes()] == TEXTS[:3]


# ---- FlagHybridVectorStore ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def m3_model(m3_path: str) -> BGEM3FlagModel:
    return BGEM3FlagModel(m3_path, devices="cpu")


def _oracle(m3_model: BGEM3FlagModel, docs: list[Document], query: str, k: int, mode: str = "hybrid"
            ) -> list[tuple[str, float]]:
    """flag_core's HybridIndex over ``docs`` alone: what a filtered query must give."""
    index = HybridIndex(m3_model)
    index.add([d.get_content(MetadataMode.EMBED) for d in docs])
    return [(docs[hit.position].doc_id, hit.score) for hit in index.search(query, k, mode)]


def test_hybrid_store_under_vector_store_index(m3_path: str, m3_model: BGEM3FlagModel, embed_model: FlagEmbedding,
                                               tmp_path: Path) -> None:
    store = FlagHybridVectorStore(m3_path, m3_settings={"devices": "cpu"})
    assert store and not store.is_embedding_query
    index = _index(store, embed_model)
    assert len(store) == len(DOCS)
    results = index.as_retriever(similarity_top_k=3).retrieve(QUERY)
    _same_ranking(_ranked(results), _oracle(m3_model, DOCS, QUERY, 3))
    assert set(results[0].node.metadata["flagstack_scores"]) >= {"dense", "sparse", "colbert", "hybrid"}
    assert "flagstack_scores" not in results[0].node.get_content(MetadataMode.LLM)
    for query_mode, mode in (("sparse", "sparse"), ("text_search", "sparse"), ("hybrid", "hybrid")):
        _same_ranking(_ranked(index.as_retriever(similarity_top_k=3, vector_store_query_mode=query_mode)
                              .retrieve(QUERY)), _oracle(m3_model, DOCS, QUERY, 3, mode))
    _same_ranking(_ranked(index.as_retriever(similarity_top_k=3, vector_store_kwargs={"mode": "colbert"})
                          .retrieve(QUERY)), _oracle(m3_model, DOCS, QUERY, 3, "colbert"))
    with pytest.raises(ValueError, match="'mmr'"):
        index.as_retriever(vector_store_query_mode="mmr").retrieve(QUERY)
    response = index.as_query_engine(llm=MockLLM(), similarity_top_k=2).query(QUERY)
    assert [n.node.ref_doc_id for n in response.source_nodes] == [d for d, _ in _oracle(m3_model, DOCS, QUERY, 2)]

    for filters, keep in CASES:  # exact: a filtered query is the hybrid search over the matching documents alone
        _same_ranking(_ranked(index.as_retriever(similarity_top_k=4, filters=filters).retrieve(QUERY)),
                      _oracle(m3_model, [d for d in DOCS if keep(d.metadata)], QUERY, 4))

    index.insert(Document(text="Giant pandas eat bamboo for up to 14 hours a day.", id_="doc-new",
                          metadata={"topic": "bears"}))
    index.delete_ref_doc("doc-0")
    assert len(store) == len(DOCS) and "doc-0" not in {n.ref_doc_id for n in store.get_nodes()}
    store.persist(str(tmp_path / "hybrid.flag"))
    again = FlagHybridVectorStore.from_persist_path(tmp_path / "hybrid.flag", m3_path, devices="cpu")
    reloaded = VectorStoreIndex.from_vector_store(again, embed_model=embed_model)
    for filters, _ in [(None, None), *CASES]:
        _same_ranking(_ranked(reloaded.as_retriever(similarity_top_k=4, filters=filters).retrieve(QUERY)),
                      _ranked(index.as_retriever(similarity_top_k=4, filters=filters).retrieve(QUERY)), tol=0)
    with pytest.raises(IndexFileError, match="passage_max_length"):
        FlagHybridVectorStore.from_persist_path(tmp_path / "hybrid.flag", m3_path, devices="cpu",
                                                passage_max_length=32)
    data = (tmp_path / "hybrid.flag").read_bytes()
    (tmp_path / "damaged.flag").write_bytes(data[:-100])
    with pytest.raises(IndexFileError, match=r"damaged\.flag"):
        FlagHybridVectorStore.from_persist_path(tmp_path / "damaged.flag", m3_path, devices="cpu")
    again.clear()
    assert len(again) == 0 and reloaded.as_retriever().retrieve(QUERY) == []


def test_hybrid_store_options_and_node_calls(m3_path: str, m3_model: BGEM3FlagModel) -> None:
    store = FlagHybridVectorStore(m3_path, mode="dense", devices="cpu", candidates=50)
    nodes = [TextNode(text=t, id_=f"n{i}", metadata={"topic": TOPICS[i]},
                      relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"d{i % 3}")})
             for i, t in enumerate(TEXTS)]
    assert store.add(nodes) == [n.node_id for n in nodes]
    docs = [Document(text=t, id_=f"n{i}", metadata={"topic": TOPICS[i]}) for i, t in enumerate(TEXTS)]
    dense = store.query(VectorStoreQuery(query_str=QUERY, similarity_top_k=3))  # DEFAULT: the store's mode
    _same_ranking(list(zip(dense.ids or [], dense.similarities or [], strict=True)),
                  _oracle(m3_model, docs, QUERY, 3, "dense"))
    hybrid = store.query(VectorStoreQuery(query_str=QUERY, similarity_top_k=3, hybrid_top_k=2, mode="hybrid"))
    assert hybrid.ids == [d for d, _ in _oracle(m3_model, docs, QUERY, 2)]
    weighted = store.query(VectorStoreQuery(query_str=QUERY, similarity_top_k=3), mode="sparse+dense",
                           weights=(1.0, 0.0, 0.0))
    assert weighted.ids == dense.ids and weighted.similarities == pytest.approx(dense.similarities)
    assert store.query(VectorStoreQuery(query_str=QUERY, node_ids=["n5", "n7"], similarity_top_k=5)).ids == \
        [d for d, _ in _oracle(m3_model, [docs[5], docs[7]], QUERY, 5, "dense")]
    with pytest.raises(ValueError, match="alpha"):
        store.query(VectorStoreQuery(query_str=QUERY, alpha=0.5))
    with pytest.raises(ValueError, match="query_str"):
        store.query(VectorStoreQuery(query_embedding=[0.0] * 384))
    with pytest.raises(ValueError, match="'semantic_hybrid'"):
        store.query(VectorStoreQuery(query_str=QUERY, mode="semantic_hybrid"), mode="dense")
    with pytest.raises(ValueError, match="TEXT_MATCH_INSENSITIVE"):
        store.query(VectorStoreQuery(query_str=QUERY, filters=MetadataFilters(filters=[MetadataFilter(
            key="topic", value="B", operator=FilterOperator.TEXT_MATCH_INSENSITIVE)])))

    store.delete("d1")
    assert store.client.ids == [f"n{i}" for i in range(12) if i % 3 != 1]
    bears = MetadataFilters(filters=[MetadataFilter(key="topic", value="bears")])
    assert [n.node_id for n in store.get_nodes(filters=bears)] == ["n0", "n3", "n6"]
    store.delete_nodes(["n0", "n2"], filters=bears)
    assert [n.node_id for n in store.get_nodes(["n2", "n0"])] == ["n2"]
    found = store.get_nodes(["n2"])
    found[0].metadata["topic"] = "edited"
    assert store.get_nodes(["n2"])[0].metadata["topic"] == "python"  # copies
    store.add([TextNode(text="Bamboo is what giant pandas eat.", id_="n2", metadata={"topic": "bears"})])
    assert store.query(VectorStoreQuery(query_str=QUERY, similarity_top_k=1, filters=bears)).ids == ["n2"]
    clone = pickle.loads(pickle.dumps(store))  # copies carry the nodes (the model is shared, built again)
    assert clone.client.ids == store.client.ids and clone.client.model is store.client.model


def test_hybrid_to_dict_refers_to_the_file_only_while_it_holds_the_nodes(m3_path: str, tmp_path: Path) -> None:
    """to_dict / from_dict refer to the nodes by index_path: refused while the store holds nodes that are not in that
    file as they are (never persisted, edited since, or edited by another thread while the file was written)."""
    store = FlagHybridVectorStore(m3_path, devices="cpu")
    assert FlagHybridVectorStore.from_dict(store.to_dict()).client.ids == []  # empty, no file: nothing to lose
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS[:4])]
    path = str(tmp_path / "h.flag")

    def round_trip() -> list[str]:
        assert FlagHybridVectorStore.from_json(store.to_json()).client.ids == store.client.ids
        return FlagHybridVectorStore.from_dict(store.to_dict()).client.ids

    store.add(nodes[:2])
    for edit in (lambda: store.add(nodes[2:]), lambda: store.delete_nodes(["n0"]), store.clear):
        edit()
        assert not store.in_file()
        for call in (store.to_dict, store.to_json):
            with pytest.raises(ValueError, match=r"not all in a file as they are: persist\(path\) first"):
                call()
        store.persist(path)
        assert round_trip() == store.client.ids
    assert store.client.ids == []  # cleared, and persisted so

    index = store.client
    write = index.save

    def save_then_edit(target: Any) -> int:  # another thread deletes a node once the file is written
        revision = write(target)
        index.delete(["n1"])
        return revision

    store.add(nodes[:2])
    index.save = save_then_edit  # type: ignore[method-assign]
    store.persist(path)
    assert store.client.ids == ["n0"] and not store.in_file()  # the file holds n1 still
    with pytest.raises(ValueError, match="persist"):
        store.to_dict()


async def test_hybrid_async_add_does_not_block_the_loop(m3_path: str, ticks_while: Any) -> None:
    store = FlagHybridVectorStore(m3_path, devices="cpu")
    nodes = [TextNode(text=f"{t} (copy {c})", id_=f"n{i}-{c}") for c in range(6) for i, t in enumerate(TEXTS)]
    ids, ticks, elapsed = await ticks_while(store.async_add(nodes))
    assert len(ids) == len(store) == 72
    assert ticks >= 3 and ticks >= elapsed / 0.005 * 0.2, (ticks, elapsed)
    found = await store.aquery(VectorStoreQuery(query_str=QUERY, similarity_top_k=2))
    assert found.ids == store.query(VectorStoreQuery(query_str=QUERY, similarity_top_k=2)).ids


def test_hybrid_retriever_shares_its_index_and_files(m3_path: str, tmp_path: Path) -> None:
    nodes = [TextNode(text=t, id_=f"n{i}", metadata={"topic": TOPICS[i]}) for i, t in enumerate(TEXTS[:6])]
    retriever = FlagHybridRetriever(nodes=nodes, model_name=m3_path, similarity_top_k=3, mode="sparse+dense",
                                    m3_settings={"devices": "cpu"})
    store = retriever.vector_store
    assert store is retriever.vector_store and store.client is retriever._index and store.mode == "sparse+dense"
    retriever.candidates = 7
    assert retriever.vector_store is store and store.candidates == 7
    store.add([TextNode(text=TEXTS[6], id_="n6")])  # through the store: the retriever's too
    assert len(retriever) == 7
    expected = [(r.node.node_id, r.score) for r in retriever.retrieve(QUERY)]
    deeper = [r.node.node_id for r in retriever.retrieve(QUERY, k=4)]
    found = store.query(VectorStoreQuery(query_str=QUERY, similarity_top_k=3))
    assert list(zip(found.ids or [], found.similarities or [], strict=True)) == expected
    retriever.save(tmp_path / "retriever.flag")
    loaded_store = FlagHybridVectorStore.from_persist_path(tmp_path / "retriever.flag", m3_path, devices="cpu",
                                                           mode="sparse+dense")
    again = loaded_store.query(VectorStoreQuery(query_str=QUERY, similarity_top_k=3))
    assert list(zip(again.ids or [], again.similarities or [], strict=True)) == expected
    loaded_store.delete_nodes(["n0"])
    loaded_store.persist(str(tmp_path / "store.flag"))
    back = FlagHybridRetriever.load(tmp_path / "store.flag", m3_path, similarity_top_k=3, mode="sparse+dense",
                                    m3_settings={"devices": "cpu"})
    assert len(back) == 6 and back.vector_store.client is back._index
    assert [r.node.node_id for r in back.retrieve(QUERY)] == [i for i in deeper if i != "n0"][:3]
    assert isinstance(back.vector_store.get_nodes(["n1"])[0], BaseNode)
    with pytest.raises(IndexFileError, match="not a flagstack-index file"):
        FlagVectorStore.from_persist_path(tmp_path / "store.flag")  # a hybrid file is no dense store's


def test_gathered_async_queries_give_the_sync_results(embed_model: FlagEmbedding) -> None:
    store = FlagVectorStore()
    _index(store, embed_model)
    vector = embed_model.get_query_embedding(QUERY)

    async def main() -> list[Any]:
        return await asyncio.gather(*(store.aquery(VectorStoreQuery(query_embedding=vector, similarity_top_k=k))
                                      for k in (1, 2, 3)))

    results = asyncio.run(main())
    assert [r.ids for r in results] == [store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=k)).ids
                                       for k in (1, 2, 3)]
