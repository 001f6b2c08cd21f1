"""Hybrid retrieval over BGE-M3's three outputs: exact against brute force, ColBERT on candidates only, saved
atomically and checked on loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core import BGEM3FlagModel, IndexFileError
from flag_core.retrieval import HybridIndex, MultiVectors, SparseIndex

TEXTS = [
    "The giant panda is a bear species endemic to China; it eats bamboo.",
    "Red pandas live in the eastern Himalayas and eat bamboo too.",
    "json.loads(s) deserializes a str containing a JSON document to a Python object.",
    "Paris is the capital and most populous city of France.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
    "subprocess.run runs a command and waits for it to complete.",
    "Bamboo forests cover large parts of south-west China.",
    "Python's json module can also write JSON with json.dumps.",
]
QUERIES = ["what do pandas eat?", "parse JSON in Python", "capital of France"]
WEIGHTS = (0.4, 0.2, 0.4)


@pytest.fixture(scope="module")
def m3(m3_path: str) -> BGEM3FlagModel:
    return BGEM3FlagModel(m3_path, devices="cpu", use_fp16=False)


@pytest.fixture(scope="module")
def index(m3: BGEM3FlagModel) -> HybridIndex:
    hybrid = HybridIndex(m3, colbert_storage="float32")  # exact: brute force below is float32
    hybrid.add(TEXTS[:5], [{"n": i} for i in range(5)])
    hybrid.add(TEXTS[5:], [{"n": i} for i in range(5, len(TEXTS))])
    return hybrid


def brute_force(m3: BGEM3FlagModel, query: str) -> dict[str, np.ndarray]:
    q = m3.encode_queries(query, return_sparse=True, return_colbert_vecs=True)
    p = m3.encode_corpus(TEXTS, return_sparse=True, return_colbert_vecs=True)
    dense = p["dense_vecs"] @ q["dense_vecs"]
    sparse = np.array([m3.compute_lexical_matching_score(q["lexical_weights"], w) for w in p["lexical_weights"]])
    colbert = np.array([m3.colbert_score(q["colbert_vecs"], c) for c in p["colbert_vecs"]])
    hybrid = (WEIGHTS[0] * dense + WEIGHTS[1] * sparse + WEIGHTS[2] * colbert) / sum(WEIGHTS)
    return {"dense": dense, "sparse": sparse, "colbert": colbert, "hybrid": hybrid}


@pytest.mark.parametrize("query", QUERIES)
def test_every_mode_equals_brute_force(index: HybridIndex, m3: BGEM3FlagModel, query: str) -> None:
    expected = brute_force(m3, query)
    for mode in ("dense", "sparse", "colbert", "hybrid"):
        hits = index.search(query, k=3, mode=mode, weights=WEIGHTS, candidates=len(TEXTS))
        order = sorted(range(len(TEXTS)), key=lambda i: (-expected[mode][i], i))[:3]
        if mode == "sparse":
            order = [i for i in order if expected["sparse"][i] > 0]
        assert [h.position for h in hits] == order, mode
        for hit in hits:
            assert hit.payload == {"n": hit.position} and hit.text == TEXTS[hit.position]
            assert hit.score == pytest.approx(expected[mode][hit.position], abs=1e-5)
            assert hit.scores["dense"] == pytest.approx(expected["dense"][hit.position], abs=1e-5)


def test_sparse_index_scores_every_document(index: HybridIndex, m3: BGEM3FlagModel) -> None:
    q = m3.encode_queries("pandas eat bamboo in China", return_dense=False, return_sparse=True)["lexical_weights"]
    p = m3.encode_corpus(TEXTS, return_dense=False, return_sparse=True)["lexical_weights"]
    np.testing.assert_allclose(index.sparse.scores(q), m3.compute_lexical_matching_score([q], p)[0], atol=1e-5)
    assert index.sparse.document(0) == pytest.approx(p[0], abs=1e-6)
    assert SparseIndex().scores(q).shape == (0,)


def test_colbert_runs_on_the_candidates_only(index: HybridIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    original = MultiVectors.maxsim

    def counting(self: MultiVectors, query: Any, positions: Any) -> Any:
        seen.append(len(positions))
        return original(self, query, positions)

    monkeypatch.setattr(MultiVectors, "maxsim", counting)
    index.search("pandas", k=2, candidates=2)
    assert seen and seen[0] <= 4  # the union of two dense and two sparse candidates, never the corpus
    index.search("pandas", k=2, mode="sparse+dense", candidates=2)
    assert len(seen) == 1  # modes without ColBERT never compute it


def test_save_load_and_bad_input(index: HybridIndex, m3: BGEM3FlagModel, m3_path: str, tmp_path: Path) -> None:
    path = tmp_path / "hybrid.flag"
    index.save(path)
    loaded = HybridIndex.load(path, m3)
    for query in QUERIES:
        assert loaded.search(query, k=4) == index.search(query, k=4)
    data = path.read_bytes()
    (tmp_path / "cut.flag").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError, match=r"cut\.flag"):
        HybridIndex.load(tmp_path / "cut.flag", m3)
    other = BGEM3FlagModel(m3_path, devices="cpu", passage_max_length=64)
    with pytest.raises(IndexFileError, match="passage_max_length"):
        HybridIndex.load(path, other)
    with pytest.raises(ValueError, match="mode"):
        index.search("x", k=1, mode="bm25")
    with pytest.raises(ValueError, match="weights"):
        index.search("x", k=1, weights=(1, -1, 0))
    assert HybridIndex(m3).search("anything", k=3) == []


def test_an_index_without_colbert_vectors_loads(m3: BGEM3FlagModel, tmp_path: Path) -> None:
    """multi_vectors=False is saved in the manifest and loaded back; files written before it was (no such key,
    one ColBERT offset) load as well. The ColBERT modes then give the same clear error as before saving."""
    import json
    import zipfile

    from flag_core.retrieval.archive import write_archive

    index = HybridIndex(m3, multi_vectors=False)
    index.add(TEXTS[:2], [{"n": 0}, {"n": 1}])
    path = tmp_path / "dense-sparse.flag"
    index.save(path)
    loaded = HybridIndex.load(path, m3)
    assert loaded.multi_vectors is False and len(loaded) == 2
    for mode in ("dense", "sparse", "sparse+dense"):
        assert loaded.search("what do pandas eat?", k=2, mode=mode) == index.search("what do pandas eat?", k=2,
                                                                                     mode=mode)
    with pytest.raises(ValueError, match="multi_vectors=False"):
        loaded.search("pandas", k=1, mode="hybrid")
    with zipfile.ZipFile(path) as archive:  # as 967415d wrote it: no multi_vectors in the manifest
        manifest = json.loads(archive.read("manifest.json"))
        parts = {name: archive.read(name) for name in archive.namelist() if name != "manifest.json"}
    del manifest["multi_vectors"], manifest["sha256"]
    write_archive(tmp_path / "older.flag", manifest, parts)
    older = HybridIndex.load(tmp_path / "older.flag", m3)
    assert older.multi_vectors is False and older.search("Paris", k=1, mode="dense") == loaded.search(
        "Paris", k=1, mode="dense")


KINDS = ("float16", "int8", "int4", "binary")


@pytest.fixture(scope="module")
def stored(m3: BGEM3FlagModel) -> dict[str, HybridIndex]:
    """The same documents in one index per ColBERT storage kind (float32 included)."""
    out = {}
    for kind in ("float32", *KINDS):
        out[kind] = HybridIndex(m3, colbert_storage=kind)
        out[kind].add(TEXTS, [{"n": i} for i in range(len(TEXTS))])
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_each_colbert_storage_ranks_close_to_float32(stored: dict[str, HybridIndex], kind: str) -> None:
    """float16 gives float32's rankings in every ColBERT mode and its scores to 1e-3; int8 its hybrid top 3 and
    scores to 1e-2; int4 its hybrid top 3 and scores to 5e-2; binary (signs and a scale a row) ColBERT scores that
    still pick float32's best document for every query. Each kind stores its rows as it says, and reads them back as
    float32."""
    reference, index = stored["float32"], stored[kind]
    tolerance = {"float16": 1e-3, "int8": 1e-2, "int4": 5e-2, "binary": 0.2}[kind]
    for query in QUERIES:
        for mode in ("colbert", "hybrid"):
            want = reference.search(query, k=3, mode=mode, candidates=len(TEXTS))
            got = index.search(query, k=3, mode=mode, candidates=len(TEXTS))
            if kind == "float16" or (kind in ("int8", "int4") and mode == "hybrid"):
                assert [h.position for h in got] == [h.position for h in want], (kind, mode, query)
            assert got[0].position == want[0].position, (kind, mode, query)
            for hit in got:
                assert hit.scores["colbert"] == pytest.approx(reference.colbert.maxsim(
                    reference.model.encode_queries(query, return_colbert_vecs=True)["colbert_vecs"],
                    [hit.position])[0], abs=tolerance)
    rows, original = index.colbert.document(0), reference.colbert.document(0)
    assert rows.dtype == np.float32 and rows.shape == original.shape
    if kind == "binary":
        assert (np.sign(rows) == np.where(original > 0, 1, -1)).all()
    expected = {"float16": np.float16, "int8": np.int8, "int4": np.uint8, "binary": np.uint8}[kind]
    assert index.colbert._rows[0].dtype == expected and index.colbert_storage == kind


@pytest.mark.parametrize("kind", ("float32", *KINDS))
def test_each_colbert_storage_saves_and_loads(stored: dict[str, HybridIndex], m3: BGEM3FlagModel, kind: str,
                                              tmp_path: Path) -> None:
    """A saved index loads with its storage and searches exactly as before; every kind is written as version 3
    (ids); the ColBERT parts shrink with the kind; a kind given at load converts the file's rows."""
    import json
    import zipfile

    index = stored[kind]
    path = tmp_path / f"{kind}.flag"
    index.save(path)
    loaded = HybridIndex.load(path, m3)
    assert loaded.colbert_storage == kind and len(loaded) == len(TEXTS)
    for query in QUERIES:
        for mode in ("colbert", "hybrid"):
            assert loaded.search(query, k=4, mode=mode) == index.search(query, k=4, mode=mode)
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        colbert_bytes = archive.getinfo("colbert.npy").file_size
        assert ("colbert_scales.npy" in archive.namelist()) == (kind in ("int8", "int4", "binary"))
    assert manifest["version"] == 3 and manifest["colbert_storage"] == kind
    rows = sum(len(index.colbert.document(i)) for i in range(len(index)))
    dim = index.colbert.dim
    assert dim is not None
    per_row = {"float32": 4 * dim, "float16": 2 * dim, "int8": dim, "int4": dim // 2, "binary": dim // 8}[kind]
    assert rows * per_row <= colbert_bytes <= rows * per_row + 256  # the rows and a .npy header
    converted = HybridIndex.load(path, m3, colbert_storage="int8")
    assert converted.colbert_storage == "int8" and converted.colbert._rows[0].dtype == np.int8
    with pytest.raises(ValueError, match="colbert_storage must be one of"):
        HybridIndex.load(path, m3, colbert_storage="int2")


def test_files_without_a_colbert_storage_load_as_float32(stored: dict[str, HybridIndex], m3: BGEM3FlagModel,
                                                         tmp_path: Path) -> None:
    """A version 1 file as flagstack wrote it before ColBERT storage kinds (float32 rows, no colbert_storage or
    colbert_dim in its manifest, no ids) loads as float32 and searches as it did; a version 1 manifest naming another
    kind, a version 2 one naming an unknown kind, and a version 4 file are refused, naming the file."""
    import json
    import zipfile

    from flag_core.retrieval.archive import write_archive

    path = tmp_path / "float32.flag"
    stored["float32"].save(path)
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        parts = {name: archive.read(name) for name in archive.namelist() if name not in ("manifest.json", "ids.json")}
    del manifest["colbert_storage"], manifest["colbert_dim"], manifest["sha256"]
    manifest["version"] = 1
    write_archive(tmp_path / "older.flag", manifest, parts)
    older = HybridIndex.load(tmp_path / "older.flag", m3)
    assert older.colbert_storage == "float32"
    for query in QUERIES:
        assert [(h.position, h.text, h.score) for h in older.search(query, k=4)] == [
            (h.position, h.text, h.score) for h in stored["float32"].search(query, k=4)]
    for name, changes, message in [
        ("v1-int8.flag", {"colbert_storage": "int8"}, "colbert_storage is 'int8'; a version 1 file holds float32"),
        ("v2-int2.flag", {"version": 2, "colbert_storage": "int2"}, "colbert_storage is 'int2'"),
        ("v2-none.flag", {"version": 2}, "colbert_storage is None"),
        ("v4.flag", {"version": 4}, "version 4; this flagstack reads version 1 or 2 or 3"),
    ]:
        write_archive(tmp_path / name, {**manifest, **changes}, parts)
        with pytest.raises(IndexFileError, match=f"{name}.*{message}"):
            HybridIndex.load(tmp_path / name, m3)


def test_colbert_storage_is_checked(m3: BGEM3FlagModel) -> None:
    for bad in ("int2", "fp16", None, 8):
        with pytest.raises(ValueError, match="colbert_storage must be one of float16, float32, int8, int4, binary"):
            HybridIndex(m3, colbert_storage=bad)  # type: ignore[arg-type]
    assert HybridIndex(m3).colbert_storage == "float16"
    store = MultiVectors("float16")
    with pytest.raises(ValueError, match="float16's range"):
        store.add([np.full((2, 4), 1e6, dtype=np.float32)])
    assert len(store) == 0


@pytest.mark.parametrize("kind", ("float32", *KINDS))
def test_maxsim_over_candidates_equals_one_document_at_a_time(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compact kinds' MaxSim reads candidates back in shared buffers (several of them here: the buffer is made
    small); its scores equal FlagEmbedding's MaxSim of each document read back alone to float32 precision (one
    matrix product over many documents may round a sum one unit differently), empty documents and a document larger
    than the buffer included."""
    from flag_core.inference.fusion import maxsim
    from flag_core.retrieval import hybrid

    monkeypatch.setattr(hybrid, "_CHUNK_ROWS", 64)
    rng = np.random.default_rng(7)
    documents = [rng.standard_normal((int(n), 12)).astype(np.float32) for n in [0, 5, 200, 30, 0, 64, 65, 1, 40]]
    store = MultiVectors(kind)
    store.add(documents)
    query = rng.standard_normal((4, 12)).astype(np.float32)
    positions = [8, 2, 0, 5, 3, 6, 1, 4, 7]
    expected = maxsim(query, [store.document(p) for p in positions])
    np.testing.assert_allclose(store.maxsim(query, positions), expected, rtol=1e-6, atol=1e-7)
    assert store.maxsim(query, []).shape == (0,)
