"""Eight threads encoding at once get what one thread gets (to fp32 precision: their calls share model runs)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from flag_core import FlagModel


def test_eight_threads_equal_single_thread(mini_model: FlagModel) -> None:
    batches = [[f"thread {t} text {i} " * (1 + (i + t) % 5) for i in range(12)] for t in range(8)]
    expected = [mini_model.encode(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(mini_model.encode, batches * 2))
    for got, want in zip(results, expected * 2, strict=True):
        # concurrent calls share model runs (flag_core.inference.gather): other batch mates, the same vectors to fp32
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        assert got.shape == want.shape and got.dtype == want.dtype
