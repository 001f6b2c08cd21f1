"""Runs: query id -> {doc id: score}, made by dense retrieval (with the optional embedding cache), BM25,
reciprocal rank fusion, or a reranker over another run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..fileio import folder_fingerprint
from ..inference.embedder import FlagModel, Side
from ..inference.m3 import BGEM3FlagModel
from ..inference.reranker import FlagReranker
from ..retrieval.hybrid import DEFAULT_CANDIDATES, DEFAULT_WEIGHTS, HybridIndex
from ..retrieval.index import VectorIndex
from .cache import EmbeddingCache
from .metrics import Run, trec_order


def encode_cached(
    model: FlagModel, texts: list[str], side: Side, cache: EmbeddingCache | None, show_progress: bool
) -> np.ndarray:
    """``encode_queries`` (side "query") or ``encode_corpus`` (side "passage") of ``texts``; with a cache,
    read from it, or encoded chunk by chunk into it."""
    if cache is None:
        return np.asarray(model.encode_as(side, texts, output="numpy", show_progress_bar=show_progress))
    identity = {
        "side": side,
        "signature": model.signature(),
        "weights": folder_fingerprint(model.runtime.path),
        "precision": str(model.runtime.dtype),
    }
    return cache.get_or_compute(
        identity, texts, lambda batch: model.iter_encode(batch, side, show_progress_bar=show_progress)
    )


def dense_run(
    model: FlagModel,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    top_k: int,
    cache: EmbeddingCache | None = None,
    show_progress: bool = False,
) -> dict[str, dict[str, float]]:
    """The ``top_k`` documents per query by exact inner product."""
    doc_ids = list(corpus)
    query_ids = list(queries)
    index = VectorIndex()
    index.add(encode_cached(model, [corpus[d] for d in doc_ids], "passage", cache, show_progress),
              [{} for _ in doc_ids])
    query_vectors = encode_cached(model, [queries[q] for q in query_ids], "query", cache, show_progress)
    hits = index.search(query_vectors, top_k) if len(query_ids) else []
    return {qid: {doc_ids[i]: score for i, score in found} for qid, found in zip(query_ids, hits, strict=True)}


def m3_run(
    model: BGEM3FlagModel,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    top_k: int,
    mode: str = "hybrid",
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    candidates: int = DEFAULT_CANDIDATES,
) -> dict[str, dict[str, float]]:
    """The ``top_k`` documents per query by BGE-M3's outputs (``mode``: dense, sparse, colbert, sparse+dense or
    hybrid; see :class:`~flag_core.retrieval.HybridIndex`). ColBERT vectors are kept only for the modes that
    use them, as float32 (the model's own scores, as FlagEmbedding computes them)."""
    doc_ids = list(corpus)
    index = HybridIndex(model, multi_vectors=mode in ("colbert", "hybrid"), colbert_storage="float32")
    index.add([corpus[d] for d in doc_ids])
    return {
        qid: {doc_ids[hit.position]: hit.score
              for hit in index.search(text, top_k, mode, weights, max(candidates, top_k))}
        for qid, text in queries.items()
    }


def bm25_run(corpus: Mapping[str, str], queries: Mapping[str, str], top_k: int) -> dict[str, dict[str, float]]:
    """The ``top_k`` documents per query by BM25 (bm25s, English stopwords)."""
    try:
        import bm25s
    except ImportError as exc:
        raise ImportError("hybrid retrieval needs bm25s: pip install 'flagstack[eval]'") from exc
    doc_ids = list(corpus)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([corpus[d] for d in doc_ids], stopwords="en", show_progress=False),
                    show_progress=False)
    query_ids = list(queries)
    tokens = bm25s.tokenize([queries[q] for q in query_ids], stopwords="en", show_progress=False)
    results, scores = retriever.retrieve(tokens, k=min(top_k, len(doc_ids)), show_progress=False)
    return {
        qid: {doc_ids[int(i)]: float(s) for i, s in zip(results[row], scores[row], strict=True)}
        for row, qid in enumerate(query_ids)
    }


def reciprocal_rank_fusion(runs: Sequence[Run], top_k: int, k: int = 60) -> dict[str, dict[str, float]]:
    """Fuse rankings: each document scores sum(1 / (k + rank)) over the runs that hold it (rank from 1)."""
    fused: dict[str, dict[str, float]] = {}
    for run in runs:
        for qid, scores in run.items():
            target = fused.setdefault(qid, {})
            for rank, doc in enumerate(trec_order(scores), start=1):
                target[doc] = target.get(doc, 0.0) + 1.0 / (k + rank)
    return {qid: {d: scores[d] for d in trec_order(scores)[:top_k]} for qid, scores in fused.items()}


def rerank_run(
    reranker: FlagReranker | None,
    run: Run,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    top_k: int,
    show_progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Rescore each query's first ``top_k`` candidates with ``reranker`` (None keeps the run's scores)."""
    reranked: dict[str, dict[str, float]] = {}
    pairs: list[tuple[str, str]] = []
    owners: list[tuple[str, str]] = []
    for qid, scores in run.items():
        if qid not in queries:
            continue
        candidates = trec_order(scores)[:top_k]
        unknown = [d for d in candidates if d not in corpus]
        if unknown:
            raise ValueError(f"the run names documents not in the corpus (query {qid}: {unknown[:3]})")
        if reranker is None:
            reranked[qid] = {d: float(scores[d]) for d in candidates}
            continue
        for doc in candidates:
            pairs.append((queries[qid], corpus[doc]))
            owners.append((qid, doc))
    if reranker is not None and pairs:
        new_scores = reranker.compute_score(pairs, show_progress_bar=show_progress)
        for (qid, doc), score in zip(owners, new_scores, strict=True):
            reranked.setdefault(qid, {})[doc] = score
    return reranked
