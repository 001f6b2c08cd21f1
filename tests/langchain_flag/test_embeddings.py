"""FlagEmbeddings gives flag_core's (and so FlagEmbedding's) vectors, as Python floats, without blocking."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from flag_core import FlagModel
from flag_core.inference.instructions import BGE_EN_QUERY_INSTRUCTION, LLM_EMBEDDER_INSTRUCTIONS
from langchain_flag import FlagEmbeddings


def test_vectors_equal_flag_core_and_golden(model_path: str, golden: dict[str, Any]) -> None:
    settings = golden["embedder"]["cls"]["settings"]
    embeddings = FlagEmbeddings(
        model_name=model_path, pooling_method="cls", devices="cpu",
        query_instruction_for_retrieval=settings["query_instruction_for_retrieval"],
        query_max_length=512, passage_max_length=512,
    )
    texts = golden["texts"]
    documents = embeddings.embed_documents(texts)
    assert isinstance(documents, list) and type(documents[0][0]) is float
    np.testing.assert_allclose(documents, golden["embedder"]["cls"]["encode_corpus"], atol=1e-5)
    query = embeddings.embed_query(texts[0])
    assert type(query[0]) is float
    np.testing.assert_allclose(query, golden["embedder"]["cls"]["encode_queries"][0], atol=1e-5)
    core = FlagModel(model_path, pooling_method="cls", devices="cpu", passage_max_length=512)
    np.testing.assert_array_equal(np.array(documents, dtype=np.float32), core.encode_corpus(texts))


def test_empty_and_bad_input(model_path: str) -> None:
    embeddings = FlagEmbeddings(model_name=model_path, devices="cpu")
    assert embeddings.embed_documents([]) == []
    with pytest.raises(TypeError, match=r"sentences\[1\]"):
        embeddings.embed_documents(["ok", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="one str"):
        embeddings.embed_query(["a list"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one str"):
        asyncio.run(embeddings.aembed_query(["a list"]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"sentences\[1\]"):
        asyncio.run(embeddings.aembed_documents(["ok", None]))  # type: ignore[list-item]
    with pytest.raises(TypeError, match="got one str"):  # (it gave one vector, not a list of them)
        embeddings.embed_documents("one text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got one str"):
        asyncio.run(embeddings.aembed_documents("one text"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FlagEmbeddings(model_name=model_path, not_a_setting=1)  # type: ignore[call-arg]


def test_registry_instruction_is_default_and_overridable(model_copy: Any) -> None:
    folder = model_copy("bge-small-en-v1.5")
    default = FlagEmbeddings(model_name=folder, devices="cpu")
    assert default.client.query_instruction_for_retrieval == BGE_EN_QUERY_INSTRUCTION
    none = FlagEmbeddings(model_name=folder, devices="cpu", query_instruction_for_retrieval="")
    assert none.client.query_instruction_for_retrieval is None
    np.testing.assert_allclose(none.embed_query("pandas"), none.embed_documents(["pandas"])[0], atol=1e-6)


def test_chinese_model_keeps_the_users_instruction(model_copy: Any) -> None:
    folder = model_copy("bge-small-zh-v1.5")
    mine = FlagEmbeddings(model_name=folder, devices="cpu", query_instruction_for_retrieval="Find: ")
    assert mine.client.query_instruction_for_retrieval == "Find: "  # never silently replaced


def test_llm_embedder_task(model_copy: Any, mini_model: FlagModel) -> None:
    folder = model_copy("llm-embedder")
    embeddings = FlagEmbeddings(model_name=folder, devices="cpu", task="chat", pooling_method="cls")
    query_instruction, key_instruction = LLM_EMBEDDER_INSTRUCTIONS["chat"]
    np.testing.assert_allclose(embeddings.embed_query("hi"), mini_model.encode(query_instruction + "hi"), atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_documents(["hi"])[0], mini_model.encode(key_instruction + "hi"),
                               atol=1e-6)
    with pytest.raises(ValueError, match="unknown LLM-Embedder task"):
        FlagEmbeddings(model_name=folder, devices="cpu", task="search")


def test_one_model_for_equal_settings(model_path: str) -> None:
    a = FlagEmbeddings(model_name=model_path, devices="cpu")
    b = FlagEmbeddings(model_name=model_path, devices="cpu")
    c = FlagEmbeddings(model_name=model_path, devices="cpu", pooling_method="cls")
    assert a.client is b.client and a.client is not c.client
    assert a.client.runtime.loaded is c.client.runtime.loaded  # weights in memory once


@pytest.mark.slow
async def test_async_embedding_does_not_block_the_loop(model_path: str, ticks_while: Any) -> None:
    embeddings = FlagEmbeddings(model_name=model_path, devices="cpu")
    texts = [f"document number {i} about pandas and bamboo forests " * 8 for i in range(200)]
    vectors, ticks, elapsed = await ticks_while(embeddings.aembed_documents(texts))
    assert len(vectors) == 200
    # a blocked loop would tick once; a free one ticks about every 5 ms of the call
    assert ticks >= 3 and ticks >= elapsed / 0.005 * 0.2, (ticks, elapsed)
    query, _, _ = await ticks_while(embeddings.aembed_query("pandas"))
    assert query == embeddings.embed_query("pandas")


async def test_gathered_async_calls_share_forward_passes(model_path: str) -> None:
    # every call of the gather arrives within the window, so the count does not depend on thread timing
    embeddings = FlagEmbeddings(model_name=model_path, devices="cpu", gather_window_ms=500)
    assert embeddings.client.gather_window_ms == 500
    texts = [f"document {i} about {'bamboo ' * (i % 5)}pandas" for i in range(20)]
    passes: list[int] = []
    embeddings.client.runtime.loaded.model.register_forward_hook(lambda *_: passes.append(1))
    together = embeddings.embed_documents(texts)
    one_call, passes[:] = len(passes), []
    gathered = await asyncio.gather(*(embeddings.aembed_documents([text]) for text in texts))
    assert len(passes) == one_call < len(texts)  # 20 callers, the forward passes of one call
    np.testing.assert_allclose([vectors[0] for vectors in gathered], together, atol=1e-6)
    passes.clear()
    queries = await asyncio.gather(*(embeddings.aembed_query(text) for text in texts))
    assert len(passes) == one_call
    np.testing.assert_allclose(queries, [embeddings.embed_query(text) for text in texts], atol=1e-6)


def longest_scifact_abstract(shared_data: Any) -> str:
    from flag_core.evaluation.beir import load_corpus

    return max((doc["full"] for doc in load_corpus(shared_data / "scifact").values()), key=len)


def test_chunks_from_langchains_splitter_fit_the_model(model_path: str, shared_data: Any, caplog: Any) -> None:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    embeddings = FlagEmbeddings(model_name=model_path, devices="cpu")
    model, tokenizer = embeddings.client, embeddings.client.tokenizer
    document = longest_scifact_abstract(shared_data)
    limit = model.passage_max_length
    assert len(tokenizer(document)["input_ids"]) > 2 * limit  # the document does not fit as it is
    room = limit - tokenizer.num_special_tokens_to_add()  # the README's recipe
    splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(tokenizer, chunk_size=room, chunk_overlap=16)
    chunks = splitter.split_text(document)
    assert len(chunks) >= 3
    assert all(len(tokenizer(chunk)["input_ids"]) <= limit for chunk in chunks)
    assert model.count_tokens(chunks, max_length=10_000) == [len(tokenizer(c)["input_ids"]) for c in chunks]
    assert set(document.split()) == {word for chunk in chunks for word in chunk.split()}  # nothing lost
    with caplog.at_level("WARNING"):
        embeddings.embed_documents(chunks)
    assert "truncat" not in caplog.text.lower()


async def test_async_methods_keep_a_subclass_s_own_sync_methods(model_path: str) -> None:
    # (the bundled model is uncased: the subclass changes the words, so its vectors differ from the plain ones)
    class Prefixed(FlagEmbeddings):
        def embed_query(self, text: str) -> list[float]:
            return super().embed_query("bamboo " + text)

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return super().embed_documents(["bamboo " + text for text in texts])

    prefixed = Prefixed(model_name=model_path, devices="cpu")
    plain = FlagEmbeddings(model_name=model_path, devices="cpu")
    assert await prefixed.aembed_query("pandas") == plain.embed_query("bamboo pandas")
    assert await prefixed.aembed_documents(["panda"]) == plain.embed_documents(["bamboo panda"])
    assert await prefixed.aembed_query("pandas") != plain.embed_query("pandas")


async def test_async_methods_wait_in_the_queue_without_a_thread(model_path: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import langchain_flag.embeddings as module

    embeddings = FlagEmbeddings(model_name=model_path, devices="cpu")
    expected = embeddings.embed_query("pandas"), embeddings.embed_documents(["a", "b"])

    async def no_thread(*_: Any, **__: Any) -> Any:
        raise AssertionError("an async call of FlagEmbeddings' own methods ran in a thread")

    monkeypatch.setattr(module, "run_async", no_thread)
    assert (await embeddings.aembed_query("pandas"), await embeddings.aembed_documents(["a", "b"])) == expected
