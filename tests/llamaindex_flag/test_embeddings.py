"""llamaindex_flag.FlagEmbedding: same vectors as LangChain's class and flag_core, caching, async, Settings."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from langchain_flag import FlagEmbeddings
from llamaindex_flag import FlagEmbedding


def test_same_vectors_as_langchain_and_flag_core(model_path: str, golden: dict[str, Any]) -> None:
    settings = {
        "pooling_method": "cls", "devices": "cpu", "query_max_length": 512, "passage_max_length": 512,
        "query_instruction_for_retrieval": golden["embedder"]["cls"]["settings"]["query_instruction_for_retrieval"],
    }
    llama = FlagEmbedding(model_name=model_path, **settings)
    chain = FlagEmbeddings(model_name=model_path, **settings)
    texts = golden["texts"]
    assert llama.get_text_embedding_batch(texts) == chain.embed_documents(texts)
    assert llama.get_query_embedding(texts[0]) == chain.embed_query(texts[0])
    assert llama.get_text_embedding(texts[1]) == chain.embed_documents([texts[1]])[0]
    np.testing.assert_allclose(llama.get_text_embedding_batch(texts), golden["embedder"]["cls"]["encode_corpus"],
                               atol=1e-5)
    assert llama.client is chain.client  # one model for equal settings, across frameworks
    assert llama.embed_batch_size > 10


def test_cache_never_mixes_query_and_text(model_path: str) -> None:
    from llama_index.core.storage.kvstore import SimpleKVStore

    model = FlagEmbedding(model_name=model_path, devices="cpu", query_instruction_for_retrieval="Query: ",
                          embeddings_cache=SimpleKVStore())
    query_first = model.get_query_embedding("pandas")
    text_after = model.get_text_embedding("pandas")
    assert query_first != text_after
    assert text_after == FlagEmbedding(model_name=model_path, devices="cpu").get_text_embedding("pandas")
    assert model.get_query_embedding("pandas") == query_first  # served from the cache


def test_bad_input(model_path: str) -> None:
    model = FlagEmbedding(model_name=model_path, devices="cpu")
    with pytest.raises(TypeError, match=r"sentences\[1\]"):
        model.get_text_embedding_batch(["ok", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="got one str"):  # (LlamaIndex embedded each character of it)
        model.get_text_embedding_batch("one text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got one str"):
        asyncio.run(model.aget_text_embedding_batch("one text"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FlagEmbedding(model_name=model_path, embed_batch_size=0)


async def test_async_paths(model_path: str) -> None:
    model = FlagEmbedding(model_name=model_path, devices="cpu")
    assert await model.aget_query_embedding("pandas") == model.get_query_embedding("pandas")
    assert await model.aget_text_embedding("pandas") == model.get_text_embedding("pandas")
    assert await model.aget_text_embedding_batch(["a", "b"]) == model.get_text_embedding_batch(["a", "b"])
    with pytest.raises(TypeError, match="query must be a str"):
        await model.aget_query_embedding(["a list"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a str"):
        await model.aget_text_embedding(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"sentences\[1\]"):
        await model.aget_text_embedding_batch(["ok", None])  # type: ignore[list-item]


def test_settings_and_ingestion(model_path: str) -> None:
    from llama_index.core import Document, Settings
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter

    model = FlagEmbedding(model_name=model_path, devices="cpu")
    previous = Settings._embed_model
    try:
        Settings.embed_model = model
        assert Settings.embed_model is model
    finally:
        Settings._embed_model = previous
    nodes = IngestionPipeline(transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=8), model]).run(
        documents=[Document(text="Pandas eat bamboo. " * 20), Document(text="Paris is in France.")]
    )
    assert len(nodes) >= 2 and all(len(n.embedding) == 384 for n in nodes)


def test_one_progress_bar_per_call(model_path: str, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from flag_core.inference import batching

    shown: list[bool] = []
    original = batching.progress_bar

    def counting(**options: Any) -> Any:
        shown.append(not options.get("disable", False))
        return original(**options)

    monkeypatch.setattr(batching, "progress_bar", counting)
    embedding = FlagEmbedding(model_name=model_path, devices="cpu", show_progress_bar=True, embed_batch_size=2)
    embedding.get_text_embedding_batch([f"text {i}" for i in range(7)])
    assert len(shown) == 4 and not any(shown)  # four chunks, no bar of their own
    assert capsys.readouterr().err.count("Generating embeddings") >= 1  # LlamaIndex's one bar for the call


async def test_gathered_async_calls_share_forward_passes(model_path: str) -> None:
    model = FlagEmbedding(model_name=model_path, devices="cpu", gather_window_ms=400)
    queries = [f"question {i} on {'pandas ' * (i % 4)}bamboo" for i in range(16)]
    passes: list[int] = []
    model.client.runtime.loaded.model.register_forward_hook(lambda *_: passes.append(1))
    expected = model.client.encode_queries(queries, output="list")
    one_call, passes[:] = len(passes), []
    gathered = await asyncio.gather(*(model.aget_query_embedding(query) for query in queries))
    assert len(passes) == one_call < len(queries)
    np.testing.assert_allclose(gathered, expected, atol=1e-6)


def test_chunks_from_llamaindexs_splitter_fit_the_model(model_path: str, shared_data: Any) -> None:
    from llama_index.core import Document
    from llama_index.core.node_parser import SentenceSplitter

    from flag_core.evaluation.beir import load_corpus

    embedding = FlagEmbedding(model_name=model_path, devices="cpu")
    model, tokenizer = embedding.client, embedding.client.tokenizer
    document = max((doc["full"] for doc in load_corpus(shared_data / "scifact").values()), key=len)
    limit = model.passage_max_length
    assert len(tokenizer(document)["input_ids"]) > 2 * limit
    room = limit - tokenizer.num_special_tokens_to_add()  # the README's recipe
    splitter = SentenceSplitter(chunk_size=room, chunk_overlap=16, tokenizer=tokenizer.tokenize)
    nodes = splitter.get_nodes_from_documents([Document(text=document)])
    assert len(nodes) >= 3
    assert all(len(tokenizer(node.get_content())["input_ids"]) <= limit for node in nodes)
    assert set(document.split()) == {word for node in nodes for word in node.get_content().split()}


async def test_async_methods_keep_a_subclass_s_own_sync_methods(model_path: str) -> None:
    # (the bundled model is uncased: the subclass changes the words, so its vectors differ from the plain ones)
    class Prefixed(FlagEmbedding):
        def _get_query_embedding(self, query: str) -> Any:
            return super()._get_query_embedding("bamboo " + query)

        def _get_text_embedding(self, text: str) -> Any:
            return super()._get_text_embedding("bamboo " + text)

        def _get_text_embeddings(self, texts: list[str]) -> Any:
            return super()._get_text_embeddings(["bamboo " + text for text in texts])

    prefixed = Prefixed(model_name=model_path, devices="cpu")
    plain = FlagEmbedding(model_name=model_path, devices="cpu")
    assert await prefixed.aget_query_embedding("pandas") == plain.get_query_embedding("bamboo pandas")
    assert await prefixed.aget_text_embedding("panda") == plain.get_text_embedding("bamboo panda")
    assert await prefixed.aget_text_embedding_batch(["panda"]) == plain.get_text_embedding_batch(["bamboo panda"])
    assert await prefixed.aget_query_embedding("pandas") != plain.get_query_embedding("pandas")


async def test_async_methods_wait_in_the_queue_without_a_thread(model_path: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # LlamaIndex wraps its classes' methods (wrapt: each lookup a new object), so "is this the class's own method"
    # must be read from the class namespaces: a comparison of the attributes sent every call to a thread
    import llamaindex_flag.embeddings as module

    model = FlagEmbedding(model_name=model_path, devices="cpu")
    expected = (model.get_query_embedding("pandas"), model.get_text_embedding("bamboo"),
                model.get_text_embedding_batch(["a", "b"]))

    async def no_thread(*_: Any, **__: Any) -> Any:
        raise AssertionError("an async call of FlagEmbedding's own methods ran in a thread")

    monkeypatch.setattr(module, "run_async", no_thread)
    got = (await model.aget_query_embedding("pandas"), await model.aget_text_embedding("bamboo"),
           await model.aget_text_embedding_batch(["a", "b"]))
    assert got == expected


async def test_async_methods_keep_a_mixin_s_sync_methods(model_path: str) -> None:
    class Prefixing:
        def _get_query_embedding(self, query: str) -> Any:
            return super()._get_query_embedding("bamboo " + query)  # type: ignore[misc]

    class Prefixed(Prefixing, FlagEmbedding):
        pass

    prefixed = Prefixed(model_name=model_path, devices="cpu")
    plain = FlagEmbedding(model_name=model_path, devices="cpu")
    assert await prefixed.aget_query_embedding("pandas") == plain.get_query_embedding("bamboo pandas")
    assert await prefixed.aget_query_embedding("pandas") != plain.get_query_embedding("pandas")
