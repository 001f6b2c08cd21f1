"""The endpoints' helpers: OpenAI's base64, unit rows, sparse pairs, and the checks of a request's texts."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from flag_core.serving import ServeConfig
from flag_core.serving.work import ServeError, as_base64, documents_of, sparse_pairs, texts_of, unit


def test_base64_is_little_endian_float32() -> None:
    vector = np.array([1.5, -2.0, 0.1], dtype=np.float64)
    raw = base64.b64decode(as_base64(vector))
    assert raw == np.array([1.5, -2.0, 0.1], dtype="<f4").tobytes() and len(raw) == 12


def test_unit_rows_leave_a_zero_row_zero() -> None:
    rows = unit(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]])


def test_sparse_pairs_are_by_token_id() -> None:
    assert sparse_pairs({"1012": 0.5, "7": 0.25}) == [(7, 0.25), (1012, 0.5)]


def test_texts_and_documents() -> None:
    config = ServeConfig(max_texts=3, max_chars=10)
    assert texts_of("one", "input", config) == ["one"]
    assert documents_of(["a", {"text": "b"}], "documents", config) == ["a", "b"]
    cases = [(lambda: texts_of(None, "input", config), 422, "input must be a string or a list of strings, got null"),
             (lambda: texts_of(["a", True], "input", config), 422, "input[1] is a boolean"),
             (lambda: texts_of("\ud800", "input", config), 422, "lone surrogate"),
             (lambda: texts_of(["a"] * 4, "input", config), 413, "--max-texts"),
             (lambda: documents_of("one", "documents", config), 422, "wrap it as [text]")]
    for call, status, message in cases:
        with pytest.raises(ServeError) as error:
            call()
        assert error.value.status == status and message in error.value.message


async def test_counting_tokens_never_makes_the_event_loop_wait_for_the_side_tokenizer(model_path: str) -> None:
    import asyncio
    import threading

    from flag_core import FlagModel
    from flag_core.serving.work import Served, embed_with_tokens

    model = FlagModel(model_path, devices="cpu")
    served = Served("mini", "embedder", model_path, model)
    expected = model.count_tokens(["what do pandas eat?"], max_length=model.passage_max_length)
    taken, release, released = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:  # another thread tokenizing a long request (/tokenize, a long request's count)
        with model.side_tokenizer():
            taken.set()
            release.wait(5)
        released.set()

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(10)
    try:
        job = asyncio.ensure_future(embed_with_tokens(served, ["what do pandas eat?"], "passage"))
        await asyncio.sleep(0.05)  # a loop that waited for the tokenizer's lock would not get here before the release
        assert not released.is_set() and not job.done()
    finally:
        release.set()
        holder.join(10)
    vectors, tokens = await job
    assert tokens == sum(expected)
    np.testing.assert_allclose(vectors, model.encode_corpus(["what do pandas eat?"]), atol=1e-6)
