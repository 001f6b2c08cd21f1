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
    hybrid = HybridIndex(m3)
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
