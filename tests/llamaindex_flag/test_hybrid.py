"""LlamaIndex's BGE-M3 classes: sparse embeddings (with LlamaIndex's sparse-embedding events) and the hybrid
retriever (flag_core's HybridIndex results, retrieval events, async, save/load, copies)."""

from __future__ import annotations

import asyncio
import copy
import pickle
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.schema import TextNode

from flag_core import BGEM3FlagModel, IndexFileError
from flag_core.retrieval import HybridIndex
from llamaindex_flag import FlagHybridRetriever, FlagSparseEmbedding

TEXTS = [
    "The giant panda is a bear species endemic to China; it eats bamboo.",
    "Paris is the capital and most populous city of France.",
    "json.loads parses a JSON document into a Python object.",
    "Red pandas live in the eastern Himalayas and eat bamboo too.",
]


class Recorder(BaseEventHandler):
    events: list[Any] = Field(default_factory=list)

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(type(event).__name__)


@pytest.fixture
def recorder() -> Any:
    handler = Recorder(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


def test_sparse_embedding_and_its_events(m3_path: str, recorder: Any) -> None:
    sparse = FlagSparseEmbedding(model_name=m3_path, devices="cpu", embed_batch_size=2)
    model = BGEM3FlagModel(m3_path, devices="cpu")
    expected = model.encode_corpus(TEXTS, return_dense=False, return_sparse=True)["lexical_weights"]
    got = sparse.get_text_embedding_batch(TEXTS)
    assert got == [{int(t): pytest.approx(w) for t, w in e.items()} for e in expected]
    assert "SparseEmbeddingStartEvent" in recorder.events and "SparseEmbeddingEndEvent" in recorder.events
    query = sparse.get_query_embedding("what do pandas eat?")
    assert query and all(isinstance(t, int) for t in query)
    assert asyncio.run(sparse.aget_query_embedding("what do pandas eat?")) == query
    with pytest.raises(ValueError, match="querry"):
        FlagSparseEmbedding(model_name=m3_path, querry_instruction="x")


def test_hybrid_retriever(m3_path: str, recorder: Any, tmp_path: Path) -> None:
    nodes = [TextNode(text=t, id_=f"n{i}", metadata={"tags": ["x"]}, excluded_embed_metadata_keys=["tags"])
             for i, t in enumerate(TEXTS)]
    retriever = FlagHybridRetriever(nodes=nodes, model_name=m3_path, similarity_top_k=2,
                                    m3_settings={"devices": "cpu"})
    results = retriever.retrieve("what do pandas eat?")
    index = HybridIndex(BGEM3FlagModel(m3_path, devices="cpu"))
    index.add(TEXTS)
    hits = index.search("what do pandas eat?", k=2)
    assert [r.node.node_id for r in results] == [f"n{h.position}" for h in hits]
    assert [r.score for r in results] == pytest.approx([h.score for h in hits], abs=1e-6)
    assert set(results[0].node.metadata["flagstack_scores"]) >= {"dense", "sparse", "colbert", "hybrid"}
    assert "RetrievalStartEvent" in recorder.events and "RetrievalEndEvent" in recorder.events
    results[0].node.metadata["tags"].append("edited")  # results are copies
    assert retriever.retrieve("what do pandas eat?")[0].node.metadata["tags"] == ["x"]
    assert [r.node.node_id for r in asyncio.run(retriever.aretrieve("what do pandas eat?"))] == \
        [r.node.node_id for r in results]
    retriever.save(tmp_path / "h.flag")
    loaded = FlagHybridRetriever.load(tmp_path / "h.flag", m3_path, similarity_top_k=2, m3_settings={"devices": "cpu"})
    assert [r.node.node_id for r in loaded.retrieve("Paris")] == [r.node.node_id for r in retriever.retrieve("Paris")]
    with pytest.raises(IndexFileError, match="passage_max_length"):
        FlagHybridRetriever.load(tmp_path / "h.flag", m3_path, m3_settings={"passage_max_length": 64})
    with pytest.raises(ValueError, match="mode"):
        FlagHybridRetriever(model_name=m3_path, mode="bm25")


@pytest.mark.parametrize(
    "clone", [copy.deepcopy, lambda obj: pickle.loads(pickle.dumps(obj))], ids=["deepcopy", "pickle"]
)
def test_copies_keep_the_nodes_and_share_the_model(m3_path: str, clone: Any) -> None:
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
    retriever = FlagHybridRetriever(nodes=nodes, model_name=m3_path, similarity_top_k=2, mode="sparse+dense",
                                    m3_settings={"devices": "cpu"})
    copied = clone(retriever)
    assert copied._index.model is retriever._index.model  # rebuilt through build_m3: the same loaded model
    assert [(r.node.node_id, r.score) for r in copied.retrieve("Paris")] == [
        (r.node.node_id, r.score) for r in retriever.retrieve("Paris")]
    copied.add_nodes([TextNode(text="Pandas sleep a lot.", id_="extra")])
    assert (len(copied), len(retriever)) == (len(TEXTS) + 1, len(TEXTS))  # a copy, not a view


def test_path_model_names_numpy_integers_and_crafted_nodes(m3_path: str, tmp_path: Path) -> None:
    import json
    import zipfile

    import numpy as np

    from flag_core.retrieval.archive import write_archive

    sparse = FlagSparseEmbedding(model_name=Path(m3_path), devices="cpu", embed_batch_size=np.int64(2))
    assert sparse.model_name == m3_path and sparse.embed_batch_size == 2
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
    retriever = FlagHybridRetriever(nodes=nodes, model_name=Path(m3_path), similarity_top_k=np.int64(2),
                                    candidates=np.int64(3), m3_settings={"devices": "cpu"})
    assert retriever.model_name == m3_path and type(retriever.similarity_top_k) is int
    assert len(retriever.retrieve("pandas")) == 2
    retriever.save(tmp_path / "h.flag")
    loaded = FlagHybridRetriever.load(tmp_path / "h.flag", Path(m3_path), m3_settings={"devices": "cpu"})
    assert len(loaded) == len(TEXTS)
    with zipfile.ZipFile(tmp_path / "h.flag") as archive:
        manifest = json.loads(archive.read("manifest.json"))
        parts = {name: archive.read(name) for name in archive.namelist() if name != "manifest.json"}
    del manifest["sha256"]
    rows = [json.loads(line) for line in parts["payloads.jsonl"].decode().split("\n") if line]
    rows[2]["payload"]["node"] = {"__type__": "no such node", "__data__": {}}
    parts["payloads.jsonl"] = "".join(json.dumps(row) + "\n" for row in rows).encode()
    write_archive(tmp_path / "crafted.flag", manifest, parts)
    with pytest.raises(IndexFileError, match=r"crafted\.flag: entry 2 is not a llamaindex_flag"):
        FlagHybridRetriever.load(tmp_path / "crafted.flag", m3_path, m3_settings={"devices": "cpu"})


def test_settings_are_fields_and_m3_settings_expands_into_them(m3_path: str) -> None:
    from flag_core.settings import M3Fields

    given = FlagHybridRetriever(model_name=m3_path, m3_settings={"devices": "cpu", "passage_max_length": 128})
    fields = FlagHybridRetriever(model_name=m3_path, devices="cpu", passage_max_length=128)
    assert set(M3Fields.model_fields) <= set(FlagHybridRetriever.model_fields)
    assert given == fields and given.passage_max_length == 128
    assert given.m3_settings == fields.m3_settings and isinstance(given.m3_settings, dict)  # as it always was
    assert given._index.model is fields._index.model  # one shared model for equal settings
    with pytest.raises(TypeError, match="m3_settings has 'pooling', which is not a setting"):
        FlagHybridRetriever(model_name=m3_path, m3_settings={"pooling": "cls"})
    with pytest.raises(ValueError, match="devices is given twice"):
        FlagHybridRetriever(model_name=m3_path, devices="cpu", m3_settings={"devices": "cpu"})
    with pytest.raises(ValueError, match="model_name is required"):
        FlagHybridRetriever()
    with pytest.raises(ValueError, match="weights"):
        FlagHybridRetriever(model_name=m3_path, devices="cpu", weights=(0, 0, 0))
    with pytest.raises(ValueError, match="querry"):
        FlagHybridRetriever(model_name=m3_path, devices="cpu", querry_instruction_for_retrieval="x")


def test_per_call_k_and_mode(m3_path: str, recorder: Any) -> None:
    import numpy as np
    from llama_index.core.schema import QueryBundle

    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
    retriever = FlagHybridRetriever(nodes=nodes, model_name=m3_path, similarity_top_k=2, devices="cpu")
    index = HybridIndex(BGEM3FlagModel(m3_path, devices="cpu"))
    index.add(TEXTS)
    hits = index.search("what do pandas eat?", k=3, mode="sparse+dense")
    recorder.events.clear()
    results = retriever.retrieve("what do pandas eat?", k=3, mode="sparse+dense")
    assert [r.node.node_id for r in results] == [f"n{h.position}" for h in hits]
    assert [r.score for r in results] == pytest.approx([h.score for h in hits], abs=1e-6)
    assert "RetrievalStartEvent" in recorder.events and "RetrievalEndEvent" in recorder.events
    assert [r.node.node_id for r in asyncio.run(retriever.aretrieve("what do pandas eat?", k=3, mode="sparse+dense"))
            ] == [r.node.node_id for r in results]
    assert len(retriever.retrieve(QueryBundle("pandas"), k=np.int64(1))) == 1
    assert len(retriever.retrieve("pandas")) == 2 and retriever.mode == "hybrid"  # per call only
    with pytest.raises(ValueError, match="mode must be one of"):
        retriever.retrieve("pandas", mode="bm25")
    with pytest.raises(ValueError, match="k must be a positive int"):
        retriever.retrieve("pandas", k=0)


def test_to_dict_from_dict_and_json_give_an_equal_retriever(m3_path: str, tmp_path: Path) -> None:
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
    retriever = FlagHybridRetriever(nodes=nodes, model_name=m3_path, similarity_top_k=3, mode="sparse+dense",
                                    weights=(1, 1, 0), candidates=3,
                                    m3_settings={"devices": "cpu", "passage_max_length": 128})
    with pytest.raises(ValueError, match=r"save\(path\) first"):
        retriever.to_dict()  # the nodes are only in memory
    retriever.save(tmp_path / "h.flag")
    data = retriever.to_dict()
    assert data["class_name"] == "FlagHybridRetriever" and data["index_path"] == str(tmp_path / "h.flag")
    assert data["passage_max_length"] == 128 and data["mode"] == "sparse+dense" and "callback_manager" not in data
    for back in (FlagHybridRetriever.from_dict(data), FlagHybridRetriever.from_json(retriever.to_json())):
        assert back == retriever and back._index.model is retriever._index.model
        assert [(r.node.node_id, r.score) for r in back.retrieve("Paris")] == [
            (r.node.node_id, r.score) for r in retriever.retrieve("Paris")]
    loaded = FlagHybridRetriever.load(tmp_path / "h.flag", m3_path, similarity_top_k=3, mode="sparse+dense",
                                      weights=(1, 1, 0), candidates=3, devices="cpu", passage_max_length=128)
    assert loaded == retriever and copy.deepcopy(retriever) == retriever
    loaded.add_nodes([TextNode(text="Pandas sleep a lot.", id_="extra")])
    assert loaded != retriever
    with pytest.raises(ValueError, match="save"):
        loaded.to_dict()


def test_flagembeddings_mode_name_is_an_alias_of_hybrid(m3_path: str) -> None:
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
    retriever = FlagHybridRetriever(nodes=nodes, model_name=m3_path, devices="cpu", mode="colbert+sparse+dense")
    assert retriever.mode == "hybrid"  # kept by its canonical name
    assert [(r.node.node_id, r.score) for r in retriever.retrieve("pandas", mode="colbert+sparse+dense")] == [
        (r.node.node_id, r.score) for r in retriever.retrieve("pandas", mode="hybrid")]


def test_colbert_storage_is_a_setting_kept_in_the_file(m3_path: str, tmp_path: Path) -> None:
    """``colbert_storage`` is taken as ``candidates`` and ``weights`` are; the file keeps the kind (None: the
    file's), a kind given converts it, and to_dict / from_dict carry the field."""
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
    retriever = FlagHybridRetriever(nodes=nodes, model_name=m3_path, devices="cpu", colbert_storage="binary")
    assert retriever._index.colbert_storage == "binary" and retriever.colbert_storage == "binary"
    retriever.save(tmp_path / "h.flag")
    back = FlagHybridRetriever.from_dict(retriever.to_dict())
    assert back == retriever and back._index.colbert_storage == "binary"
    loaded = FlagHybridRetriever.load(tmp_path / "h.flag", m3_path, devices="cpu")
    assert loaded.colbert_storage is None and loaded._index.colbert_storage == "binary"
    assert [(r.node.node_id, r.score) for r in loaded.retrieve("Paris")] == [
        (r.node.node_id, r.score) for r in retriever.retrieve("Paris")]
    converted = FlagHybridRetriever.load(tmp_path / "h.flag", m3_path, devices="cpu", colbert_storage="float32")
    assert converted._index.colbert_storage == "float32"
    with pytest.raises(ValueError, match="colbert_storage must be one of"):
        FlagHybridRetriever(model_name=m3_path, devices="cpu", colbert_storage="fp8")
