"""VectorIndex: exact inner-product top-k (numpy and FAISS agree), input checks, atomic save and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flag_core.retrieval.index import IndexFileError, VectorIndex


@pytest.fixture
def vectors() -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((300, 16)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def brute_force(data: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = data @ query
    return sorted(range(len(data)), key=lambda i: (-scores[i], i))[:k]


@pytest.mark.parametrize("use_faiss", [False, True])
def test_top_k_equals_brute_force(vectors: np.ndarray, use_faiss: bool) -> None:
    if use_faiss:
        pytest.importorskip("faiss", reason="needs the faiss extra")
    index = VectorIndex(use_faiss=use_faiss)
    index.add(vectors[:200], [{"i": i} for i in range(200)])
    index.add(vectors[200:], [{"i": i} for i in range(200, 300)])
    queries = vectors[:7] + 0.1
    for query, hits in zip(queries, index.search(queries, 10), strict=True):
        assert [i for i, _ in hits] == brute_force(vectors, query, 10)
        np.testing.assert_allclose([s for _, s in hits], (vectors @ query)[[i for i, _ in hits]], atol=1e-5)
    assert len(index.search(vectors[0], 1000)[0]) == 300  # k larger than the index: everything, ranked
    import copy
    import pickle

    for clone in (copy.deepcopy(index), pickle.loads(pickle.dumps(index))):  # after a search built the FAISS index
        assert clone.search(queries, 10) == index.search(queries, 10)


def test_ties_are_settled_by_position() -> None:
    index = VectorIndex()
    index.add(np.ones((6, 4), dtype=np.float32), [{} for _ in range(6)])
    assert [i for i, _ in index.search(np.ones(4), 3)[0]] == [0, 1, 2]


def test_bad_input_is_refused(vectors: np.ndarray) -> None:
    index = VectorIndex()
    with pytest.raises(ValueError, match="2-D"):
        index.add(vectors[0], [{}])
    with pytest.raises(ValueError, match="one payload per vector"):
        index.add(vectors[:3], [{}])
    bad = vectors[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="vector 1 holds NaN"):
        index.add(bad, [{}, {}, {}])
    index.add(vectors[:3], [{}, {}, {}])
    with pytest.raises(ValueError, match="dimension 8"):
        index.add(np.zeros((1, 8), dtype=np.float32), [{}])
    with pytest.raises(ValueError, match="k must be a positive int"):
        index.search(vectors[0], 0)
    with pytest.raises(ValueError, match="query vectors have dimension 8"):
        index.search(np.zeros(8), 2)
    assert VectorIndex().search(vectors[:2], 3) == [[], []]


def test_save_load_round_trip_and_damage(vectors: np.ndarray, tmp_path: Path) -> None:
    index = VectorIndex()
    index.add(vectors, [{"id": str(i), "text": f"doc {i}"} for i in range(len(vectors))])
    file = tmp_path / "docs.flagindex"
    index.save(file, settings={"model": "m", "pooling": "cls"})
    assert [p.name for p in tmp_path.iterdir()] == ["docs.flagindex"]  # no temp file left behind
    loaded = VectorIndex.load(file, settings={"model": "m", "pooling": "cls"})
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    assert loaded.payloads == index.payloads
    with pytest.raises(IndexFileError, match="other embedding settings"):
        VectorIndex.load(file, settings={"model": "m", "pooling": "mean"})
    data = file.read_bytes()
    (tmp_path / "cut.flagindex").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError, match=r"cut\.flagindex"):
        VectorIndex.load(tmp_path / "cut.flagindex")
    with pytest.raises(IndexFileError, match="no index file"):
        VectorIndex.load(tmp_path / "missing.flagindex")
    with pytest.raises(TypeError, match="payload 0 cannot be saved as JSON"):
        unsaveable = VectorIndex()
        unsaveable.add(vectors[:1], [{"x": object()}])
        unsaveable.save(tmp_path / "bad.flagindex")
    assert not (tmp_path / "bad.flagindex").exists()


def test_numpy_integers_are_counts(vectors: np.ndarray) -> None:
    from flag_core.inference.inputs import check_positive_int

    index = VectorIndex()
    index.add(vectors[:10], [{} for _ in range(10)])
    assert len(index.search(vectors[0], np.int64(3))[0]) == 3
    assert len(index.search(vectors[0], np.uint8(2))[0]) == 2
    value = check_positive_int(np.int32(7), "k", allow_none=False)
    assert value == 7 and type(value) is int
    for bad in (True, np.bool_(True), 2.0, np.float64(2), "2"):
        with pytest.raises(TypeError, match="k must be a positive int"):
            check_positive_int(bad, "k")
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        check_positive_int(np.int64(0), "k")
