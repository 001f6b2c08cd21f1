"""Ids, deletes, upserts and metadata filters in the dense and hybrid indexes: exact against brute force over what
remains, kept whole by save and load, and files written before entries had ids still load."""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core import BGEM3FlagModel
from flag_core.retrieval import DenseIndex, HybridIndex, PayloadFormat, VectorIndex
from flag_core.retrieval.archive import write_archive

DIM = 16


def embed(texts: list[str]) -> np.ndarray:
    """A deterministic unit vector per text (its hash seeds it): what a model gives, without a model."""
    rows = []
    for text in texts:
        seed = int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little") ^ len(text)
        vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        rows.append(vector / np.linalg.norm(vector))
    return np.stack(rows)


def embed_query(text: str) -> np.ndarray:
    return embed([text])[0]


TEXTS = [f"document number {n} about {topic}" for n, topic in enumerate(
    ["pandas", "bamboo", "python", "json", "paris", "france", "bears", "trees", "rivers", "cities"])]
META = [{"n": n, "even": n % 2 == 0, "topic": TEXTS[n].rsplit(" ", 1)[-1], "year": 2015 + n} for n in range(10)]
IDS = [f"doc-{n}" for n in range(10)]


def dense_index() -> DenseIndex:
    index = DenseIndex(embed, embed_query, {"model": "stub"})
    index.add(TEXTS, META, IDS)
    return index


def brute_force(query: str, keep: list[int], k: int) -> list[str]:
    scores = embed(TEXTS) @ embed_query(query)
    return [IDS[i] for i in sorted(keep, key=lambda i: (-scores[i], i))[:k]]


