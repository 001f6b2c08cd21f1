"""Ray Data scale-out gives the in-process vectors (local Ray, 2 CPUs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flag_core import FlagModel

ray = pytest.importorskip("ray", reason="the Ray test needs ray[data] (flagstack[ray])")


@pytest.fixture(scope="module")
def local_ray() -> object:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_vectors_equal_in_process(local_ray: object, model_path: str, tmp_path: Path) -> None:
    from flag_core.ray_embed import embed_dataset

    texts = [f"document {i}: " + "pandas eat bamboo and sleep " * (1 + i % 5) for i in range(40)]
    ds = ray.data.from_items([{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    out = embed_dataset(ds, model_path, batch_size=16, num_actors=2, num_cpus_per_actor=1)
    out.write_parquet(str(tmp_path / "vectors"))
    rows = ray.data.read_parquet(str(tmp_path / "vectors")).take_all()
    by_id = {row["id"]: np.asarray(row["embedding"], dtype=np.float32) for row in rows}
    expected = FlagModel(model_path, devices="cpu").encode_corpus(texts)
    got = np.stack([by_id[f"d{i}"] for i in range(len(texts))])
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.slow
def test_bad_arguments(local_ray: object, model_path: str) -> None:
    from flag_core.ray_embed import embed_dataset

    with pytest.raises(ValueError, match="side"):
        embed_dataset(ray.data.from_items([{"text": "x"}]), model_path, side="keys")
