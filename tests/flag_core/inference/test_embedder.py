"""FlagModel.aencode_as: the vectors encode_as gives, for asyncio callers, through the model's queue; and
count_tokens_now, which an event loop calls (it never waits)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
import torch

import flag_core.inference.embedder as embedder_module
from flag_core import FlagModel, LLMEmbedder

TEXTS = ["what do pandas eat?", "bamboo, mostly", "where do they live?", "in the mountains of Sichuan"]


@pytest.fixture(scope="module")
def model(model_path: str) -> FlagModel:
    return FlagModel(model_path, devices="cpu", query_instruction_for_retrieval="Represent this query: ")


@pytest.mark.parametrize("side", ["query", "passage"])
@pytest.mark.parametrize("texts", [TEXTS, TEXTS[0]], ids=["list", "str"])
@pytest.mark.parametrize("output", ["numpy", "torch", "list"])
async def test_aencode_as_gives_what_encode_as_gives(model: FlagModel, side: Any, texts: Any, output: str) -> None:
    expected = model.encode_as(side, texts, output=output)
    got = await model.aencode_as(side, texts, output=output)
    assert type(got) is type(expected)
    if output == "list":
        assert np.asarray(got).shape == np.asarray(expected).shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-6)


async def test_per_call_options_are_kept(model: FlagModel) -> None:
    # an instruction and a length given to this call (not the model's): the plan carries them to the queue
    got = await model.aencode_as("query", TEXTS, instruction="Find: ", max_length=8)
    np.testing.assert_allclose(got, model.encode_queries(TEXTS, instruction="Find: ", max_length=8), atol=1e-6)
    assert not np.allclose(got, model.encode_queries(TEXTS), atol=1e-3)


async def test_gathered_calls_share_one_forward_pass_and_each_gets_its_own_vector(model: FlagModel) -> None:
    passes: list[int] = []
    hook = model.runtime.loaded.model.register_forward_hook(lambda *_: passes.append(1))
    try:
        texts = [f"query number {i} about bears" for i in range(24)]
        results = await asyncio.gather(*(model.aencode_as("query", text) for text in texts))
    finally:
        hook.remove()
    assert len(passes) == 1  # one turn of the loop, one run, one batch within the token budget
    np.testing.assert_allclose(np.stack(results), model.encode_queries(texts), atol=1e-6)


async def test_a_large_call_is_neither_planned_nor_converted_on_the_loop(model: FlagModel,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder_module, "ASYNC_INLINE_TEXTS", 2)
    threads: list[str] = []  # where the texts are checked (planning) and the vectors converted
    original_finish, original_list = embedder_module._Plan.finish, embedder_module.as_text_list

    def finish(self: Any, vectors: torch.Tensor) -> Any:
        threads.append(threading.current_thread().name)
        return original_finish(self, vectors)

    def as_text_list(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original_list(*args)

    monkeypatch.setattr(embedder_module._Plan, "finish", finish)
    monkeypatch.setattr(embedder_module, "as_text_list", as_text_list)
    got = await model.aencode_as("passage", TEXTS, output="list")
    assert len(threads) == 2 and threading.main_thread().name not in threads  # both in a waiting thread
    np.testing.assert_allclose(got, model.encode_corpus(TEXTS), atol=1e-6)
    threads.clear()
    await model.aencode_as("passage", TEXTS[:2])
    assert threads == [threading.main_thread().name] * 2  # small: on the loop, no thread of its own


class Shouting(FlagModel):
    """A subclass whose encode_queries changes the texts and post-processes the vectors."""

    def encode_queries(self, queries: Any, **options: Any) -> Any:  # type: ignore[override]
        texts = [queries] if isinstance(queries, str) else list(queries)
        return np.asarray(super().encode_queries([text.upper() for text in texts], **options))[:, :8] * 2


async def test_a_subclass_override_runs_as_written(model_path: str) -> None:
    shouting = Shouting(model_path, devices="cpu")
    expected = shouting.encode_as("query", TEXTS)
    assert expected.shape == (4, 8)
    np.testing.assert_allclose(await shouting.aencode_as("query", TEXTS), expected, atol=1e-6)
    # an override that encodes with another model: that model's own call, not a plan run on this one
    other = FlagModel(model_path, devices="cpu", pooling_method="cls")

    class Delegating(FlagModel):
        def encode_corpus(self, corpus: Any, **options: Any) -> Any:  # type: ignore[override]
            return other.encode_corpus(corpus, **options)

    delegating = Delegating(model_path, devices="cpu")
    np.testing.assert_allclose(await delegating.aencode_as("passage", TEXTS), other.encode_corpus(TEXTS), atol=1e-6)


async def test_an_llm_embedder_keeps_its_task_instructions(model_path: str) -> None:
    embedder = LLMEmbedder(model_path, devices="cpu", task="tool")
    np.testing.assert_allclose(await embedder.aencode_as("query", TEXTS), embedder.encode_queries(TEXTS), atol=1e-6)
    np.testing.assert_allclose(await embedder.aencode_as("passage", TEXTS), embedder.encode_keys(TEXTS), atol=1e-6)


async def test_bad_input_is_refused_as_encode_as_refuses_it(model: FlagModel) -> None:
    with pytest.raises(ValueError, match="side must be 'query' or 'passage'"):
        await model.aencode_as("document", TEXTS)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sentences"):
        await model.aencode_as("query", [TEXTS[0], 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="output must be"):
        await model.aencode_as("query", TEXTS, output="pandas")
    assert model.runtime.queue.depth == 0


def test_count_tokens_now_gives_none_while_the_side_tokenizer_is_busy(model: FlagModel) -> None:
    texts = ["what do pandas eat?", "bamboo " * 400]
    expected = model.count_tokens(texts, max_length=64)
    assert expected[1] == 64
    assert model.count_tokens_now(texts, max_length=64) == expected
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with model.side_tokenizer():
            taken.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(10)
        assert model.count_tokens_now(texts, max_length=64) is None  # at once, not after the release
    finally:
        release.set()
        holder.join(10)
    assert model.count_tokens_now(texts, max_length=64) == expected
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        model.count_tokens_now([None], max_length=64)  # type: ignore[list-item]
