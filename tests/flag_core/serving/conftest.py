"""A live server (uvicorn in a thread, on a free port) and the test checkpoints served by it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from flag_core.serving import ModelSpec, ServeConfig, create_app

QUERY_INSTRUCTION = "query: "  # the served embedder's (so a query's vector differs from a passage's)
WAIT = 60.0  # seconds to wait for a server to start and load (a bound, never a measured time)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Any, what: str, limit: float = WAIT) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what`` after ``limit`` seconds."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


@dataclass
class Live:
    """A running server: its base ``url``, its app and the app's state."""

    url: str
    app: Any
    server: Any
    thread: threading.Thread

    @property
    def state(self) -> Any:
        return self.app.state.flagstack

    def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=WAIT, **kwargs)


def start(specs: list[ModelSpec], config: ServeConfig | None = None) -> Live:
    import uvicorn

    app = create_app(specs, config)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    live = Live(f"http://127.0.0.1:{port}", app, server, thread)
    wait_until(lambda: server.started, "the server to start")
    wait_until(lambda: httpx.get(live.url + "/ready").status_code == 200 or live.state.error, "the models to load")
    assert live.state.error is None, live.state.error
    return live


def stop(live: Live) -> None:
    live.server.should_exit = True
    live.thread.join(WAIT)


@pytest.fixture(scope="session")
def start_server() -> Iterator[Any]:
    """``start_server(specs, config)``: a :class:`Live` server, stopped when the session ends."""
    started: list[Live] = []

    def make(specs: list[ModelSpec], config: ServeConfig | None = None) -> Live:
        live = start(specs, config)
        started.append(live)
        return live

    yield make
    for live in started:
        stop(live)


@pytest.fixture(scope="session")
def poll() -> Any:
    """``poll(condition, what)``: wait until ``condition()`` is true (see :func:`wait_until`)."""
    return wait_until


@pytest.fixture(scope="session")
def served(model_path: str, reranker_path: str, m3_path: str) -> Iterator[Live]:
    """The bundled embedder ("mini", with the query instruction "query: "), the test reranker ("rr") and the test
    BGE-M3 ("m3") on one live server."""
    live = start([ModelSpec("mini", "embedder", model_path, {"query_instruction_for_retrieval": QUERY_INSTRUCTION}),
                  ModelSpec("rr", "reranker", reranker_path),
                  ModelSpec("m3", "m3", m3_path)])
    yield live
    stop(live)
