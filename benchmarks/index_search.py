"""Exact single-query search over the embedded dense index: filters off, filters on, and numpy's bound.

    python benchmarks/index_search.py [--size 100000] [--dim 384] [--k 10] [--queries 300] [--rounds 5]

One index of ``--size`` random unit vectors (float32, seeded) with payloads {"year": int, "kind": str}. Each round
runs every variant over the same queries, one query at a time, the variants alternating in one process (their order
rotating per round); the table gives each variant's median queries per second over the rounds and its ratio to
numpy's bound (``vectors @ q`` and an ``argpartition`` for the top k: what any exact search must do).

- numpy bound: the matrix-vector product and the partial sort alone;
- VectorIndex.search: flag_core's search, filters off (positions and scores);
- DenseIndex.search_by_vector: the same with ids and payload copies (what the framework stores call);
- with the VectorIndex.search of 967415d (read from git history, when the checkout has it): today's code before ids;
- filtered (dict): ``{"year": {"$gte": 2020}}`` (half the entries), exact: the filter is applied before the cut;
  its answers are kept while the index is unchanged, so this is the repeated-filter rate; "first use" evaluates
  it over every payload (a new filter each query);
- filtered (callable): the same as a Python function given a copy of each payload (evaluated every time).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_line

ROOT = Path(__file__).parents[1]


def old_vector_index(commit: str) -> Any:
    """``VectorIndex`` as it was at ``commit`` (its module read from git and imported inside flag_core.retrieval, so
    its relative imports resolve), or None when git or the commit is not there."""
    try:
        source = subprocess.run(["git", "show", f"{commit}:core/retrieval/index.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader(f"flag_core.retrieval._index_{commit}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "flag_core.retrieval"
    exec(compile(source, f"{commit}:core/retrieval/index.py", "exec"), module.__dict__)
    return module.VectorIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from flag_core.retrieval import DenseIndex, VectorIndex

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.size, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    payloads: list[dict[str, Any]] = [{"year": 2010 + i % 20, "kind": "paper" if i % 3 else "note"}
                                      for i in range(args.size)]
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    index = VectorIndex()
    index.add(vectors, payloads)
    dense = DenseIndex(None, None)
    dense.add_embedded(vectors, [f"text {i}" for i in range(args.size)], payloads)
    k = args.k

    def bound(q: np.ndarray) -> Any:
        scores = vectors @ q
        return np.argpartition(-scores, k - 1)[:k]

    variants: dict[str, Callable[[np.ndarray], Any]] = {
        "numpy bound": bound,
        "VectorIndex.search": lambda q: index.search(q, k),
        "DenseIndex.search_by_vector": lambda q: dense.search_by_vector(q, k),
    }
    old_class = old_vector_index("967415d")
    if old_class is not None:
        old = old_class()
        old.add(vectors, payloads)
        variants["VectorIndex.search (967415d)"] = lambda q: old.search(q, k)
    recent = {"year": {"$gte": 2020}}
    variants["filtered (dict, half)"] = lambda q: dense.search_by_vector(q, k, filter=recent)
    counter = iter(range(10**9))
    variants["filtered (dict, first use)"] = lambda q: dense.search_by_vector(
        q, k, filter={"year": {"$gte": 2020}, "n": {"$ne": next(counter)}})  # a new filter each time
    variants["filtered (callable, half)"] = lambda q: dense.search_by_vector(q, k, filter=lambda m: m["year"] >= 2020)

    # the same answers: filters off agree with the bound; the filtered ones are exact over the matching entries
    for q in queries[:5]:
        top = sorted(bound(q).tolist(), key=lambda i: (-float(vectors[i] @ q), i))
        assert [i for i, _ in index.search(q, k)[0]] == top
        allowed = np.array([p["year"] >= 2020 for p in payloads])
        masked = np.where(allowed, vectors @ q, -np.inf)
        assert [h.position for h in dense.search_by_vector(q, k, filter=recent)] == sorted(
            np.argpartition(-masked, k - 1)[:k].tolist(), key=lambda i: (-masked[i], i))

    names = list(variants)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        order = names[round_number % len(names):] + names[:round_number % len(names)]
        for name in order:
            count = max(args.queries // 20, 5) if "callable" in name or "first" in name else args.queries
            start = time.perf_counter()
            for q in queries[:count]:
                variants[name](q)
            rates[name].append(count / (time.perf_counter() - start))

    print(cpu_line())
    print(f"exact single-query search: {args.size:,} x {args.dim} float32, k={k}, {args.queries} queries, "
          f"{args.rounds} rounds alternating (median)")
    base = statistics.median(rates["numpy bound"])
    width = max(len(name) for name in names)
    print(f"{'variant':<{width}}  {'queries/s':>10}  {'vs numpy bound':>14}")
    for name in names:
        rate = statistics.median(rates[name])
        print(f"{name:<{width}}  {rate:>10.1f}  {rate / base:>13.2f}x")


if __name__ == "__main__":
    main()
