"""The real clients against a live server: the same vectors as in-process flagstack (1e-6) and the same rerank order
as ``FlagReranker.compute_score``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

TEXTS = ["What do giant pandas eat?", "Pandas eat bamboo almost exclusively.", "Paris is the capital of France.",
         "json.loads parses a JSON string in Python."]


@pytest.fixture(scope="module")
def expected(model_path: str) -> np.ndarray:
    from flag_core import FlagModel

    return np.asarray(FlagModel(model_path).encode_corpus(TEXTS))


def test_openai_client(served: Any, expected: np.ndarray) -> None:
    import openai

    client = openai.OpenAI(base_url=served.url + "/v1", api_key="not-checked")
    response = client.embeddings.create(model="mini", input=TEXTS)  # base64 on the wire, as the client asks
    np.testing.assert_allclose([row.embedding for row in response.data], expected, atol=1e-6)
    floats = client.embeddings.create(model="mini", input=TEXTS[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, expected[0], atol=1e-6)
    assert response.usage.prompt_tokens > len(TEXTS)
    assert [model.id for model in client.models.list()] == ["mini", "rr", "m3"]


async def test_async_openai_client(served: Any, expected: np.ndarray) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="not-checked")
    response = await client.embeddings.create(model="mini", input=TEXTS)
    np.testing.assert_allclose([row.embedding for row in response.data], expected, atol=1e-6)


def test_langchain_openai(served: Any, expected: np.ndarray) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model="mini", base_url=served.url + "/v1", api_key="not-checked",  # type: ignore[arg-type]
                                  check_embedding_ctx_length=False)
    np.testing.assert_allclose(embeddings.embed_documents(TEXTS), expected, atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_query(TEXTS[1]), expected[1], atol=1e-6)


def test_langchain_huggingface_endpoint(served: Any, expected: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    # HuggingFaceEndpointEmbeddings (1.x) refuses a URL as `model`; the URL goes to InferenceClient.feature_extraction
    # as its `model`, which posts to the URL itself (a TEI server's root). HF_HUB_OFFLINE blocks every request of
    # huggingface_hub, a local one too: lifted here for this local server only.
    import huggingface_hub.constants
    from langchain_huggingface import HuggingFaceEndpointEmbeddings

    monkeypatch.setattr(huggingface_hub.constants, "is_offline_mode", lambda: False)
    embeddings = HuggingFaceEndpointEmbeddings(model="flagstack/mini", provider="hf-inference",
                                               model_kwargs={"model": served.url})
    np.testing.assert_allclose(embeddings.embed_documents(TEXTS), expected, atol=1e-6)


def test_llama_index_openai_like(served: Any, expected: np.ndarray) -> None:
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    embeddings = OpenAILikeEmbedding(model_name="mini", api_base=served.url + "/v1", api_key="not-checked")
    np.testing.assert_allclose(embeddings.get_text_embedding_batch(TEXTS), expected, atol=1e-6)


def test_llama_index_text_embeddings_inference(served: Any, expected: np.ndarray) -> None:
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    embeddings = TextEmbeddingsInference(model_name="mini", base_url=served.url)
    np.testing.assert_allclose(embeddings.get_text_embedding_batch(TEXTS), expected, atol=1e-6)


def test_llama_index_tei_rerank(served: Any, reranker_path: str) -> None:
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    from flag_core import FlagReranker

    query = "what do pandas eat?"
    scores = FlagReranker(reranker_path).compute_score([(query, text) for text in TEXTS])
    order = sorted(range(len(TEXTS)), key=lambda i: -scores[i])
    nodes = [NodeWithScore(node=TextNode(text=text, id_=str(i)), score=0.0) for i, text in enumerate(TEXTS)]
    reranker = TextEmbeddingInference(base_url=served.url, top_n=3)
    ranked = reranker.postprocess_nodes(nodes, QueryBundle(query))
    assert [node.node.node_id for node in ranked] == [str(i) for i in order[:3]]
