"""The server as a Ray Serve application: two replicas on a local cluster answer with the in-process vectors, and the
requests spread over both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from flag_core import FlagModel
from flag_core.serving import ModelSpec

ray = pytest.importorskip("ray", reason="the Ray Serve test needs ray[serve] (flagstack[ray-serve])")
serve = pytest.importorskip("ray.serve", reason="the Ray Serve test needs ray[serve] (flagstack[ray-serve])")


@pytest.fixture(scope="module")
def ray_serve() -> Iterator[int]:
    from .conftest import free_port

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    ray.shutdown()


def test_two_replicas_answer_with_in_process_vectors(ray_serve: int, model_path: str) -> None:
    from flag_core.serving.ray_serve import REPLICA_HEADER, ray_application

    spec = ModelSpec("mini", "embedder", model_path, {"devices": "cpu"})
    app = ray_application([spec], replicas=2, ray_actor_options={"num_cpus": 1})
    serve.run(app, name="flagstack", route_prefix="/")
    url = f"http://127.0.0.1:{ray_serve}"
    texts = ["pandas eat bamboo", "Paris is the capital of France", "a third text"]
    replicas: set[str] = set()
    with httpx.Client(timeout=60) as client:
        for _ in range(40):
            response = client.post(url + "/v1/embeddings", json={"input": texts, "model": "mini"})
            assert response.status_code == 200, response.text  # a replica is ready once its models are loaded
            replicas.add(response.headers[REPLICA_HEADER])
            if len(replicas) == 2:
                break
    assert len(replicas) == 2  # Ray Serve's router spreads requests over both replicas
    vectors = np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float32)
    expected = FlagModel(model_path, devices="cpu").encode_corpus(texts)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_bad_arguments_fail_before_any_replica_starts(model_path: str) -> None:
    from flag_core.serving.ray_serve import ray_application

    spec = ModelSpec("mini", "embedder", model_path, {"batch_size": 0})
    with pytest.raises(ValueError, match="batch_size"):
        ray_application([spec])
    with pytest.raises(ValueError, match="replicas"):
        ray_application([ModelSpec("mini", "embedder", model_path)], replicas=0)
    built: Any = object()
    with pytest.raises(ValueError, match="built objects"):
        ray_application([ModelSpec("mini", "embedder", model_path, model=built)])
