"""Shared pieces of the benchmark scripts: data loading and alternating timed rounds."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def alternate(systems: dict[str, Callable[[], Any]], rounds: int, items: int, unit: str,
              log: TextIO | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Run every system once per round, order reversed every other round; return the median rate
    (items per second) of each and its last output as float32. Each round is printed to ``log`` (stdout)."""
    times: dict[str, list[float]] = {name: [] for name in systems}
    outputs: dict[str, np.ndarray] = {}
    names = list(systems)
    for round_no in range(rounds):
        for name in names if round_no % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            outputs[name] = np.asarray(systems[name](), dtype=np.float32)
            times[name].append(time.perf_counter() - start)
            print(f"  round {round_no + 1}: {name:<30} {items / times[name][-1]:9.1f} {unit}",
                  file=log or sys.stdout, flush=True)
    return {name: items / statistics.median(t) for name, t in times.items()}, outputs


def cpu_line() -> str:
    """The CPU, its speed-relevant features and torch's threads, for the header of every speed figure."""
    import torch

    from flag_core.cli.encode import _cpu_name
    from flag_core.inference.devices import cpu_features

    features = ", ".join(name for name, value in cpu_features().items() if value)
    return f"CPU: {_cpu_name()}; {features}; torch {torch.__version__}, {torch.get_num_threads()} threads"
