"""Shared pieces of the benchmark scripts: data loading and alternating timed rounds."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_beir_corpus(path: Path, limit: int | None = None) -> dict[str, str]:
    """doc id -> title + " " + text, stripped (BEIR convention)."""
    if not path.is_file():
        raise SystemExit(f"corpus not found at {path}: pass its path explicitly")
    docs: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            docs[str(row["_id"])] = (row.get("title", "") + " " + row.get("text", "")).strip()
            if limit and len(docs) >= limit:
                break
    return docs


def load_queries(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8") as handle:
        return {str(row["_id"]): row["text"] for row in map(json.loads, handle)}


def load_trec_run(path: Path) -> dict[str, list[str]]:
    """query id -> doc ids in rank order."""
    run: dict[str, list[tuple[int, str]]] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            qid, _, docid, rank, *_ = line.split()
            run.setdefault(qid, []).append((int(rank), docid))
    return {qid: [d for _, d in sorted(items)] for qid, items in run.items()}


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
