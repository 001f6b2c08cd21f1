"""BGE-M3 hybrid ingestion into Qdrant: two models and two passes against one model and one pass (SciFact, CPU).

    python benchmarks/m3_ingest.py [--model BGE-M3 FOLDER] [--limit 300] [--rounds 2] [--max-length 512]

The first --limit SciFact abstracts go into a hybrid (dense + sparse) Qdrant collection (local mode, in memory), in
alternating rounds, through:

- LangChain ``QdrantVectorStore(retrieval_mode=HYBRID)`` with ``FlagEmbeddings`` + ``FlagSparseEmbeddings`` (what
  the issue measured: the model loaded twice, every document encoded twice), and with ``FlagM3Embeddings`` + its
  ``.sparse()`` (one model, one encoding of each document);
- LlamaIndex ``VectorStoreIndex`` over ``QdrantVectorStore(enable_hybrid=True)`` with ``FlagEmbedding`` +
  ``FlagSparseEmbedding`` and with ``FlagM3Embedding`` + its ``.sparse()``;
- ``FlagHybridRetriever.from_texts`` (LangChain; flagstack's own index, dense + sparse + ColBERT in one pass): the
  reference the one-pass stores should come within 10% of.

Models are loaded before the clock starts. Prints docs/s (medians), each against FlagHybridRetriever, and the texts
each way sent to an encoder (forward-pass rows). Without --model it builds the golden-recipe M3 checkpoint from the
bundled MiniLM.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, alternate, cpu_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def texts_of(folder: Path, limit: int) -> list[str]:
    from flag_core.evaluation.beir import load_corpus

    if not (folder / "corpus.jsonl").exists():
        print(f"({folder} absent: made-up passages)")
        return [f"passage {i}: " + "giant pandas eat bamboo in the mountains of Sichuan. " * (5 + i % 20)
                for i in range(limit)]
    return [doc["full"] for doc in load_corpus(folder, limit=limit).values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a BGE-M3 folder (default: the golden-recipe checkpoint)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "scifact")
    parser.add_argument("--limit", type=int, default=300, help="abstracts to ingest")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=512, help="passage tokens")
    args = parser.parse_args()
    logging.getLogger("flag_core").setLevel(logging.ERROR)  # the truncation warnings

    from langchain_qdrant import QdrantVectorStore, RetrievalMode
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode
    from llama_index.vector_stores.qdrant import QdrantVectorStore as LlamaQdrant
    from qdrant_client import QdrantClient

    import langchain_flag
    import llamaindex_flag
    from flag_core.testing import build_test_m3

    model = args.model or build_test_m3(Path(tempfile.mkdtemp()) / "m3")
    texts = texts_of(args.data, args.limit)
    settings: dict[str, Any] = {"model_name": model, "devices": "cpu", "passage_max_length": args.max_length}
    lc_dense, lc_sparse = langchain_flag.FlagEmbeddings(**settings), langchain_flag.FlagSparseEmbeddings(**settings)
    lc_m3 = langchain_flag.FlagM3Embeddings(**settings)
    lc_m3_sparse = lc_m3.sparse()
    li_dense, li_sparse = llamaindex_flag.FlagEmbedding(**settings), llamaindex_flag.FlagSparseEmbedding(**settings)
    li_m3 = llamaindex_flag.FlagM3Embedding(**settings)
    li_m3_sparse = li_m3.sparse()
    hybrid_settings = {key: value for key, value in settings.items() if key != "passage_max_length"}
    langchain_flag.FlagHybridRetriever.from_texts(texts[:2], **hybrid_settings, passage_max_length=args.max_length)

    def langchain(dense: Any, sparse: Any) -> float:
        QdrantVectorStore.from_texts(texts, embedding=dense, sparse_embedding=sparse, location=":memory:",
                                     retrieval_mode=RetrievalMode.HYBRID, collection_name="ingest")
        return 0.0

    def llamaindex(dense: Any, sparse: Any) -> float:
        store = LlamaQdrant(client=QdrantClient(location=":memory:"), collection_name=f"c{uuid.uuid4().hex}",
                            enable_hybrid=True, sparse_doc_fn=sparse.qdrant_documents,
                            sparse_query_fn=sparse.qdrant_queries)
        nodes = [TextNode(text=text) for text in texts]
        VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=dense)
        return 0.0

    def retriever() -> float:
        langchain_flag.FlagHybridRetriever.from_texts(texts, **hybrid_settings, passage_max_length=args.max_length)
        return 0.0

    systems = {
        "FlagHybridRetriever (3 outputs)": retriever,
        "LangChain Qdrant, two models": lambda: langchain(lc_dense, lc_sparse),
        "LangChain Qdrant, one pass": lambda: langchain(lc_m3, lc_m3_sparse),
        "LlamaIndex Qdrant, two models": lambda: llamaindex(li_dense, li_sparse),
        "LlamaIndex Qdrant, one pass": lambda: llamaindex(li_m3, li_m3_sparse),
    }
    counted: dict[str, list[int]] = {name: [] for name in systems}

    def counting(name: str, run: Any) -> Any:
        def call() -> float:
            lc_m3.one_pass.clear()  # every M3 adapter here holds the same model (equal settings): nothing kept
            rows_before = len(rows)
            run()
            counted[name].append(sum(rows[rows_before:]))
            return 0.0
        return call

    rows: list[int] = []  # texts through an encoder: every distinct torch module once
    modules = {id(m.runtime.loaded.model): m.runtime.loaded.model for m in (lc_dense.client, li_dense.client,
                                                                             lc_m3.client, li_m3.client)}
    for module in modules.values():
        module.register_forward_hook(
            lambda module, a, kw, out: rows.append(int(kw["input_ids"].shape[0])), with_kwargs=True)
    print(cpu_line())
    print(f"model: {model}; {len(texts)} SciFact abstracts, passages capped at {args.max_length} tokens")
    rates, _ = alternate({name: counting(name, run) for name, run in systems.items()}, args.rounds, len(texts),
                         "docs/s")
    reference = rates["FlagHybridRetriever (3 outputs)"]
    print(f"\n{'ingestion':<34} {'docs/s':>8} {'time / FlagHybridRetriever':>27} {'texts to an encoder':>20}")
    for name, rate in rates.items():
        sent = str(counted[name][-1])
        print(f"{name:<34} {rate:8.1f} {reference / rate:26.2f}x {sent:>20}")


if __name__ == "__main__":
    main()
