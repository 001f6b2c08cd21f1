"""Reranking throughput: flagstack's FlagReranker against sentence-transformers' CrossEncoder, in one run.

    python benchmarks/rerank_throughput.py [--queries 50] [--rounds 3] [--checkpoint DIR] [--no-onnx]

Scores the SciFact BM25 top-100 candidates of the first N test queries (texts from the BEIR SciFact
corpus) with both (and with flagstack's opt-in ONNX Runtime backend when onnxruntime is installed),
alternating, and prints pairs/s for each, the ratio and the largest score difference to
sentence-transformers. The checkpoint defaults to the golden cross-encoder built from the bundled test model by the
recipe in shared/golden/README.md (deterministic).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_DATA, alternate

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="cross-encoder folder (default: built as described)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "scifact")
    parser.add_argument("--run", type=Path, default=SHARED_DATA / "scifact_rerank" / "bm25_top100_test.trec")
    parser.add_argument("--queries", type=int, default=50, help="rerank the first N queries of the run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--st-batch-size", type=int, default=32)
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime backend")
    args = parser.parse_args()
    logging.getLogger("flag_core").setLevel(logging.ERROR)

    from sentence_transformers import CrossEncoder

    from flag_core import FlagReranker
    from flag_core.evaluation import trec_order
    from flag_core.evaluation.beir import load_corpus, load_queries, load_trec_run
    from flag_core.testing import build_test_reranker

    corpus = load_corpus(args.data)
    queries = load_queries(args.data)
    run = load_trec_run(args.run)
    qids = list(run)[: args.queries]
    pairs = [(queries[qid], corpus[docid]["full"]) for qid in qids for docid in trec_order(run[qid])]
    print(f"{len(qids)} queries, {len(pairs)} pairs, max length {args.max_length}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or build_test_reranker(Path(tmp) / "reranker")
        cross = CrossEncoder(checkpoint, device="cpu", max_length=args.max_length)
        flag = FlagReranker(checkpoint, devices="cpu", max_length=args.max_length)
        cross.predict(pairs[:8], activation_fn=torch.nn.Identity())  # warm-up
        flag.compute_score(pairs[:8])
        systems = {
            "sentence-transformers": lambda: cross.predict(
                pairs, batch_size=args.st_batch_size, activation_fn=torch.nn.Identity(), show_progress_bar=False
            ),
            "flagstack": lambda: flag.compute_score(pairs),
        }
        if not args.no_onnx and importlib.util.find_spec("onnxruntime") is not None:
            onnx = FlagReranker(checkpoint, devices="cpu", max_length=args.max_length, backend="onnx")
            onnx.compute_score(pairs[:8])
            systems["flagstack onnx (opt-in)"] = lambda: onnx.compute_score(pairs)
        rates, outputs = alternate(systems, args.rounds, len(pairs), "pairs/s")

    anchor = outputs["sentence-transformers"]
    print()
    print(f"{'system':<26} {'pairs/s':>9} {'x ST':>6} {'largest score difference to ST':>31}")
    for name, rate in rates.items():
        diff = float(np.abs(outputs[name] - anchor).max())
        print(f"{name:<26} {rate:9.1f} {rate / rates['sentence-transformers']:6.2f} {diff:31.2e}")
    print("(both truncate at the same max length; sentence-transformers truncates the pair jointly "
          "(longest first), flagstack as FlagEmbedding does (query to 3/4, then the passage), so over-long "
          "pairs may differ slightly)")


if __name__ == "__main__":
    main()
