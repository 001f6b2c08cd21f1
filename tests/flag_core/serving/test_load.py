"""Behaviour under load: a full queue answers 503 with Retry-After, a client that goes away and a request past its
deadline have their queued work dropped, and a failing model call fails its own batch only.

The model's calls pass a gate the test opens and closes (holding the model busy while other requests queue), and
the gate records what the model ran: a dropped request's texts never reach it."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from flag_core.serving import ModelSpec

QUEUE_LIMIT = 2


class Gate:
    """Wraps a queue's model call: waits while closed, records the texts it runs, raises on a text "boom"."""

    def __init__(self, execute: Any) -> None:
        self.execute = execute
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.ran: list[list[str]] = []

    def __call__(self, items: list[str], options: Any) -> Any:
        self.ran.append(list(items))
        self.entered.set()
        assert self.open.wait(60)
        if "boom" in items:
            raise RuntimeError("the model broke on purpose")
        return self.execute(items, options)

    def texts(self) -> set[str]:
        return {text for run in self.ran for text in run}


@pytest.fixture(scope="module")
def guarded(start_server: Any, model_path: str) -> Iterator[tuple[Any, Gate]]:
    """A server with one embedder ("gated", queue_limit 2) whose model calls pass a :class:`Gate`."""
    live = start_server([ModelSpec("gated", "embedder", model_path, {"queue_limit": QUEUE_LIMIT, "batch_size": 31})])
    queue = live.state.models["gated"].queues
    gate = Gate(queue._execute)
    queue._execute = gate
    yield live, gate
    queue._execute = gate.execute
    gate.open.set()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as executor:
        yield executor


def hold(live: Any, gate: Any, pool: ThreadPoolExecutor, poll: Any) -> Future[httpx.Response]:
    """A request that is running in the model and held there (the gate closed)."""
    gate.open.clear()
    gate.entered.clear()
    held = pool.submit(live.post, "/v1/embeddings", {"input": ["holds the model"]})
    poll(gate.entered.is_set, "the held request to reach the model")
    return held


def queued(live: Any, pool: ThreadPoolExecutor, poll: Any, texts: list[str], depth: int) -> Future[httpx.Response]:
    future = pool.submit(live.post, "/v1/embeddings", {"input": texts})
    poll(lambda: live.state.models["gated"].queues.depth >= depth, f"{texts} to wait in the queue")
    return future


def clear_queue(live: Any, gate: Gate, poll: Any) -> None:
    """Open the gate and run one request, so dropped calls left in the queue are passed over."""
    gate.open.set()
    assert live.post("/v1/embeddings", {"input": ["clears the queue"]}).status_code == 200
    poll(lambda: live.state.models["gated"].queues.depth == 0, "an empty queue")


def test_a_full_queue_is_503_with_retry_after(guarded: Any, pool: ThreadPoolExecutor, poll: Any) -> None:
    live, gate = guarded
    held = hold(live, gate, pool, poll)
    waiting = [queued(live, pool, poll, [f"waits {i}"], i + 1) for i in range(QUEUE_LIMIT)]
    refused = live.post("/v1/embeddings", {"input": ["one too many"]})
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    message = refused.json()["error"]["message"]
    assert "'gated' is busy" in message and "queue_limit" in message and "--queue-limit" in message
    gate.open.set()
    assert [f.result().status_code for f in (held, *waiting)] == [200] * (QUEUE_LIMIT + 1)
    assert "one too many" not in gate.texts()
    assert [f"waits {i}" for i in range(QUEUE_LIMIT)] in gate.ran  # the queued requests shared one model run
    registry = live.state.metrics.registry
    assert registry.get_sample_value("flagstack_requests_total", {"endpoint": "/v1/embeddings", "status": "503"}) >= 1
    assert registry.get_sample_value("flagstack_batch_callers_bucket", {"model": "gated", "le": "1.0"}) < \
        registry.get_sample_value("flagstack_batch_callers_count", {"model": "gated"})  # a run of several callers
    clear_queue(live, gate, poll)


def test_a_full_queue_refuses_before_reading_the_texts(guarded: Any, pool: ThreadPoolExecutor, poll: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Under overload a refused request costs no thread and no tokenizing (the work spent on refusals is work
    the model's answers do not get)."""
    live, gate = guarded
    held = hold(live, gate, pool, poll)
    waiting = [queued(live, pool, poll, [f"full {i}"], i + 1) for i in range(QUEUE_LIMIT)]
    model = live.state.models["gated"].model
    counted: list[Any] = []
    side_tokenizer = model.side_tokenizer  # what counting the tokens of a request takes
    monkeypatch.setattr(model, "side_tokenizer", lambda *a, **k: counted.append(a) or side_tokenizer(*a, **k))
    refused = live.post("/v1/embeddings", {"input": ["refused early"]})
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert "'gated' is busy" in refused.json()["error"]["message"]
    assert counted == []
    gate.open.set()
    assert [f.result().status_code for f in (held, *waiting)] == [200] * (QUEUE_LIMIT + 1)
    assert "refused early" not in gate.texts()
    clear_queue(live, gate, poll)
    assert counted  # a request that is taken is counted (the wrapper above sees it)


def test_a_client_that_goes_away_has_its_work_dropped(guarded: Any, pool: ThreadPoolExecutor, poll: Any) -> None:
    live, gate = guarded
    registry = live.state.metrics.registry
    labels = {"endpoint": "/v1/embeddings", "status": "499"}
    before = registry.get_sample_value("flagstack_requests_total", labels) or 0
    held = hold(live, gate, pool, poll)
    body = json.dumps({"input": ["nobody waits for this"]}).encode()
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        poll(lambda: live.state.models["gated"].queues.depth >= 1, "the request to wait in the queue")
    poll(lambda: (registry.get_sample_value("flagstack_requests_total", labels) or 0) > before,
         "the server to see the client go")
    gate.open.set()
    assert held.result().status_code == 200
    clear_queue(live, gate, poll)
    assert "nobody waits for this" not in gate.texts()


def test_a_request_past_its_deadline_is_504_and_dropped(guarded: Any, pool: ThreadPoolExecutor, poll: Any) -> None:
    live, gate = guarded
    config = live.state.config
    live.state.config = dataclasses.replace(config, timeout=0.5)
    try:
        held = hold(live, gate, pool, poll)
        late = queued(live, pool, poll, ["too late"], 1)
        for future in (late, held):
            response = future.result()
            assert response.status_code == 504
            assert "0.5 s" in response.json()["error"]["message"]
            assert "--timeout" in response.json()["error"]["message"]
    finally:
        live.state.config = config
    clear_queue(live, gate, poll)
    assert "too late" not in gate.texts()


def test_a_failing_model_call_fails_its_batch_and_the_server_goes_on(guarded: Any, pool: ThreadPoolExecutor,
                                                                     poll: Any) -> None:
    live, gate = guarded
    held = hold(live, gate, pool, poll)
    broken = queued(live, pool, poll, ["boom"], 1)
    neighbour = queued(live, pool, poll, ["shares the broken batch"], 2)
    gate.open.set()
    assert held.result().status_code == 200
    for future in (broken, neighbour):
        response = future.result()
        assert response.status_code == 500
        assert "'gated' failed" in response.json()["error"]["message"]
        assert "broke on purpose" in response.json()["error"]["message"]
    assert ["boom", "shares the broken batch"] in gate.ran  # one model call held both
    after = live.post("/v1/embeddings", {"input": ["the server goes on"]})
    assert after.status_code == 200 and len(after.json()["data"]) == 1