def test_ids_are_kept_given_or_made() -> None:
    index = DenseIndex(embed, embed_query)
    index.add(TEXTS[:2], ids=["a", None])
    index.add(TEXTS[2:3])
    assert index.ids[0] == "a" and len(set(index.ids)) == 3 and all(index.ids)
    assert "a" in index and "b" not in index
    with pytest.raises(ValueError, match="'a' is already in the index; upsert"):
        index.add(["another"], ids=["a"])
    with pytest.raises(ValueError, match="given twice"):
        index.add(["x", "y"], ids=["same", "same"])
    with pytest.raises(TypeError, match=r"ids\[0\] is 5"):
        index.add(["x"], ids=[5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="1 entries but 2 ids"):
        index.add(["x"], ids=["p", "q"])
    with pytest.raises(TypeError, match="wrap one id in a list"):
        index.delete("a")  # type: ignore[arg-type]
    assert len(index) == 3  # nothing refused was stored


def test_delete_upsert_and_get_keep_search_exact() -> None:
    index = dense_index()
    assert index.delete(["doc-3", "doc-7", "no-such-id"]) == 2
    assert index.delete(["doc-3"]) == 0
    keep = [n for n in range(10) if n not in (3, 7)]
    for query in ("pandas", "rivers and cities", "json"):
        assert [hit.id for hit in index.search(query, k=5)] == brute_force(query, keep, 5)
        assert [hit.id for hit in index.search(query, k=20)] == brute_force(query, keep, 20)
    # an upsert replaces in place of the old entry: one entry per id, new text, new vector, new payload
    assert index.upsert(["a new text about pandas"], [{"n": 100}], ["doc-5"]) == ["doc-5"]
    assert len(index) == 8 and index.ids.count("doc-5") == 1
    [entry] = index.get(["doc-5"])
    assert entry.text == "a new text about pandas" and entry.payload == {"n": 100}
    hit = index.search("a new text about pandas", k=1)[0]
    assert hit.id == "doc-5" and hit.score == pytest.approx(1.0, abs=1e-6)
    assert [e.id for e in index.get(["doc-9", "missing", "doc-0"])] == ["doc-9", "doc-0"]
    entry.payload["n"] = -1  # a copy
    assert index.get(["doc-5"])[0].payload == {"n": 100}


@pytest.mark.parametrize(("spec", "keep"), [
    ({"even": True}, [0, 2, 4, 6, 8]),
    ({"topic": {"$in": ["pandas", "bears", "json"]}}, [0, 3, 6]),
    ({"year": {"$gte": 2018, "$lt": 2022}}, [3, 4, 5, 6]),
    ({"$or": [{"n": 9}, {"topic": "paris"}]}, [4, 9]),
    (lambda metadata: metadata["n"] in (1, 8), [1, 8]),
    ({"n": 1000}, []),
])
def test_filters_are_exact(spec: Any, keep: list[int]) -> None:
    """A filtered search ranks exactly the matching entries (never a top-k cut first, then a filter)."""
    index = dense_index()
    for query in ("pandas", "cities"):
        assert [hit.id for hit in index.search(query, k=3, filter=spec)] == brute_force(query, keep, 3)
        found = index.search_by_vector(embed_query(query), k=20, filter=spec, vectors=True)
        assert [hit.id for hit in found] == brute_force(query, keep, 20)
        for hit in found:
            np.testing.assert_array_equal(hit.vector, embed([hit.text])[0])
    assert index.find(spec) == [IDS[n] for n in keep]
    with pytest.raises(ValueError, match="unknown operator"):
        index.search("pandas", k=3, filter={"n": {"$between": [1, 2]}})


def test_save_and_load_keep_ids_deletes_and_upserts(tmp_path: Path) -> None:
    index = dense_index()
    index.delete(["doc-1"])
    index.upsert(["replaced"], [{"n": 2, "even": True}], ["doc-2"])
    path = tmp_path / "edited.flag"
    index.save(path)
    loaded = DenseIndex.load(path, embed, embed_query, {"model": "stub"})
    assert loaded.ids == index.ids and len(loaded) == 9
    assert loaded.get(["doc-2"]) == index.get(["doc-2"])
    for spec in (None, {"even": True}):
        assert loaded.search("pandas", k=4, filter=spec) == index.search("pandas", k=4, filter=spec)
    loaded.delete(["doc-2"])
    loaded.add(["fresh"], ids=["doc-2"])  # the id is free again
    assert loaded.get(["doc-2"])[0].text == "fresh"


def older_file(path: Path, out: Path, version: int) -> None:
    """``path`` rewritten as flagstack wrote it before entries had ids: no ids.json, an older version."""
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        parts = {name: archive.read(name) for name in archive.namelist() if name not in ("manifest.json", "ids.json")}
    del manifest["sha256"]
    manifest["version"] = version
    write_archive(out, manifest, parts)


def test_a_file_without_ids_loads_with_ids_made_for_it(tmp_path: Path) -> None:
    """Version 1 dense files load: each entry takes the id its payload carries (the payload format's legacy_id),
    where it has one not taken yet, else a new one; searches give what they gave."""
    payloads = [{"meta": META[n], "doc_id": ["x", None, "x", "y"][n % 4]} for n in range(10)]
    legacy = PayloadFormat("test.Legacy", keys=("meta",), metadata=lambda p: p["meta"],
                           legacy_id=lambda p: p["doc_id"])
    index = DenseIndex(embed, embed_query, {"model": "stub"}, payload_format=legacy)
    index.add(TEXTS, payloads)
    index.save(tmp_path / "new.flag")
    older_file(tmp_path / "new.flag", tmp_path / "old.flag", 1)
    loaded = DenseIndex.load(tmp_path / "old.flag", embed, embed_query, {"model": "stub"}, payload_format=legacy)
    assert loaded.ids[0] == "x" and loaded.ids[3] == "y" and len(set(loaded.ids)) == 10
    assert [(h.text, h.score) for h in loaded.search("pandas", k=10, filter={"even": True})] == [
        (h.text, h.score) for h in index.search("pandas", k=10, filter={"even": True})]
    plain = VectorIndex.load(tmp_path / "old.flag")  # no payload format: new ids for all
    assert len(set(plain.ids)) == 10


def test_searches_during_deletes_see_whole_states() -> None:
    """Searches run while another thread deletes and upserts: every hit's id, text and vector belong together."""
    index = DenseIndex(embed, embed_query)
    texts = [f"text {n}" for n in range(300)]
    index.add(texts, [{"n": n} for n in range(300)], [str(n) for n in range(300)])
    stop = threading.Event()
    errors: list[BaseException] = []

    def edit() -> None:
        try:
            for n in range(0, 300, 3):
                index.delete([str(n)])
                index.upsert([f"text {n + 1}"], [{"n": n + 1}], [str(n + 1)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    editor = threading.Thread(target=edit)
    editor.start()
    while not stop.is_set():
        for hit in index.search_by_vector(embed_query("text 5"), k=10, vectors=True):
            assert hit.text == f"text {hit.id}" and hit.payload == {"n": int(hit.id)}
            np.testing.assert_array_equal(hit.vector, embed([hit.text])[0])
    editor.join()
    assert not errors and len(index) == 200


# ---- the hybrid index ------------------------------------------------------------------------------------------

HYBRID_TEXTS = [
    "The giant panda is a bear species endemic to China; it eats bamboo.",
    "Red pandas live in the eastern Himalayas and eat bamboo too.",
    "json.loads(s) deserializes a str containing a JSON document to a Python object.",
    "Paris is the capital and most populous city of France.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
    "subprocess.run runs a command and waits for it to complete.",
]


@pytest.fixture(scope="module")
def m3(m3_path: str) -> BGEM3FlagModel:
    return BGEM3FlagModel(m3_path, devices="cpu", use_fp16=False)


def hybrid_pair(m3: BGEM3FlagModel, keep: list[int], storage: str = "float32") -> HybridIndex:
    index = HybridIndex(m3, colbert_storage=storage)
    index.add([HYBRID_TEXTS[i] for i in keep], [{"n": i, "paris": "Paris" in HYBRID_TEXTS[i]} for i in keep],
              [f"h{i}" for i in keep])
    return index


def scored(hits: list[Any]) -> list[tuple[str, str, float]]:
    return [(hit.id, hit.text, round(hit.score, 6)) for hit in hits]


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_a_hybrid_index_after_deletes_and_upserts_equals_one_built_fresh(m3: BGEM3FlagModel, storage: str,
                                                                         tmp_path: Path) -> None:
    """Deleting and upserting documents keeps each document's dense, sparse and ColBERT outputs together: every mode
    ranks as an index built from the remaining documents does, in memory and after save and load."""
    index = hybrid_pair(m3, list(range(6)), storage)
    assert index.delete(["h1", "h4"]) == 2
    index.upsert([HYBRID_TEXTS[1]], [{"n": 1, "paris": False}], ["h2"])  # h2 now holds text 1
    fresh = HybridIndex(m3, colbert_storage=storage)
    fresh.add([HYBRID_TEXTS[i] for i in (0, 3, 5)], [{"n": i, "paris": "Paris" in HYBRID_TEXTS[i]} for i in (0, 3, 5)],
              ["h0", "h3", "h5"])
    fresh.add([HYBRID_TEXTS[1]], [{"n": 1, "paris": False}], ["h2"])
    assert index.ids == fresh.ids == ["h0", "h3", "h5", "h2"]
    index.save(tmp_path / "edited.flag")
    loaded = HybridIndex.load(tmp_path / "edited.flag", m3)
    for query in ("what do pandas eat?", "capital of France", "parse JSON"):
        for mode in ("dense", "sparse", "colbert", "sparse+dense", "hybrid"):
            expected = scored(fresh.search(query, k=4, mode=mode))
            assert scored(index.search(query, k=4, mode=mode)) == expected, (query, mode)
            assert scored(loaded.search(query, k=4, mode=mode)) == expected, (query, mode)
    assert loaded.get(["h2"])[0].text == HYBRID_TEXTS[1]


def test_hybrid_filters_take_candidates_among_matching_documents(m3: BGEM3FlagModel) -> None:
    """A filter applies before candidates are taken: with one candidate per side, the best matching document is
    still found (a filter applied after the cut would find nothing)."""
    index = hybrid_pair(m3, list(range(6)))
    only_paris = hybrid_pair(m3, [3, 4])
    for mode in ("dense", "sparse+dense", "hybrid", "colbert"):
        hits = index.search("what do pandas eat?", k=2, mode=mode, candidates=1, filter={"paris": True})
        assert scored(hits) == scored(only_paris.search("what do pandas eat?", k=2, mode=mode, candidates=1)), mode
        assert all(hit.payload["paris"] for hit in hits)
    assert index.find({"n": {"$lt": 2}}) == ["h0", "h1"]
    assert index.search("pandas", k=3, filter={"n": {"$gt": 99}}) == []


def test_a_hybrid_file_without_ids_loads(m3: BGEM3FlagModel, tmp_path: Path) -> None:
    index = hybrid_pair(m3, list(range(6)), "float16")
    index.save(tmp_path / "v3.flag")
    older_file(tmp_path / "v3.flag", tmp_path / "v2.flag", 2)
    loaded = HybridIndex.load(tmp_path / "v2.flag", m3)
    assert len(set(loaded.ids)) == 6 and loaded.colbert_storage == "float16"
    assert [(h.text, h.score) for h in loaded.search("pandas", k=3)] == [
        (h.text, h.score) for h in index.search("pandas", k=3)]
    loaded.delete([loaded.ids[0]])
    assert len(loaded) == len(loaded.sparse) == len(loaded.colbert) == 5


# ---- files written by flagstack 967415d (tests/fixtures/indexes/make_old_files.py) ---------------------------------

OLD = Path(__file__).parents[2] / "fixtures" / "indexes"
OLD_TEXTS = [
    "The giant panda is a bear species endemic to China; it eats bamboo.",
    "Paris is the capital and most populous city of France.",
    "json.loads(s) deserializes a str containing a JSON document to a Python object.",
    "Red pandas live in the eastern Himalayas and eat bamboo too.",
]


def test_dense_files_written_by_967415d_load(model_path: str) -> None:
    """The LangChain and LlamaIndex retrievers' files of 967415d (version 1, no ids) load: the vectors are what the
    model gives now, the payloads are intact, each entry has an id."""
    from flag_core import FlagModel

    model = FlagModel(model_path, devices="cpu", use_fp16=False, pooling_method="mean")
    for name in ("langchain-dense-967415d.flag", "llamaindex-dense-967415d.flag"):
        loaded = VectorIndex.load(OLD / name, settings=model.signature())  # the settings mean what they meant
        texts = [row["text"] for row in loaded.payloads]  # LlamaIndex's: the node's metadata, then its text
        assert [text.endswith(old) for text, old in zip(texts, OLD_TEXTS, strict=True)] == [True] * 4
        np.testing.assert_allclose(loaded.vectors, model.encode_corpus(texts), atol=1e-6)
        assert len(set(loaded.ids)) == 4 and all(loaded.ids)
    rows = VectorIndex.load(OLD / "langchain-dense-967415d.flag").payloads
    assert [row["payload"]["id"] for row in rows] == ["lc-0", "lc-1", None, "lc-3"]


def test_a_hybrid_file_written_by_967415d_loads_and_searches_as_a_fresh_one(m3: BGEM3FlagModel) -> None:
    loaded = HybridIndex.load(OLD / "langchain-hybrid-967415d.flag", m3)
    fresh = HybridIndex(m3, colbert_storage="float32")  # as the file's
    fresh.add(OLD_TEXTS)
    assert loaded.colbert_storage == "float32" and len(set(loaded.ids)) == 4
    for query in ("what do pandas eat?", "capital of France"):
        for mode in ("dense", "sparse", "colbert", "hybrid"):
            assert [(h.text, round(h.score, 5)) for h in loaded.search(query, k=4, mode=mode)] == [
                (h.text, round(h.score, 5)) for h in fresh.search(query, k=4, mode=mode)], (query, mode)
    loaded.delete([loaded.ids[0]])
    assert [h.text for h in loaded.search("panda", k=4)] == [h.text for h in fresh.search("panda", k=4)
                                                             if h.text != OLD_TEXTS[0]]


def test_a_repeated_filter_sees_every_change() -> None:
    """A filter's answers are kept between searches only while the index is unchanged."""
    index = dense_index()
    spec = {"topic": "pandas"}
    assert [hit.id for hit in index.search("bears", k=5, filter=spec)] == ["doc-0"]
    index.upsert(["pandas again"], [{"topic": "pandas"}], ["doc-4"])
    assert sorted(hit.id for hit in index.search("bears", k=5, filter=spec)) == ["doc-0", "doc-4"]
    index.delete(["doc-0"])
    assert [hit.id for hit in index.search("bears", k=5, filter=dict(spec))] == ["doc-4"]
    index.add(["more pandas"], [{"topic": "pandas"}], ["new"])
    assert sorted(hit.id for hit in index.search("bears", k=5, filter=spec)) == ["doc-4", "new"]


def test_a_save_returns_the_revision_it_wrote(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A change made while the file is being written (another thread's) is not in the file: the revision a save
    returns is the one it wrote, so a holder comparing it with the index's later revision knows."""
    from flag_core.retrieval import index as index_module

    dense = dense_index()
    written = index_module.write_archive

    def add_meanwhile(*args: Any, **kwargs: Any) -> None:
        dense.add(["added while saving"], ids=["late"])
        written(*args, **kwargs)

    monkeypatch.setattr(index_module, "write_archive", add_meanwhile)
    saved = dense.save(tmp_path / "racing.flag")
    monkeypatch.undo()
    assert saved != dense.revision and "late" in dense
    assert "late" not in DenseIndex.load(tmp_path / "racing.flag", embed, embed_query, {"model": "stub"})


def test_payloads_mean_the_same_before_a_save_and_after_a_load(tmp_path: Path) -> None:
    """Payloads are kept as JSON keeps them (a tuple is a list, a key a str), so filters and get answer the same in
    memory and after a load."""
    index = DenseIndex(embed, embed_query)
    index.add(["a text"], [{"tags": ("bears", "trees"), 7: "seven"}], ids=["x"])  # type: ignore[dict-item]
    assert index.get(["x"])[0].payload == {"tags": ["bears", "trees"], "7": "seven"}
    assert index.find({"tags": {"$contains": "bears"}}) == ["x"]
    index.save(tmp_path / "json.flag")
    loaded = DenseIndex.load(tmp_path / "json.flag", embed, embed_query)
    assert loaded.get(["x"]) == index.get(["x"]) and loaded.find({"tags": {"$contains": "bears"}}) == ["x"]


def test_ids_made_for_an_old_file_are_the_same_at_every_load(tmp_path: Path) -> None:
    index = dense_index()
    index.save(tmp_path / "new.flag")
    older_file(tmp_path / "new.flag", tmp_path / "old.flag", 1)
    first, second = (VectorIndex.load(tmp_path / "old.flag").ids for _ in range(2))
    assert first == second and len(set(first)) == 10


def test_bad_queries_and_ids_are_refused() -> None:
    index = dense_index()
    for bad in (np.full(DIM, np.nan), np.full(DIM, np.inf)):
        with pytest.raises(ValueError, match="holds NaN or infinity"):
            index.search_by_vector(bad, k=3)
    for unordered in ({"a", "b"}, {"a": 1, "b": 2}):
        with pytest.raises(TypeError, match="unordered"):
            index.add(["one", "two"], ids=unordered)  # type: ignore[arg-type]
    nested: dict[str, Any] = {"n": 1}
    for _ in range(5000):
        nested = {"$not": nested}
    with pytest.raises(ValueError, match="nested too deeply"):
        index.search("pandas", k=1, filter=nested)


def test_a_shallow_copy_is_an_index_of_its_own() -> None:
    import copy

    original = VectorIndex()
    original.add(np.eye(3, dtype=np.float32), [{"n": n} for n in range(3)], ids=["a", "b", "c"])
    clone = copy.copy(original)
    clone.add(np.ones((1, 3), dtype=np.float32), [{"n": 3}], ids=["d"])
    clone.delete(["a"])
    assert original.ids == ["a", "b", "c"] and len(original) == len(original.vectors) == 3
    assert original.delete(["b"]) == 1 and clone.ids == ["b", "c", "d"]


def test_a_field_named_with_dots_is_read_whole() -> None:
    from flag_core.retrieval import compile_filter

    match = compile_filter({"file.name": "a.txt", "meta.lang": "en"})
    assert match is not None
    assert match({"file.name": "a.txt", "meta": {"lang": "en"}})
    assert not match({"file": {"name": "b.txt"}, "file.name": "b.txt", "meta": {"lang": "en"}})


def test_hybrid_hits_carry_their_stored_vectors_when_asked(m3: BGEM3FlagModel) -> None:
    index = hybrid_pair(m3, list(range(6)))
    for hit in index.search("pandas", k=3, vectors=True):
        assert hit.vector is not None
        np.testing.assert_array_equal(hit.vector, index.dense.vectors[hit.position])
    assert all(hit.vector is None for hit in index.search("pandas", k=3))
