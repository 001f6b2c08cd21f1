"""BGE-M3's three outputs in one Qdrant collection, written through LangChain and LlamaIndex, searched by Qdrant.

    pip install -e ".[vectorstores]"
    python examples/qdrant_m3_hybrid.py [--model BGE-M3 FOLDER] [--limit 300] [--queries 5] [-k 5] [--url URL]

Each framework writes a collection with a dense vector ("dense"), a sparse vector ("sparse", BGE-M3's lexical
weights) and ColBERT multi-vectors ("colbert", MaxSim) per document, all through flagstack's adapters:
LangChain's ``langchain_flag.qdrant.FlagQdrantM3Store`` and LlamaIndex's
``llamaindex_flag.qdrant.FlagQdrantM3VectorStore``, each with one ``FlagM3Embeddings`` / ``FlagM3Embedding``
(the sparse and ColBERT sides share its model: one encoding of each text). Then Qdrant answers each query by
prefetching the dense and the sparse candidates and ranking them by MaxSim, server-side, and the script checks:

- the stored dense, sparse and ColBERT vectors equal flagstack's ``BGEM3FlagModel`` outputs (read back with
  ``qdrant_client``);
- Qdrant's top hits equal flagstack's own ``HybridIndex.search(mode="colbert")`` over the same documents (the
  dense and sparse candidates, reranked by ColBERT).

Without --model it builds the golden-recipe M3 checkpoint from the bundled MiniLM (deterministic heads: it shows
the plumbing, not BGE-M3's quality); pass a local BAAI/bge-m3 folder for the real thing. Without --url it runs
Qdrant's embedded local mode in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SCIFACT, help="a BEIR folder (corpus, queries, qrels)")
    parser.add_argument("--model", default=None, help="a BGE-M3 folder (default: the golden-recipe checkpoint)")
    parser.add_argument("--limit", type=int, default=300, help="documents to index")
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=20, help="dense and sparse candidates per query")
    parser.add_argument("--url", default=None, help="a Qdrant server (default: embedded local mode)")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("flag_core").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")

    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode
    from qdrant_client import QdrantClient

    from flag_core import build_m3
    from flag_core.evaluation.beir import sample
    from flag_core.retrieval import HybridIndex
    from flag_core.testing import build_test_m3
    from langchain_flag import FlagM3Embeddings
    from langchain_flag.qdrant import FlagQdrantM3Store
    from llamaindex_flag import FlagM3Embedding
    from llamaindex_flag.qdrant import FlagQdrantM3VectorStore

    if not (args.data / "corpus.jsonl").is_file():
        raise SystemExit(f"no BEIR corpus at {args.data}: pass --data FOLDER")
    workdir = Path(tempfile.mkdtemp(prefix="flagstack-qdrant-m3-"))
    atexit.register(shutil.rmtree, workdir, True)
    model = args.model or build_test_m3(workdir / "bge-m3-golden")  # "bge-m3" in the name: the registry's M3
    corpus, queries = sample(args.data, args.queries, args.limit)
    ids, texts = list(corpus), [d["full"] for d in corpus.values()]
    settings = {"query_max_length": 512, "passage_max_length": 512}

    m3 = build_m3(model, **settings)
    out = m3.encode_corpus(texts, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    reference = HybridIndex(m3, colbert_storage="float32")  # as Qdrant stores them
    reference.add(texts, [{"doc_id": d} for d in ids])
    dim, colbert_dim = out["dense_vecs"].shape[1], out["colbert_vecs"][0].shape[1]
    point = {doc_id: str(uuid.uuid5(uuid.NAMESPACE_URL, doc_id)) for doc_id in ids}
    qdrant = QdrantClient(url=args.url) if args.url else QdrantClient(path=str(workdir / "qdrant"))
    print(f"Qdrant at {args.url or workdir / 'qdrant'}; {len(texts)} SciFact documents; dense {dim}, ColBERT "
          f"{colbert_dim} per token, sparse over the vocabulary\n")
    for name in ("m3_langchain", "m3_llamaindex"):
        if qdrant.collection_exists(name):
            qdrant.delete_collection(name)

    def check_stored(name: str) -> str:
        stored = {p.id: p.vector for p in qdrant.retrieve(name, list(point.values()), with_vectors=True)}
        dense = sparse = colbert = 0.0
        for i, doc_id in enumerate(ids):
            vector: Any = stored[point[doc_id]]
            dense = max(dense, float(np.abs(np.asarray(vector["dense"]) - out["dense_vecs"][i]).max()))
            weights = dict(zip(vector["sparse"].indices, vector["sparse"].values, strict=True))
            expected = {int(t): w for t, w in out["lexical_weights"][i].items()}
            if weights.keys() != expected.keys():
                raise SystemExit(f"{name}: the sparse vector of {doc_id} has other token ids than flagstack's")
            sparse = max([sparse, *(abs(weights[t] - w) for t, w in expected.items())])
            colbert = max(colbert, float(np.abs(np.asarray(vector["colbert"]) - out["colbert_vecs"][i]).max()))
        return f"dense {dense:.1e}, sparse {sparse:.1e}, ColBERT {colbert:.1e}"

    def report(search: Callable[[str], list[str]]) -> int:
        agree = 0
        for _, query, relevant in queries:
            found = search(query)
            expected = [hit.payload["doc_id"] for hit in reference.search(query, args.k, mode="colbert",
                                                                          candidates=args.candidates)]
            agree += found == expected
            print(f"  Q: {query}")
            for doc_id in found[:3]:
                print(f"    {'*' if doc_id in relevant else ' '} {corpus[doc_id]['title'][:90]}")
        return agree

    # --- LangChain -----------------------------------------------------------------------------------------
    store = FlagQdrantM3Store(qdrant, "m3_langchain", FlagM3Embeddings(model_name=model, **settings),
                              candidates=args.candidates)
    store.add_texts(texts, metadatas=[{"doc_id": d} for d in ids], ids=[point[d] for d in ids])
    print(f"LangChain: stored vectors == flagstack's BGEM3FlagModel outputs "
          f"(max |diff| {check_stored('m3_langchain')})")
    agree = report(lambda query: [doc.metadata["doc_id"] for doc in store.similarity_search(query, k=args.k)])
    print(f"LangChain: Qdrant's dense+sparse prefetch, MaxSim rerank == flagstack's HybridIndex for "
          f"{agree}/{len(queries)} queries\n")

    # --- LlamaIndex ----------------------------------------------------------------------------------------
    dense = FlagM3Embedding(model_name=model, **settings)
    vector_store = FlagQdrantM3VectorStore("m3_llamaindex", dense, client=qdrant, candidates=args.candidates)
    nodes = [TextNode(text=text, id_=point[doc_id], metadata={"scifact_id": doc_id},
                      excluded_embed_metadata_keys=["scifact_id"]) for doc_id, text in zip(ids, texts, strict=True)]
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=vector_store),
                             embed_model=dense)
    print(f"LlamaIndex: stored vectors == flagstack's BGEM3FlagModel outputs "
          f"(max |diff| {check_stored('m3_llamaindex')})")
    retriever = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=args.k)
    agree = report(lambda query: [hit.node.metadata["scifact_id"] for hit in retriever.retrieve(query)])
    print(f"LlamaIndex: Qdrant's dense+sparse prefetch, MaxSim rerank == flagstack's HybridIndex for "
          f"{agree}/{len(queries)} queries")
    qdrant.close()


if __name__ == "__main__":
    main()
