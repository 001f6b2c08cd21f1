"""Several devices: one worker process each; a failing worker makes the call raise, never hang."""

from __future__ import annotations

import numpy as np
import pytest

from flag_core import FlagModel
from flag_core.inference.workers import DevicePool


@pytest.mark.slow
def test_two_workers_give_the_in_process_vectors(model_path: str, mini_model: FlagModel) -> None:
    model = FlagModel(model_path, pooling_method="cls", devices=["cpu", "cpu"])
    try:
        texts = [f"document {i} " * (1 + i % 4) for i in range(21)] + ["document 0 "]
        np.testing.assert_allclose(model.encode(texts), mini_model.encode(texts), atol=1e-6)
        assert model.encode("one text").shape == (384,)  # a single text stays in-process
    finally:
        model.stop_self_pool()


def test_a_worker_error_is_raised_in_the_caller() -> None:
    pool = DevicePool(str, ["cpu"])  # each worker holds the str "cpu"
    try:
        assert pool.map(str.upper, [((), {})]) == ["CPU"]
        with pytest.raises(ValueError, match="substring not found"):
            pool.map(str.index, [(("z",), {})])
    finally:
        pool.close()


def test_a_worker_that_cannot_start_raises_instead_of_hanging() -> None:
    pool = DevicePool(dict, ["cpu", "cpu"])  # dict("cpu") fails inside the worker's initializer
    try:
        with pytest.raises(RuntimeError, match="worker process for device cpu"):
            pool.map(dict.keys, [((), {}), ((), {})])
    finally:
        pool.close()
