"""ColBERT storage kinds of HybridIndex on SciFact: bytes per document, hybrid latency, nDCG@10 against float32.

    python benchmarks/colbert_storage.py [--model BGE-M3 FOLDER] [--corpus-limit 1000] [--max-length 512]
                                         [--queries 300] [--candidates 100]

The corpus is encoded once (dense + sparse + ColBERT) and the same outputs go into one ``HybridIndex`` per
storage kind (float32, float16, int8, int4, binary), so the kinds differ only in how ColBERT rows are kept. With
--corpus-limit N the corpus is every document the test qrels judge plus the first documents up to N in all (the
queries keep all their relevant documents); without it, the whole corpus. Per kind:

- bytes per document: the saved file's ColBERT parts (colbert.npy, colbert_offsets.npy, colbert_scales.npy) over
  the documents, and the whole file's;
- hybrid ms per query: the median over the SciFact test queries of ``search(mode="hybrid", k=10)`` (query
  encoding included), the kinds alternating per query in one process, their order rotating;
- nDCG@10 of the hybrid ranking (flag_core.evaluation) and its relative change against float32; the same for the
  ColBERT-only ranking, which shows the storage's loss undiluted.

Without --model it builds the golden-recipe M3 checkpoint from the bundled MiniLM (384 dimensions).
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
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_DATA, cpu_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")

KINDS = ("float32", "float16", "int8", "int4", "binary")
COLBERT_PARTS = ("colbert.npy", "colbert_offsets.npy", "colbert_scales.npy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a BGE-M3 folder (default: the golden-recipe checkpoint)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "scifact")
    parser.add_argument("--max-length", type=int, default=512, help="passage tokens")
    parser.add_argument("--corpus-limit", type=int, default=None,
                        help="the judged documents plus the first others, N in all (default: the whole corpus)")
    parser.add_argument("--queries", type=int, default=None, help="at most this many test queries (default: all)")
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args()
    logging.getLogger("flag_core").setLevel(logging.ERROR)

    from flag_core import BGEM3FlagModel
    from flag_core.evaluation.beir import load_corpus, load_qrels, load_queries
    from flag_core.evaluation.metrics import evaluate_run
    from flag_core.retrieval import HybridIndex
    from flag_core.testing import build_test_m3

    work = Path(tempfile.mkdtemp(prefix="flagstack-colbert-storage-"))
    model_path = args.model or build_test_m3(work / "bge-m3-golden")
    m3 = BGEM3FlagModel(model_path, use_fp16=False, query_max_length=args.max_length,
                        passage_max_length=args.max_length)
    qrels = load_qrels(args.data)
    queries = {qid: text for qid, text in load_queries(args.data).items() if qid in qrels}
    if args.queries:
        queries = dict(list(queries.items())[: args.queries])
    qrels = {qid: qrels[qid] for qid in queries}
    corpus = load_corpus(args.data)
    if args.corpus_limit:
        judged = {doc for judgements in qrels.values() for doc in judgements}
        keep = [doc for doc in corpus if doc in judged]
        keep += [doc for doc in corpus if doc not in judged][: max(args.corpus_limit - len(keep), 0)]
        corpus = {doc: corpus[doc] for doc in sorted(keep, key=list(corpus).index)}
    ids = list(corpus)
    texts = [corpus[doc]["full"] for doc in ids]
    print(cpu_line())
    print(f"model {model_path}; max length {args.max_length}; {len(ids)} SciFact documents"
          f"{' (judged + first others)' if args.corpus_limit else ' (the whole corpus)'}; {len(queries)} test "
          f"queries; {args.candidates} dense + {args.candidates} sparse candidates\n", flush=True)

    start = time.perf_counter()
    out = m3.encode_corpus(texts, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    print(f"encoded in {time.perf_counter() - start:.0f}s", flush=True)
    indexes: dict[str, HybridIndex] = {}
    for kind in KINDS:
        index = HybridIndex(m3, colbert_storage=kind)
        index.dense.add(out["dense_vecs"], [{"text": text, "payload": {}} for text in texts])
        index.sparse.add(out["lexical_weights"])
        index.colbert.add(out["colbert_vecs"])
        indexes[kind] = index
    del out

    sizes: dict[str, tuple[float, float]] = {}
    for kind, index in indexes.items():
        path = work / f"{kind}.hybrid"
        index.save(path)
        with zipfile.ZipFile(path) as archive:
            colbert_bytes = sum(info.file_size for info in archive.infolist() if info.filename in COLBERT_PARTS)
        sizes[kind] = (colbert_bytes / len(index), path.stat().st_size / len(index))
        assert HybridIndex.load(path, m3).colbert_storage == kind
        path.unlink()
    rows = sum(len(indexes["float32"].colbert.document(i)) for i in range(len(ids))) / len(ids)

    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    runs: dict[str, dict[str, dict[str, dict[str, float]]]] = {kind: {"hybrid": {}, "colbert": {}} for kind in KINDS}
    for n, (qid, query) in enumerate(queries.items()):
        order = KINDS[n % len(KINDS):] + KINDS[: n % len(KINDS)]
        for kind in order:
            begin = time.perf_counter()
            hits = indexes[kind].search(query, k=10, mode="hybrid", candidates=args.candidates)
            times[kind].append((time.perf_counter() - begin) * 1000)
            runs[kind]["hybrid"][qid] = {ids[h.position]: h.score for h in hits}
            hits = indexes[kind].search(query, k=10, mode="colbert", candidates=args.candidates)
            runs[kind]["colbert"][qid] = {ids[h.position]: h.score for h in hits}

    scores: dict[str, dict[str, float]] = {
        kind: {mode: evaluate_run(qrels, run, k_values=[10])["ndcg@10"] for mode, run in by_mode.items()}
        for kind, by_mode in runs.items()}
    base = scores["float32"]
    print(f"\n{rows:.0f} ColBERT rows of {indexes['float32'].colbert.dim} dimensions per document on average\n")
    header = (f"{'storage':<8} {'ColBERT B/doc':>14} {'KiB/doc':>8} {'file KiB/doc':>12} {'hybrid ms/q':>11} "
              f"{'nDCG@10 hybrid':>14} {'vs float32':>10} {'nDCG@10 colbert':>15} {'vs float32':>10}")
    print(header)
    for kind in KINDS:
        colbert, whole = sizes[kind]
        print(f"{kind:<8} {colbert:14.0f} {colbert / 1024:8.1f} {whole / 1024:12.1f} "
              f"{statistics.median(times[kind]):11.1f} {scores[kind]['hybrid']:14.4f} "
              f"{relative(scores[kind]['hybrid'], base['hybrid']):>10} {scores[kind]['colbert']:15.4f} "
              f"{relative(scores[kind]['colbert'], base['colbert']):>10}")
    same = {kind: sum(list(runs[kind]["hybrid"][q]) == list(runs["float32"]["hybrid"][q]) for q in queries)
            for kind in KINDS}
    print("\nqueries whose hybrid top 10 equals float32's (same documents, same order): "
          + ", ".join(f"{kind} {count}/{len(queries)}" for kind, count in same.items()))


def relative(value: float, base: float) -> Any:
    """The relative change of ``value`` against ``base`` in percent, signed."""
    return f"{(value - base) / base * 100:+.2f}%" if base else "n/a"


if __name__ == "__main__":
    main()
