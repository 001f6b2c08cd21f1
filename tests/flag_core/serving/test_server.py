"""Running the app on uvicorn: :func:`serve` until stopped, a model that does not load stopping the server with its
error, and a graceful shutdown on SIGTERM that finishes the requests in flight (``flagstack serve`` in a
subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from flag_core.serving import ModelSpec, create_app, serve, stop_servers

from .conftest import free_port


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_serve_runs_until_stopped(served: Any, poll: Any) -> None:
    mini = served.state.models["mini"]
    app = create_app([ModelSpec("mini", "embedder", mini.path, model=mini.model)])
    port = free_port()
    result: list[str | None] = []
    thread = threading.Thread(target=lambda: result.append(serve(app, "127.0.0.1", port, "warning")))
    thread.start()
    try:
        poll(lambda: _ready(f"http://127.0.0.1:{port}"), "the server to be ready")
        response = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "x"}, timeout=30)
        assert response.status_code == 200
    finally:
        assert stop_servers() == 1
        thread.join(60)
    assert result == [None] and stop_servers() == 0


def test_a_model_that_does_not_load_stops_the_server_with_its_error(tmp_path: Path) -> None:
    app = create_app([ModelSpec("missing", "embedder", str(tmp_path / "nothing-here"))])
    error = serve(app, "127.0.0.1", free_port(), "critical")
    assert error is not None and "'missing'" in error and "nothing-here" in error


@pytest.mark.slow  # a flagstack serve process of its own
def test_sigterm_finishes_the_requests_in_flight(model_path: str, poll: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # a 2 s gather window: every model call waits that long before it runs, so a request is surely in flight
    command = [sys.executable, "-m", "flag_core.cli", "serve", "--model", f"mini={model_path}", "--port", str(port),
               "--gather-window-ms", "2000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        poll(lambda: _ready(url) or process.poll() is not None, "flagstack serve to be ready", 120)
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        texts = [f"text number {i}" for i in range(40)]
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(httpx.post, url + "/v1/embeddings", json={"input": texts}, timeout=60)

            def running() -> bool:
                metrics = httpx.get(url + "/metrics", timeout=5).text
                line = next(x for x in metrics.splitlines() if x.startswith("flagstack_requests_in_progress "))
                return float(line.split()[1]) >= 2  # the /metrics request itself and the embeddings request

            poll(running, "the request to be in flight")
            process.send_signal(signal.SIGTERM)
            response = in_flight.result()
        assert response.status_code == 200
        assert np.asarray([row["embedding"] for row in response.json()["data"]]).shape == (len(texts), 384)
        assert process.wait(60) == 0
        output = process.stdout.read() if process.stdout else ""
        assert "serving    mini (embedder" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
