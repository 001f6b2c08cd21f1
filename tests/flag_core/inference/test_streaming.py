"""Encoding collections larger than memory: chunks in order, streamed into a .npy file written atomically."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flag_core import FlagModel
from flag_core.inference.streaming import chunks_of, write_npy

TEXTS = [f"passage {i} about {'pandas' if i % 2 else 'json'} " * (1 + i % 3) for i in range(23)]


def test_chunks_of_any_iterable() -> None:
    assert list(chunks_of(iter("abcdefg"), 3)) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    with pytest.raises(ValueError, match="chunk_size"):
        list(chunks_of(["a"], 0))


def test_iter_encode_gives_encode_corpus_in_chunks(mini_model: FlagModel) -> None:
    chunks = list(mini_model.iter_encode(iter(TEXTS), chunk_size=5))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
    np.testing.assert_allclose(np.concatenate(chunks), mini_model.encode_corpus(TEXTS), atol=1e-6)
    queries = np.concatenate(list(mini_model.iter_encode(TEXTS, side="query", chunk_size=7)))
    np.testing.assert_allclose(queries, mini_model.encode_queries(TEXTS), atol=1e-6)
    with pytest.raises(ValueError, match="side"):
        next(mini_model.iter_encode(TEXTS, side="keys"))  # type: ignore[arg-type]


def test_encode_to_file_streams_an_npy(mini_model: FlagModel, tmp_path: Path) -> None:
    target = tmp_path / "out" / "vectors.npy"
    stream = mini_model.encode_to_file((t for t in TEXTS), target, chunk_size=4)
    assert (stream.rows, stream.dim) == (23, 384)
    vectors = np.load(target, mmap_mode="r")
    assert vectors.shape == (23, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, mini_model.encode_corpus(TEXTS), atol=1e-6)
    assert sorted(p.name for p in target.parent.iterdir()) == ["vectors.npy"]
    empty = tmp_path / "empty.npy"
    mini_model.encode_to_file([], empty)
    assert np.load(empty).shape == (0, 384)


def test_a_failed_stream_leaves_nothing(tmp_path: Path) -> None:
    def blocks() -> Iterator[np.ndarray]:
        yield np.zeros((2, 3), dtype=np.float32)
        raise RuntimeError("the encoder died")

    target = tmp_path / "v.npy"
    with pytest.raises(RuntimeError, match="died"):
        write_npy(target, blocks())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="dimension 4 after blocks of dimension 3"):
        write_npy(target, [np.zeros((1, 3)), np.zeros((1, 4))])
    assert list(tmp_path.iterdir()) == []
