"""Shared pieces of the benchmark scripts: data loading and alternating timed rounds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def alternate(systems: dict[str, Callable[[], Any]], rounds: int, items: int, unit: str) -> tuple[
    dict[str, float], dict[str, np.ndarray]
]:
    """Run every system once per round, order reversed every other round; return the median rate
    (items per second) of each and its last output as float32."""
    times: dict[str, list[float]] = {name: [] for name in systems}
    outputs: dict[str, np.ndarray] = {}
    names = list(systems)
    for round_no in range(rounds):
        for name in names if round_no % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            outputs[name] = np.asarray(systems[name](), dtype=np.float32)
            times[name].append(time.perf_counter() - start)
            print(f"  round {round_no + 1}: {name:<30} {items / times[name][-1]:9.1f} {unit}", flush=True)
    return {name: items / statistics.median(t) for name, t in times.items()}, outputs
