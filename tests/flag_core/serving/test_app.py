"""The endpoints against in-process flagstack on the same models: OpenAI, TEI, Cohere/Jina, BGE-M3; the probes, the
metrics, API keys, the request limits and bad input."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from flag_core.serving import ModelSpec, ServeConfig, create_app

TEXTS = ["What do giant pandas eat?", "Pandas eat bamboo almost exclusively.", "Paris is the capital of France."]
QUERY = "what do pandas eat?"


@pytest.fixture(scope="module")
def embedder(model_path: str) -> Any:
    """In-process flagstack on the served embedder's settings (its query instruction, "query: ")."""
    from flag_core import FlagModel

    return FlagModel(model_path, query_instruction_for_retrieval="query: ")


@pytest.fixture(scope="module")
def m3(m3_path: str) -> Any:
    from flag_core import BGEM3FlagModel

    return BGEM3FlagModel(m3_path)


@pytest.fixture(scope="module")
def reranker(reranker_path: str) -> Any:
    from flag_core import FlagReranker

    return FlagReranker(reranker_path)


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([row["embedding"] for row in response.json()["data"]])


# OpenAI ----------------------------------------------------------------------------------------------------------


def test_openai_embeddings_are_flagstack_passages_with_real_token_counts(served: Any, embedder: Any) -> None:
    response = served.post("/v1/embeddings", {"input": TEXTS})
    np.testing.assert_allclose(vectors(response), embedder.encode_corpus(TEXTS), atol=1e-6)
    body = response.json()
    assert body["model"] == "mini" and [row["index"] for row in body["data"]] == [0, 1, 2]
    tokens = sum(embedder.count_tokens(TEXTS))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_one_string_and_input_type_query(served: Any, embedder: Any) -> None:
    one = served.post("/v1/embeddings", {"input": TEXTS[0], "model": "mini", "input_type": "query"})
    np.testing.assert_allclose(vectors(one), embedder.encode_queries([TEXTS[0]]), atol=1e-6)
    assert not np.allclose(vectors(one), embedder.encode_corpus([TEXTS[0]]), atol=1e-3)  # the instruction counts


def test_an_m3_model_serves_its_dense_vectors(served: Any, m3: Any) -> None:
    response = served.post("/v1/embeddings", {"input": TEXTS, "model": "m3"})
    np.testing.assert_allclose(vectors(response), m3.encode_corpus(TEXTS)["dense_vecs"], atol=1e-6)


def test_base64_is_little_endian_float32(served: Any) -> None:
    floats = vectors(served.post("/v1/embeddings", {"input": TEXTS}))
    response = served.post("/v1/embeddings", {"input": TEXTS, "encoding_format": "base64"})
    decoded = [np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4") for row in response.json()["data"]]
    np.testing.assert_array_equal(np.stack(decoded), floats.astype(np.float32))


def test_dimensions_keep_the_first_and_renormalise(served: Any, embedder: Any) -> None:
    got = vectors(served.post("/v1/embeddings", {"input": TEXTS, "dimensions": 16}))
    full = embedder.encode_corpus(TEXTS)[:, :16]
    np.testing.assert_allclose(got, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-6)
    too_many = served.post("/v1/embeddings", {"input": TEXTS, "dimensions": 1000})
    assert too_many.status_code == 422
    assert "1000" in too_many.json()["error"]["message"] and "384" in too_many.json()["error"]["message"]


def test_models_are_listed(served: Any) -> None:
    body = httpx.get(served.url + "/v1/models").json()
    assert [(m["id"], m["kind"], m["object"]) for m in body["data"]] == [
        ("mini", "embedder", "model"), ("rr", "reranker", "model"), ("m3", "m3", "model")]


def test_an_unknown_model_is_404_naming_the_served_ones(served: Any) -> None:
    response = served.post("/v1/embeddings", {"input": "x", "model": "gpt-4"})
    assert response.status_code == 404
    assert "'gpt-4'" in response.json()["error"]["message"] and "mini, rr, m3" in response.json()["error"]["message"]
    wrong = served.post("/v1/embeddings", {"input": "x", "model": "rr"})
    assert wrong.status_code == 400 and "reranker" in wrong.json()["error"]["message"]


def test_token_ids_are_refused_with_what_to_send(served: Any) -> None:
    for ids in ([101, 2054, 102], [[101, 2054], [101]]):
        response = served.post("/v1/embeddings", {"input": ids})
        assert response.status_code == 422
        assert "token ids" in response.json()["error"]["message"]
        assert "check_embedding_ctx_length=False" in response.json()["error"]["message"]


@pytest.mark.parametrize(("body", "named"), [
    ({"input": ["a", 3]}, "input[1]"),
    ({"input": {"text": "a"}}, "input must be a string or a list of strings"),
    ({"input": []}, "input is an empty list"),
    ({"model": "mini"}, "input: Field required"),
    ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "a", "dimensions": 0}, "dimensions"),
    ({"input": "a", "input_type": "document"}, "input_type"),
])
def test_wrong_types_are_422_naming_the_field(served: Any, body: dict[str, Any], named: str) -> None:
    response = served.post("/v1/embeddings", body)
    assert response.status_code == 422
    assert named in response.json()["error"]["message"]


