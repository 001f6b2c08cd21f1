"""RAG with LlamaIndex and flagstack, end to end and offline, on a real corpus (BEIR SciFact).

    python examples/llamaindex_rag.py [--limit 1000] [--queries 5] [--model PATH] [--reranker PATH]

Indexes SciFact abstracts in a ``VectorStoreIndex`` with ``FlagEmbedding``, answers a few test claims with a
query engine whose ``FlagReranker`` postprocessor reorders the retrieved nodes, and prints the sources
before and after reranking (``*`` marks documents SciFact judges relevant). The LLM is LlamaIndex's
``MockLLM`` so it runs offline; set ``Settings.llm`` to a real one for real answers. Without --model it
uses the bundled all-MiniLM-L6-v2; without --reranker a cross-encoder built from it with an untrained head
(plumbing, not quality: pass a real BGE reranker folder to see reranking help).
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
    parser.add_argument("-k", type=int, default=20, help="nodes retrieved per query")
    parser.add_argument("--top-n", type=int, default=3, help="nodes kept after reranking")
    args = parser.parse_args()
    logging.getLogger("flag_core").setLevel(logging.ERROR)  # truncation notices would clutter the output

    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.llms import MockLLM

    from flag_core.evaluation.beir import sample
    from flag_core.testing import build_test_reranker, bundled_model_path
    from llamaindex_flag import FlagEmbedding, FlagReranker

    if not (args.data / "corpus.jsonl").is_file():
        raise SystemExit(f"no BEIR corpus at {args.data}: pass --data FOLDER")
    corpus, queries = sample(args.data, args.queries, args.limit)
    Settings.llm = MockLLM(max_tokens=16)
    Settings.embed_model = FlagEmbedding(model_name=args.model or bundled_model_path(), passage_max_length=256)
    workdir = Path(tempfile.mkdtemp(prefix="flagstack-llamaindex-"))
    reranker = FlagReranker(
        model=args.reranker or build_test_reranker(workdir / "reranker"), top_n=args.top_n, max_length=256
    )

    start = time.perf_counter()
    documents = [
        Document(text=doc["full"], metadata={"doc_id": doc_id, "title": doc["title"]},
                 excluded_embed_metadata_keys=["doc_id", "title"])
        for doc_id, doc in corpus.items()
    ]
    index = VectorStoreIndex.from_documents(documents)
    print(f"indexed {len(documents)} SciFact documents in {time.perf_counter() - start:.1f}s\n")
    retriever = index.as_retriever(similarity_top_k=args.top_n)
    engine = index.as_query_engine(similarity_top_k=args.k, node_postprocessors=[reranker])

    for _, text, relevant in queries:
        start = time.perf_counter()
        response = engine.query(text)
        elapsed = time.perf_counter() - start
        print(f"Q: {text}   ({elapsed * 1000:.0f} ms, top-{args.k} then rerank)")
        for label, nodes in (("dense", retriever.retrieve(text)), ("rerank", response.source_nodes)):
            for node in nodes:
                mark = "*" if node.node.metadata["doc_id"] in relevant else " "
                print(f"  {label:<6} {mark} {node.score:8.4f}  {node.node.metadata['title'][:90]}")
        print()
    print("* = judged relevant by SciFact's test qrels")


if __name__ == "__main__":
    main()
