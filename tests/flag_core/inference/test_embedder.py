"""FlagModel.aencode_as: the vectors encode_as gives, for asyncio callers, through the model's queue."""

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


async def test_a_large_call_runs_in_a_waiting_thread_with_the_same_vectors(model: FlagModel,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder_module, "ASYNC_INLINE_TEXTS", 2)
    converting: list[str] = []
    original = embedder_module._Plan.finish

    def finish(self: Any, vectors: torch.Tensor) -> Any:
        converting.append(threading.current_thread().name)
        return original(self, vectors)

    monkeypatch.setattr(embedder_module._Plan, "finish", finish)
    got = await model.aencode_as("passage", TEXTS, output="list")
    assert converting and all(name != threading.main_thread().name for name in converting)  # not on the loop
    np.testing.assert_allclose(got, model.encode_corpus(TEXTS), atol=1e-6)
    converting.clear()
    await model.aencode_as("passage", TEXTS[:2])
    assert converting == [threading.main_thread().name]  # small: on the loop, no thread of its own


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
