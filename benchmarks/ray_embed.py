"""Embedding the SciFact corpus with Ray Data actors next to the in-process runtime, in one run.

    python benchmarks/ray_embed.py [--limit N] [--actors 1] [--rounds 2]

Prints docs/s of each path and the largest difference between their vectors. On one machine Ray adds
scheduling and serialisation on top of the same runtime, so expect it at or a little below in-process;
its point is machines and GPUs beyond one process.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "scifact")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    logging.getLogger("flag_core").setLevel(logging.ERROR)

    import ray

    from flag_core import FlagModel
    from flag_core.evaluation.beir import load_corpus
    from flag_core.ray_embed import embed_dataset
    from flag_core.testing import bundled_model_path

    corpus = load_corpus(args.data, args.limit)
    ids, texts = list(corpus), [doc["full"] for doc in corpus.values()]
    model_path = bundled_model_path()
    ray.init(include_dashboard=False, log_to_driver=False)
    print(f"{len(texts)} documents, max length {args.max_length}, Ray {ray.__version__} with "
          f"{int(ray.cluster_resources().get('CPU', 0))} CPUs, {args.actors} actor(s)")
    local = FlagModel(model_path, devices="cpu", passage_max_length=args.max_length)
    local.encode_corpus(texts[:16])
    rates: dict[str, list[float]] = {"in-process": [], "ray": []}
    outputs: dict[str, np.ndarray] = {}
    dataset = ray.data.from_items([{"id": i, "text": t} for i, t in zip(ids, texts, strict=True)])
    for round_no in range(args.rounds):
        start = time.perf_counter()
        outputs["in-process"] = np.asarray(local.encode_corpus(texts))
        rates["in-process"].append(len(texts) / (time.perf_counter() - start))
        start = time.perf_counter()
        rows = embed_dataset(dataset, model_path, num_actors=args.actors, batch_size=256,
                             passage_max_length=args.max_length).take_all()
        rates["ray"].append(len(texts) / (time.perf_counter() - start))
        by_id = {row["id"]: row["embedding"] for row in rows}
        outputs["ray"] = np.stack([by_id[i] for i in ids])
        print(f"  round {round_no + 1}: in-process {rates['in-process'][-1]:.1f} docs/s, "
              f"ray {rates['ray'][-1]:.1f} docs/s (includes actor start-up)")
    print(f"\nin-process {max(rates['in-process']):.1f} docs/s, Ray {max(rates['ray']):.1f} docs/s "
          f"(ratio {max(rates['ray']) / max(rates['in-process']):.2f}); largest vector difference "
          f"{np.abs(outputs['ray'] - outputs['in-process']).max():.2e}")
    ray.shutdown()


if __name__ == "__main__":
    main()