def test_bad_json_is_422(served: Any) -> None:
    response = httpx.post(served.url + "/v1/embeddings", content=b'{"input": [', timeout=30,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["error"]["message"]
    tei = httpx.post(served.url + "/embed", content=b"[1,", timeout=30, headers={"Content-Type": "application/json"})
    assert tei.status_code == 422
    assert tei.json()["error_type"] == "Validation" and "not valid JSON" in tei.json()["error"]


# TEI -------------------------------------------------------------------------------------------------------------


def test_tei_embed_and_the_root(served: Any, embedder: Any) -> None:
    expected = embedder.encode_corpus(TEXTS)
    for path in ("/embed", "/"):
        response = served.post(path, {"inputs": TEXTS, "truncate": True})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(np.array(response.json()), expected, atol=1e-6)
    one = served.post("/embed", {"inputs": TEXTS[1]})
    np.testing.assert_allclose(np.array(one.json()), expected[1:2], atol=1e-6)
    query = served.post("/embed", {"inputs": [TEXTS[0]], "prompt_name": "query"})
    np.testing.assert_allclose(np.array(query.json()), embedder.encode_queries([TEXTS[0]]), atol=1e-6)
    assert not np.allclose(np.array(query.json()), expected[:1], atol=1e-3)
    unknown = served.post("/embed", {"inputs": "x", "prompt_name": "classification"})
    assert unknown.status_code == 422 and "prompt_name" in unknown.json()["error"]
    short = served.post("/embed", {"inputs": TEXTS, "dimensions": 8})
    cut = expected[:, :8] / np.linalg.norm(expected[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(np.array(short.json()), cut, atol=1e-6)


def test_tei_embed_refuses_what_it_cannot_do(served: Any) -> None:
    raw = served.post("/embed", {"inputs": "x", "normalize": False})
    assert raw.status_code == 422 and "--set mini.normalize_embeddings=false" in raw.json()["error"]
    long = " ".join(["panda"] * 600)
    refused = served.post("/embed", {"inputs": ["short", long]})  # TEI's default: truncate false
    assert refused.status_code == 413 and "inputs[1]" in refused.json()["error"]
    assert "truncate=true" in refused.json()["error"]
    assert served.post("/embed", {"inputs": ["short", long], "truncate": True}).status_code == 200


def test_embed_sparse_is_m3_lexical_weights(served: Any, m3: Any) -> None:
    response = served.post("/embed_sparse", {"inputs": TEXTS})
    assert response.status_code == 200, response.text
    expected = m3.encode_corpus(TEXTS, return_dense=False, return_sparse=True)["lexical_weights"]
    for got, weights in zip(response.json(), expected, strict=True):
        assert [item["index"] for item in got] == sorted(int(token) for token in weights)
        np.testing.assert_allclose([item["value"] for item in got],
                                   [weights[str(item["index"])] for item in got], atol=1e-6)
    assert served.post("/embed_sparse", {"inputs": "x", "model": "mini"}).status_code == 400


def test_tei_rerank_is_sorted_and_sigmoid_unless_raw(served: Any, reranker: Any) -> None:
    pairs = [(QUERY, text) for text in TEXTS]
    raw = reranker.compute_score(pairs)
    response = served.post("/rerank", {"query": QUERY, "texts": TEXTS, "raw_scores": True, "return_text": True})
    assert response.status_code == 200, response.text
    order = sorted(range(len(TEXTS)), key=lambda i: -raw[i])
    assert [row["index"] for row in response.json()] == order
    np.testing.assert_allclose([row["score"] for row in response.json()], [raw[i] for i in order], atol=1e-6)
    assert [row["text"] for row in response.json()] == [TEXTS[i] for i in order]
    normalized = served.post("/rerank", {"query": QUERY, "texts": TEXTS}).json()
    np.testing.assert_allclose([row["score"] for row in normalized],
                               [reranker.compute_score(pairs, normalize=True)[i] for i in order], atol=1e-6)
    assert "text" not in normalized[0]


def test_tokenize_gives_tei_tokens(served: Any, embedder: Any) -> None:
    response = served.post("/tokenize", {"inputs": ["Hello pandas"]})
    assert response.status_code == 200, response.text
    tokens = response.json()[0]
    assert [t["id"] for t in tokens] == embedder.tokenizer("Hello pandas")["input_ids"]
    assert tokens[0]["special"] and tokens[0]["start"] is None and tokens[-1]["special"]
    assert [("Hello pandas"[t["start"]:t["stop"]], t["special"]) for t in tokens[1:-1]] == [
        (t["text"], False) for t in tokens[1:-1]]
    plain = served.post("/tokenize", {"inputs": "Hello pandas", "add_special_tokens": False}).json()[0]
    assert [t["id"] for t in plain] == [t["id"] for t in tokens[1:-1]]


# Cohere / Jina rerank, BGE-M3 ------------------------------------------------------------------------------------


def test_cohere_rerank(served: Any, reranker: Any) -> None:
    scores = reranker.compute_score([(QUERY, text) for text in TEXTS], normalize=True)
    order = sorted(range(len(TEXTS)), key=lambda i: -scores[i])
    documents = [TEXTS[0], {"text": TEXTS[1]}, TEXTS[2]]
    response = served.post("/v1/rerank", {"model": "rr", "query": QUERY, "documents": documents, "top_n": 2,
                                          "return_documents": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["index"] for r in body["results"]] == order[:2] and body["model"] == "rr"
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], [scores[i] for i in order[:2]],
                               atol=1e-6)
    assert [r["document"]["text"] for r in body["results"]] == [TEXTS[i] for i in order[:2]]
    assert body["usage"]["total_tokens"] > 0
    plain = served.post("/v1/rerank", {"query": QUERY, "documents": TEXTS}).json()
    assert len(plain["results"]) == 3 and "document" not in plain["results"][0]
    bad = served.post("/v1/rerank", {"query": QUERY, "documents": [{"title": "x"}]})
    assert bad.status_code == 422 and "documents[0]" in bad.json()["error"]["message"]


def test_m3_gives_dense_sparse_and_colbert_from_one_model_call(served: Any, m3: Any) -> None:
    queue = served.state.models["m3"].queues
    runs = queue.runs
    response = served.post("/v1/m3/embeddings", {"input": TEXTS, "colbert": True})
    assert response.status_code == 200, response.text
    assert queue.runs == runs + 1
    expected = m3.encode_corpus(TEXTS, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    for i, row in enumerate(response.json()["data"]):
        np.testing.assert_allclose(row["dense"], expected["dense_vecs"][i], atol=1e-6)
        weights = expected["lexical_weights"][i]
        assert row["sparse"]["indices"] == sorted(int(t) for t in weights)
        np.testing.assert_allclose(row["sparse"]["values"], [weights[str(t)] for t in row["sparse"]["indices"]],
                                   atol=1e-6)
        np.testing.assert_allclose(row["colbert"], expected["colbert_vecs"][i], atol=1e-6)
    only = served.post("/v1/m3/embeddings", {"input": "x", "dense": False, "sparse": True}).json()["data"][0]
    assert set(only) == {"object", "index", "sparse"}
    none = served.post("/v1/m3/embeddings", {"input": "x", "dense": False, "sparse": False})
    assert none.status_code == 422 and "at least one" in none.json()["error"]["message"]


# probes and metrics ----------------------------------------------------------------------------------------------


def test_health_ready_and_metrics(served: Any) -> None:
    assert httpx.get(served.url + "/health").json() == {"status": "ok"}
    assert httpx.get(served.url + "/ready").json() == {"status": "ready", "models": ["mini", "rr", "m3"]}
    served.post("/v1/embeddings", {"input": TEXTS})
    text = httpx.get(served.url + "/metrics").text
    for line in ('flagstack_requests_total{endpoint="/v1/embeddings",status="200"}',
                 'flagstack_batch_inputs_count{model="mini"}', 'flagstack_batch_callers_bucket{le="1.0",model="mini"}',
                 'flagstack_queue_depth{model="m3"} 0.0', 'flagstack_request_seconds_bucket{endpoint="/v1/embeddings"',
                 "flagstack_model_run_seconds_count", "flagstack_requests_in_progress"):
        assert line in text, line
    registry = served.state.metrics.registry
    assert registry.get_sample_value("flagstack_batch_inputs_sum", {"model": "mini"}) >= len(TEXTS)


class SlowSpec(ModelSpec):
    """A spec whose model is built only once ``gate`` is set."""

    gate = threading.Event()

    def build(self) -> Any:
        assert self.gate.wait(60)
        return super().build()


@pytest.fixture
def prebuilt(served: Any) -> list[ModelSpec]:
    """The served models again, already built (no second load)."""
    return [ModelSpec(s.name, s.kind, s.path, model=s.model) for s in served.state.models.values()]


@contextlib.contextmanager
def ready_client(app: Any, poll: Any) -> Iterator[TestClient]:
    with TestClient(app) as client:
        poll(lambda: client.get("/ready").status_code == 200, "the models to load")
        yield client


def test_ready_only_once_every_model_is_loaded(model_path: str, prebuilt: list[ModelSpec], poll: Any) -> None:
    SlowSpec.gate.clear()
    app = create_app([prebuilt[0], SlowSpec("slow", "embedder", model_path)])
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        loading = client.get("/ready")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        early = client.post("/v1/embeddings", json={"input": "x"})
        assert early.status_code == 503 and "still loading" in early.json()["error"]["message"]
        assert early.headers["Retry-After"] == "5"
        SlowSpec.gate.set()
        poll(lambda: client.get("/ready").status_code == 200, "the slow model to load")
        assert client.get("/ready").json()["models"] == ["mini", "slow"]


def test_a_model_that_does_not_load_keeps_ready_at_503_with_the_error(tmp_path: Any, poll: Any) -> None:
    app = create_app([ModelSpec("missing", "embedder", str(tmp_path / "no-such-model"))])
    with TestClient(app) as client:
        poll(lambda: client.get("/ready").json()["status"] == "failed", "loading to fail")
        error = client.get("/ready").json()["error"]
        assert "'missing'" in error and "no-such-model" in error
        assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 503


# API keys and limits ---------------------------------------------------------------------------------------------


def test_api_keys(prebuilt: list[ModelSpec], poll: Any) -> None:
    app = create_app(prebuilt, ServeConfig(api_keys=("first-key", "second-key")))
    with ready_client(app, poll) as client:
        assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "second-key"},
                        {"Authorization": "Basic second-key"}):
            refused = client.post("/v1/embeddings", json={"input": "x"}, headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["WWW-Authenticate"] == "Bearer"
            assert "Authorization: Bearer KEY" in refused.json()["error"]["message"]
        assert client.get("/metrics").status_code == 401
        assert client.post("/embed", json={"inputs": "x"}).json()["error_type"] == "Unauthorized"
        for key in ("first-key", "second-key"):
            answered = client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": f"Bearer {key}"})
            assert answered.status_code == 200


def test_limits_name_the_option_that_raises_them(prebuilt: list[ModelSpec], poll: Any) -> None:
    app = create_app(prebuilt, ServeConfig(max_texts=2, max_chars=20))
    with ready_client(app, poll) as client:
        many = client.post("/v1/embeddings", json={"input": ["a", "b", "c"]})
        assert many.status_code == 413
        assert "3 texts" in many.json()["error"]["message"] and "--max-texts" in many.json()["error"]["message"]
        long = client.post("/embed", json={"inputs": ["short", "x" * 21]})
        assert long.status_code == 413 and "inputs[1] has 21 characters" in long.json()["error"]
        assert "--max-chars" in long.json()["error"]
        documents = client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b", "c"]})
        assert documents.status_code == 413 and "documents" in documents.json()["error"]["message"]
        query = client.post("/rerank", json={"query": "q" * 30, "texts": ["a"]})
        assert query.status_code == 413 and "query has 30 characters" in query.json()["error"]
        assert client.post("/v1/embeddings", json={"input": ["a", "x" * 20]}).status_code == 200


def test_a_body_past_max_body_bytes_is_413_before_it_is_read(prebuilt: list[ModelSpec], poll: Any) -> None:
    app = create_app(prebuilt, ServeConfig(max_body_bytes=200))
    with ready_client(app, poll) as client:
        declared = client.post("/v1/embeddings", json={"input": ["x" * 300]})
        assert declared.status_code == 413
        message = declared.json()["error"]["message"]
        assert "--max-body-bytes" in message and "this server's 200" in message

        def chunks() -> Any:  # no Content-Length: the body is counted as it arrives
            yield b'{"inputs": ["'
            for _ in range(10):
                yield b"y" * 50
            yield b'"]}'

        streamed = client.post("/embed", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413 and "--max-body-bytes" in streamed.json()["error"]
        assert client.post("/v1/embeddings", json={"input": ["fits"]}).status_code == 200


# found in review: hostile and new users' requests ----------------------------------------------------------------


def test_server_side_tokenizing_leaves_the_models_tokenizer_alone(served: Any) -> None:
    """A fast tokenizer keeps its truncation setting on the object: the server's token counts and /tokenize used
    to reset it on the model's own tokenizer from a request's thread, so a batch the model was tokenizing at that
    moment could be cut to another length (wrong vectors under concurrent load)."""
    for name in ("mini", "rr", "m3"):
        one = served.state.models[name]
        assert one.tokenizer is not one.model.tokenizer
    model_tokenizer = served.state.models["mini"].model.tokenizer._tokenizer
    assert served.post("/v1/embeddings", {"input": TEXTS}).status_code == 200
    truncation = model_tokenizer.truncation
    assert truncation is not None  # the model's own run set it
    assert served.post("/tokenize", {"inputs": TEXTS}).status_code == 200  # no truncation
    assert served.post("/embed", {"inputs": TEXTS}).status_code == 200  # truncate=false: one token more
    assert served.post("/v1/embeddings", {"input": TEXTS, "input_type": "query"}).status_code == 200
    assert model_tokenizer.truncation == truncation
    reranker_tokenizer = served.state.models["rr"].model.tokenizer._tokenizer
    served.post("/rerank", {"query": QUERY, "texts": TEXTS})
    truncation = reranker_tokenizer.truncation
    served.post("/rerank", {"query": QUERY, "texts": TEXTS, "truncate": False})
    served.post("/v1/rerank", {"query": QUERY, "documents": TEXTS})
    assert reranker_tokenizer.truncation == truncation


def test_concurrent_mixed_requests_give_each_its_own_vectors(served: Any) -> None:
    import asyncio

    texts = [" ".join(["panda"] * (150 + 20 * i)) + f" {i}" for i in range(6)]
    expected = vectors(served.post("/v1/embeddings", {"input": texts}))

    async def run() -> list[np.ndarray]:
        async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
            async def embed(i: int) -> np.ndarray:
                return vectors(await client.post("/v1/embeddings", json={"input": texts[i % 6:] + texts[:i % 6]}))

            async def noise(i: int) -> None:
                await client.post("/tokenize", json={"inputs": texts})
                await client.post("/embed", json={"inputs": texts[i % 6], "truncate": i % 2 == 0})

            results = await asyncio.gather(*[embed(i) for i in range(12)], *[noise(i) for i in range(12)])
            return [r for r in results if r is not None]

    for i, got in enumerate(asyncio.run(run())):
        np.testing.assert_allclose(got, np.roll(expected, -(i % 6), axis=0), atol=1e-5)


def test_tei_rerank_applies_truncate(served: Any, reranker: Any) -> None:
    long = " ".join(["bamboo"] * 700)
    refused = served.post("/rerank", {"query": QUERY, "texts": ["short", long]})  # TEI's default: truncate false
    assert refused.status_code == 413 and "texts[1]" in refused.json()["error"]
    assert "truncate=true" in refused.json()["error"]
    long_query = served.post("/rerank", {"query": long, "texts": ["short"]})
    assert long_query.status_code == 413 and "query" in long_query.json()["error"]
    cut = served.post("/rerank", {"query": QUERY, "texts": ["short", long], "truncate": True, "raw_scores": True})
    assert cut.status_code == 200, cut.text
    scores = reranker.compute_score([(QUERY, "short"), (QUERY, long)])
    np.testing.assert_allclose(sorted(row["score"] for row in cut.json()), sorted(scores), atol=1e-6)
    assert served.post("/v1/rerank", {"query": QUERY, "documents": [long]}).status_code == 200  # Cohere cuts


def test_tokenize_keeps_an_unknown_tokens_text_and_offsets(served: Any) -> None:
    text = "a 🐼 b"
    tokens = served.post("/tokenize", {"inputs": text}).json()[0]
    unknown = [t for t in tokens if t["id"] == served.state.models["mini"].tokenizer.unk_token_id]
    assert unknown and unknown[0] == {"id": unknown[0]["id"], "text": "🐼", "special": False, "start": 2, "stop": 3}
    assert [t["special"] for t in tokens] == [True, False, False, False, True]
    plain = served.post("/tokenize", {"inputs": text, "add_special_tokens": False}).json()[0]
    assert not any(t["special"] for t in plain)


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/embeddings", {"input": "a", "dimensions": True}, "dimensions"),
    ("/embed", {"inputs": "a", "dimensions": True}, "dimensions"),
    ("/v1/rerank", {"query": "q", "documents": ["a", "b"], "top_n": True}, "top_n"),
])
def test_a_boolean_is_not_a_number(served: Any, path: str, body: dict[str, Any], field: str) -> None:
    response = served.post(path, body)
    assert response.status_code == 422, response.text
    assert field in response.text


def test_unknown_paths_and_wrong_methods_answer_in_the_apis_error_shape(served: Any) -> None:
    missing = served.post("/v1/embedding", {"input": "x"})
    assert missing.status_code == 404 and "/v1/embedding" in missing.json()["error"]["message"]
    wrong = httpx.get(served.url + "/v1/embeddings")
    assert wrong.status_code == 405 and "POST" in wrong.json()["error"]["message"]
    assert wrong.headers["Allow"] == "POST"
    tei = httpx.get(served.url + "/embed")
    assert tei.status_code == 405 and tei.json()["error_type"] == "Validation"


def test_a_wrong_key_is_told_apart_and_a_utf8_key_works(prebuilt: list[ModelSpec], poll: Any) -> None:
    app = create_app(prebuilt, ServeConfig(api_keys=("clé-secrète",)))
    with ready_client(app, poll) as client:
        wrong = client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "no key of this server's" in wrong.json()["error"]["message"]
        right = client.post("/v1/embeddings", json={"input": "x"},
                            headers={"Authorization": "Bearer clé-secrète".encode()})
        assert right.status_code == 200, right.text


def test_the_m3_endpoint_refuses_a_field_it_does_not_know(served: Any) -> None:
    response = served.post("/v1/m3/embeddings", {"input": ["a"], "model": "m3", "return_sparse": True})
    assert response.status_code == 422 and "return_sparse" in response.text


@pytest.mark.parametrize("content", [
    {"data": [{"embedding": [0.1, -2.5e-08, 1.0, 0.948431134223938, 3.4028234663852886e38]}], "usage": {"n": 3}},
    [{"index": 0, "score": 0.5, "text": "NaN and Infinity are words here, é ✓ \u2028"}],
    ["plain", {"nested": [True, None, 1]}],
])
def test_answers_hold_the_values_starlette_writes(content: Any) -> None:
    """The same numbers to the last bit (both write each float's shortest round-trip digits; pydantic-core writes
    1e-05 as 0.00001), the same text."""
    from fastapi.responses import JSONResponse

    from flag_core.serving.app import Answer

    fast, slow = Answer(content).body, JSONResponse(content).body
    assert json.loads(fast) == json.loads(slow) == content
    assert fast.decode("utf-8").count(",") == slow.decode("utf-8").count(",")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_an_answer_never_writes_a_nan(bad: float) -> None:
    from flag_core.serving.app import Answer

    with pytest.raises(ValueError):
        Answer({"data": [{"embedding": [0.5, bad]}]})
