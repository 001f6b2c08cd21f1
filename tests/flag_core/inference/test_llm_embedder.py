"""LLM-Embedder: each task's query and key instruction, chosen by name."""

from __future__ import annotations

import numpy as np
import pytest

from flag_core import FlagModel, LLMEmbedder
from flag_core.inference.instructions import LLM_EMBEDDER_INSTRUCTIONS


@pytest.fixture(scope="module")
def embedder(model_path: str) -> LLMEmbedder:
    return LLMEmbedder(model_path, devices="cpu")


def test_six_tasks() -> None:
    assert set(LLM_EMBEDDER_INSTRUCTIONS) == {"qa", "convsearch", "chat", "lrlm", "icl", "tool"}


@pytest.mark.parametrize("task", sorted(LLM_EMBEDDER_INSTRUCTIONS))
def test_task_instructions(embedder: LLMEmbedder, mini_model: FlagModel, task: str) -> None:
    query_instruction, key_instruction = LLM_EMBEDDER_INSTRUCTIONS[task]
    text = "what is the capital of France?"
    np.testing.assert_allclose(
        embedder.encode_queries([text], task=task), mini_model.encode([query_instruction + text]), atol=1e-6
    )
    np.testing.assert_allclose(
        embedder.encode_keys([text], task=task), mini_model.encode([key_instruction + text]), atol=1e-6
    )


def test_known_instruction_text() -> None:
    assert LLM_EMBEDDER_INSTRUCTIONS["qa"][0] == "Represent this query for retrieving relevant documents: "
    assert LLM_EMBEDDER_INSTRUCTIONS["tool"][1] == "Transform this tool description for retrieval: "


def test_default_task_is_qa_and_corpus_means_keys(embedder: LLMEmbedder) -> None:
    np.testing.assert_array_equal(embedder.encode_queries("x"), embedder.encode_queries("x", task="qa"))
    np.testing.assert_array_equal(embedder.encode_corpus("x", task="chat"), embedder.encode_keys("x", task="chat"))


def test_unknown_task(embedder: LLMEmbedder) -> None:
    with pytest.raises(ValueError, match=r"unknown LLM-Embedder task .search.*qa"):
        embedder.encode_queries("x", task="search")
