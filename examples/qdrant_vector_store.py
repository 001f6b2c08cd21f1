"""flagstack embeddings and rerankers over a real vector database (Qdrant), from LangChain and LlamaIndex.

    pip install -e ".[vectorstores]"
    python examples/qdrant_vector_store.py [--limit 1000] [--queries 3] [--model PATH] [--url URL]

When the in-memory index (``FlagRetriever.from_texts``) is outgrown, keep the vectors in a vector database
and keep flagstack for what it does: the embedding model (with its query instruction, pooling and
normalisation) and the reranker. This script indexes a slice of BEIR SciFact into Qdrant twice, once through
``langchain_qdrant.QdrantVectorStore`` with ``langchain_flag.FlagEmbeddings`` and once through
``llama_index.vector_stores.qdrant.QdrantVectorStore`` with ``llamaindex_flag.FlagEmbedding``, reopens the
stored collections, and checks what carries over:

- the stored passage vectors are flagstack's ``encode_corpus`` vectors (no instruction on passages);
- queries go through ``embed_query`` / ``get_query_embedding``, so the model's query instruction is applied
  at search time by the framework class, not stored anywhere;
- the top hits equal flagstack's exact in-memory search over the same vectors.

Without --url it runs Qdrant's embedded local mode in a temporary folder (no server); with --url (e.g.
http://localhost:6333) the same code talks to a Qdrant server. The same pattern works for any LangChain
``VectorStore`` (Chroma, PGVector, Elasticsearch, ...) and any LlamaIndex vector store.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import tempfile
import time
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
    parser.add_argument("--limit", type=int, default=1000, help="documents to index")
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--model", default=None, help="embedding model folder or hub id (default: bundled)")
    parser.add_argument("--url", default=None, help="a Qdrant server (default: embedded local mode)")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("flag_core").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")

    from langchain_qdrant import QdrantVectorStore as LangChainQdrant
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode
    from llama_index.vector_stores.qdrant import QdrantVectorStore as LlamaIndexQdrant
    from qdrant_client import QdrantClient
    from qdrant_client.models import Distance, VectorParams

    from flag_core.evaluation.beir import sample
    from flag_core.testing import bundled_model_path
    from langchain_flag import FlagEmbeddings, FlagRetriever
    from llamaindex_flag import FlagEmbedding

    if not (args.data / "corpus.jsonl").is_file():
        raise SystemExit(f"no BEIR corpus at {args.data}: pass --data FOLDER")
    corpus, queries = sample(args.data, args.queries, args.limit)
    ids, texts = list(corpus), [d["full"] for d in corpus.values()]
    model = str(args.model or bundled_model_path())
    workdir = Path(tempfile.mkdtemp(prefix="flagstack-qdrant-"))
    atexit.register(shutil.rmtree, workdir, True)  # the embedded Qdrant's files go when the script ends

    def client() -> QdrantClient:
        return QdrantClient(url=args.url) if args.url else QdrantClient(path=str(workdir / "qdrant"))

    def stored_vectors(qdrant: QdrantClient, collection: str, key: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
        """doc_id -> the vector Qdrant holds for it."""
        points, _ = qdrant.scroll(collection, limit=len(texts) + 1, with_payload=True, with_vectors=True)
        vectors = {}
        for point in points:
            vector = point.vector
            if isinstance(vector, dict):  # a named vector
                (vector,) = vector.values()
            vectors[key(point.payload or {})] = np.asarray(vector, dtype=np.float32)
        return vectors

    embeddings = FlagEmbeddings(model_name=model, passage_max_length=256)
    li_embeddings = FlagEmbedding(model_name=model, passage_max_length=256)
    # the reference: flagstack's own passage vectors and an exact search over them
    reference = np.asarray(embeddings.embed_documents(texts), dtype=np.float32)
    dim = reference.shape[1]

    def exact_top_k(query: str) -> list[str]:
        scores = reference @ np.asarray(embeddings.embed_query(query), dtype=np.float32)
        return [ids[i] for i in np.argsort(-scores, kind="stable")[: args.k]]

    def check_vectors(vectors: dict[str, Any]) -> float:
        if sorted(vectors) != sorted(ids):
            raise SystemExit("the store lost or duplicated documents")
        return max(float(np.abs(vectors[doc_id] - reference[i]).max()) for i, doc_id in enumerate(ids))

    print(f"Qdrant at {args.url or workdir / 'qdrant'}; {len(texts)} SciFact documents, dim {dim}\n")

    # --- LangChain: langchain_qdrant.QdrantVectorStore with FlagEmbeddings --------------------------------
    qdrant = client()
    if qdrant.collection_exists("scifact_langchain"):
        qdrant.delete_collection("scifact_langchain")
    qdrant.create_collection("scifact_langchain", vectors_config=VectorParams(size=dim, distance=Distance.COSINE))
    store = LangChainQdrant(client=qdrant, collection_name="scifact_langchain", embedding=embeddings)
    start = time.perf_counter()
    store.add_texts(texts, metadatas=[{"doc_id": doc_id, "title": corpus[doc_id]["title"]} for doc_id in ids],
                    batch_size=256)
    print(f"LangChain: added {len(texts)} documents in {time.perf_counter() - start:.1f}s")
    qdrant.close()

    qdrant = client()  # a new connection: the collection outlives the process that wrote it
    store = LangChainQdrant(client=qdrant, collection_name="scifact_langchain", embedding=embeddings)
    diff = check_vectors(stored_vectors(qdrant, "scifact_langchain", lambda p: p["metadata"]["doc_id"]))
    print(f"LangChain: reopened; stored vectors == flagstack encode_corpus (max |diff| {diff:.1e})")
    retriever = FlagRetriever(embeddings=embeddings, vectorstore=store, k=args.k)
    agree = 0
    for _, query, relevant in queries:
        hits = retriever.invoke(query)
        found = [doc.metadata["doc_id"] for doc in hits]
        agree += found == exact_top_k(query)
        print(f"  Q: {query}")
        for doc in hits[:3]:
            mark = "*" if doc.metadata["doc_id"] in relevant else " "
            print(f"    {mark} {doc.metadata['retrieval_score']:.4f}  {doc.metadata['title'][:90]}")
    print(f"LangChain: top-{args.k} equal to flagstack's exact search for {agree}/{len(queries)} queries\n")
    qdrant.close()

    # --- LlamaIndex: llama_index.vector_stores.qdrant.QdrantVectorStore with FlagEmbedding ----------------
    qdrant = client()
    if qdrant.collection_exists("scifact_llamaindex"):
        qdrant.delete_collection("scifact_llamaindex")
    nodes = [
        # "scifact_id", not "doc_id": LlamaIndex's vector stores reserve doc_id for the source document's id
        TextNode(text=text, metadata={"scifact_id": doc_id, "title": corpus[doc_id]["title"]},
                 excluded_embed_metadata_keys=["scifact_id", "title"])  # embed the text alone, as encode_corpus does
        for doc_id, text in zip(ids, texts, strict=True)
    ]
    start = time.perf_counter()
    storage = StorageContext.from_defaults(
        vector_store=LlamaIndexQdrant(client=qdrant, collection_name="scifact_llamaindex", batch_size=256)
    )
    VectorStoreIndex(nodes, storage_context=storage, embed_model=li_embeddings)
    print(f"LlamaIndex: added {len(nodes)} nodes in {time.perf_counter() - start:.1f}s")
    qdrant.close()

    qdrant = client()
    index = VectorStoreIndex.from_vector_store(
        LlamaIndexQdrant(client=qdrant, collection_name="scifact_llamaindex"), embed_model=li_embeddings
    )
    diff = check_vectors(stored_vectors(qdrant, "scifact_llamaindex", lambda p: p["scifact_id"]))
    print(f"LlamaIndex: reopened; stored vectors == flagstack encode_corpus (max |diff| {diff:.1e})")
    agree = 0
    for _, query, relevant in queries:
        hits = index.as_retriever(similarity_top_k=args.k).retrieve(query)
        found = [hit.node.metadata["scifact_id"] for hit in hits]
        agree += found == exact_top_k(query)
        print(f"  Q: {query}")
        for hit in hits[:3]:
            mark = "*" if hit.node.metadata["scifact_id"] in relevant else " "
            print(f"    {mark} {hit.score:.4f}  {hit.node.metadata['title'][:90]}")
    print(f"LlamaIndex: top-{args.k} equal to flagstack's exact search for {agree}/{len(queries)} queries")
    qdrant.close()
    print("\n* = judged relevant by SciFact's test qrels")


if __name__ == "__main__":
    main()
