"""Retrieval for RAG with LangChain and flagstack, end to end and offline, on a real corpus (BEIR SciFact).

    python examples/langchain_rag.py [--limit 1000] [--queries 5] [--model PATH] [--reranker PATH]

Builds a two-stage retriever (dense top-k with FlagEmbeddings, then FlagReranker), saves and reloads its
index, and shows for a few test queries what each stage returns, marking documents that SciFact's
judgements call relevant. Without --model it uses the bundled all-MiniLM-L6-v2; without --reranker it
uses a cross-encoder built from that model with an untrained head (it shows the plumbing, not quality:
pass a real reranker such as a local BAAI/bge-reranker-v2-m3 folder to see reranking help).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SCIFACT, help="a BEIR folder (corpus, queries, qrels)")
    parser.add_argument("--limit", type=int, default=1000, help="documents to index")
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--model", default=None)
    parser.add_argument("--reranker", default=None)
    parser.add_argument("-k", type=int, default=20, help="dense candidates per query")
    parser.add_argument("--top-n", type=int, default=3, help="documents kept after reranking")
    args = parser.parse_args()
    logging.getLogger("flag_core").setLevel(logging.ERROR)  # truncation notices would clutter the output

    from flag_core.evaluation.beir import sample
    from flag_core.testing import build_test_reranker, bundled_model_path
    from langchain_flag import FlagEmbeddings, FlagReranker, FlagRetriever

    if not (args.data / "corpus.jsonl").is_file():
        raise SystemExit(f"no BEIR corpus at {args.data}: pass --data FOLDER")
    corpus, queries = sample(args.data, args.queries, args.limit)
    workdir = Path(tempfile.mkdtemp(prefix="flagstack-langchain-"))
    embeddings = FlagEmbeddings(model_name=args.model or bundled_model_path(), passage_max_length=256)
    reranker = FlagReranker(
        model_name=args.reranker or build_test_reranker(workdir / "reranker"), top_n=args.top_n, max_length=256
    )

    start = time.perf_counter()
    retriever = FlagRetriever.from_texts(
        [d["full"] for d in corpus.values()], embeddings,
        metadatas=[{"doc_id": doc_id, "title": d["title"]} for doc_id, d in corpus.items()],
        k=args.k, reranker=reranker, top_n=args.top_n,
    )
    print(f"indexed {len(retriever)} SciFact documents in {time.perf_counter() - start:.1f}s")
    retriever.save(workdir / "scifact.flagindex")
    retriever = FlagRetriever.load(workdir / "scifact.flagindex", embeddings, k=args.k, reranker=reranker,
                                   top_n=args.top_n)
    print(f"saved and reloaded the index ({(workdir / 'scifact.flagindex').stat().st_size / 1e6:.1f} MB)\n")

    dense = retriever.model_copy(update={"reranker": None})  # same index, first stage only
    for _, text, relevant in queries:
        start = time.perf_counter()
        reranked = retriever.invoke(text)
        elapsed = time.perf_counter() - start
        print(f"Q: {text}   ({elapsed * 1000:.0f} ms, dense top-{args.k} then rerank)")
        for label, hits in (("dense", dense.invoke(text, k=args.top_n)), ("rerank", reranked)):
            for doc in hits:
                mark = "*" if doc.metadata["doc_id"] in relevant else " "
                score = doc.metadata.get("relevance_score", doc.metadata["retrieval_score"])
                print(f"  {label:<6} {mark} {score:8.4f}  {doc.metadata['title'][:90]}")
        print()
    print("* = judged relevant by SciFact's test qrels")


if __name__ == "__main__":
    main()
