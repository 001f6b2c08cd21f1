"""BGE-M3 with all three outputs: encoding cost, hybrid search latency, index size (SciFact, CPU).

    python benchmarks/m3_hybrid.py [--model BGE-M3 FOLDER] [--encode-limit 500] [--rounds 3] [--max-length 512]
                                   [--corpus-limit N] [--queries 50] [--synthetic 100000]

1. Encoding: ``encode_corpus`` of the first --encode-limit SciFact abstracts with dense output only, and with
   dense + sparse + ColBERT, in alternating rounds; prints docs/s (median) and the ratio (goal: <= 1.15x).
2. Search: a ``HybridIndex`` over the SciFact corpus, then --queries SciFact queries per mode; prints ms per
   query for sparse+dense (no ColBERT) and hybrid (ColBERT on the candidates), and their difference, the ColBERT
   stage. The same at --synthetic documents: the SciFact documents repeated (dense vectors slightly perturbed so
   that no two are equal, sparse and ColBERT vectors shared): the ColBERT stage should not grow with the corpus.
3. Size: the saved index in bytes per document, split into dense, sparse, ColBERT and texts.

Without --model it builds the golden-recipe M3 checkpoint from the bundled MiniLM (384 dimensions; the real
BGE-M3 has 1024, so its ColBERT part is 2.7x larger per token).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_DATA, alternate

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a BGE-M3 folder (default: the golden-recipe checkpoint)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "scifact")
    parser.add_argument("--encode-limit", type=int, default=500, help="abstracts in the encoding comparison")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=512, help="passage tokens")
    parser.add_argument("--corpus-limit", type=int, default=None, help="index only the first N documents")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--synthetic", type=int, default=100_000, help="documents in the synthetic corpus")
    args = parser.parse_args()
    logging.getLogger("flag_core").setLevel(logging.ERROR)

    import torch

    from flag_core import BGEM3FlagModel
    from flag_core.evaluation.beir import load_corpus, load_queries
    from flag_core.retrieval import HybridIndex
    from flag_core.testing import build_test_m3

    work = Path(tempfile.mkdtemp(prefix="flagstack-m3-bench-"))
    model_path = args.model or build_test_m3(work / "bge-m3-golden")
    m3 = BGEM3FlagModel(model_path, use_fp16=False, query_max_length=args.max_length,
                        passage_max_length=args.max_length)
    corpus = load_corpus(args.data, limit=args.corpus_limit)
    texts = [doc["full"] for doc in corpus.values()]
    queries = list(load_queries(args.data).values())[: args.queries]
    print(f"model {model_path}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"max length {args.max_length}\n")

    # 1. encoding cost -------------------------------------------------------------------------------
    sample = texts[: args.encode_limit]
    rates, _ = alternate({
        "dense only": lambda: m3.encode_corpus(sample, return_dense=True)["dense_vecs"],
        "dense + sparse + ColBERT": lambda: m3.encode_corpus(sample, return_dense=True, return_sparse=True,
                                                             return_colbert_vecs=True)["dense_vecs"],
    }, args.rounds, len(sample), "docs/s")
    ratio = rates["dense only"] / rates["dense + sparse + ColBERT"]
    print(f"\nencoding {len(sample)} abstracts: dense only {rates['dense only']:.1f} docs/s, all three outputs "
          f"{rates['dense + sparse + ColBERT']:.1f} docs/s: all three take {ratio:.3f}x the time of dense alone\n")

    # 2. search latency ------------------------------------------------------------------------------
    start = time.perf_counter()
    index = HybridIndex(m3, colbert_storage="float32")  # the other kinds: benchmarks/colbert_storage.py
    index.add(texts)
    print(f"indexed {len(index)} SciFact documents (all three outputs) in {time.perf_counter() - start:.0f}s")
    scifact = latency(index, queries, args.candidates)

    big = HybridIndex(m3, settings=index.settings, colbert_storage="float32")  # float32 rows are shared as given
    repeats = -(-args.synthetic // len(index))
    rng = np.random.default_rng(0)
    dense = np.tile(np.asarray(index.dense.vectors), (repeats, 1))[: args.synthetic]
    dense = dense + rng.normal(0, 1e-3, dense.shape).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    big.dense.add(dense, [{"text": "", "payload": {}} for _ in range(len(dense))])
    positions = [i % len(index) for i in range(args.synthetic)]
    big.sparse.add([index.sparse.document(i) for i in positions])
    big.colbert.add([index.colbert.document(i) for i in positions])  # the same arrays: no copies
    synthetic = latency(big, queries, args.candidates)

    print(f"\nms per query ({len(queries)} SciFact queries, {args.candidates} dense + {args.candidates} sparse "
          "candidates; query encoding included)")
    print(f"{'corpus':<28} {'sparse+dense':>12} {'hybrid':>8} {'ColBERT stage':>14}")
    for name, figures in ((f"SciFact ({len(index)} docs)", scifact), (f"synthetic ({len(big)} docs)", synthetic)):
        print(f"{name:<28} {figures['sparse+dense']:12.1f} {figures['hybrid']:8.1f} "
              f"{figures['hybrid'] - figures['sparse+dense']:14.1f}")

    # 3. index size ----------------------------------------------------------------------------------
    path = work / "scifact.hybrid"
    index.save(path)
    with zipfile.ZipFile(path) as archive:
        parts = {info.filename: info.file_size for info in archive.infolist()}
    groups = {"dense": ["dense.npy"], "sparse": ["sparse_ids.npy", "sparse_weights.npy", "sparse_offsets.npy"],
              "ColBERT": ["colbert.npy", "colbert_offsets.npy"], "texts and payloads": ["payloads.jsonl"]}
    size = path.stat().st_size
    print(f"\nindex on disk: {size / 1e6:.1f} MB for {len(index)} documents, {size / len(index) / 1024:.1f} KiB per "
          "document: " + ", ".join(f"{name} {sum(parts[p] for p in files) / len(index) / 1024:.1f} KiB"
                                   for name, files in groups.items()))
    tokens = sum(len(index.colbert.document(i)) for i in range(len(index)))
    print(f"({tokens / len(index):.0f} ColBERT rows of {index.colbert.document(0).shape[1]} floats per document on "
          "average)")


def latency(index: object, queries: list[str], candidates: int) -> dict[str, float]:
    """Median milliseconds per query for the two modes, alternating."""
    times: dict[str, list[float]] = {"sparse+dense": [], "hybrid": []}
    for query in queries:
        for mode in times:
            start = time.perf_counter()
            index.search(query, k=10, mode=mode, candidates=candidates)  # type: ignore[attr-defined]
            times[mode].append((time.perf_counter() - start) * 1000)
    return {mode: statistics.median(values) for mode, values in times.items()}


if __name__ == "__main__":
    main()
