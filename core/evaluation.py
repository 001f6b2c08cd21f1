"""Evaluation: retrieval and reranking on BEIR-format data, and STS, with trec_eval's metrics.

Ranking metrics come from trec_eval itself (through ``pytrec_eval``, the implementation BEIR, MTEB and
FlagEmbedding report with): nDCG@k, Recall@k and MAP@k are trec_eval's ``ndcg_cut``, ``recall`` and
``map_cut``; MRR@k is trec_eval's ``recip_rank`` on each ranking cut to its first k documents (trec_eval
order: score, then doc id, descending). Averages run over every judged query; a judged query the
system returned nothing for counts as 0. STS correlations come from scipy.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .beir import load_corpus, load_qrels, load_queries, load_trec_run
from .embedder import FlagModel
from .embedding_cache import EmbeddingCache, folder_fingerprint
from .index import VectorIndex
from .reranker import FlagReranker

logger = logging.getLogger(__name__)

K_VALUES = (1, 3, 5, 10, 100)
Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]


def _pytrec_eval() -> Any:
    try:
        import pytrec_eval
    except ImportError as exc:
        raise ImportError("evaluation needs pytrec_eval: pip install 'flagstack[eval]'") from exc
    return pytrec_eval


def trec_order(scores: Mapping[str, float]) -> list[str]:
    """Doc ids as trec_eval ranks them: by score, then by doc id, both descending."""
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def evaluate_run(qrels: Qrels, run: Run, k_values: Sequence[int] = K_VALUES) -> dict[str, float]:
    """nDCG@k, Recall@k, MAP@k and MRR@k of ``run`` against ``qrels``, averaged over the judged queries."""
    if not qrels:
        raise ValueError("qrels hold no judged query: nothing to evaluate")
    k_values = sorted({int(k) for k in k_values})
    if not k_values or k_values[0] <= 0:
        raise ValueError(f"k values must be positive ints, got {k_values}")
    pytrec_eval = _pytrec_eval()
    ks = ",".join(map(str, k_values))
    judged = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    answered = {q: {d: float(s) for d, s in run[q].items()} for q in judged if run.get(q)}
    missing = len(judged) - len(answered)
    if missing:
        logger.warning("%d of %d judged queries have no results in the run; they count as 0", missing, len(judged))
    totals: dict[str, float] = {}
    if answered:
        evaluator = pytrec_eval.RelevanceEvaluator(judged, {f"ndcg_cut.{ks}", f"recall.{ks}", f"map_cut.{ks}"})
        for scores in evaluator.evaluate(answered).values():
            for name, value in scores.items():
                totals[name] = totals.get(name, 0.0) + value
        reciprocal = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"})
        for k in k_values:
            cut = {q: {d: answered[q][d] for d in trec_order(answered[q])[:k]} for q in answered}
            totals[f"recip_rank_{k}"] = sum(s["recip_rank"] for s in reciprocal.evaluate(cut).values())
    metrics: dict[str, float] = {}
    for k in k_values:
        for ours, theirs in (("ndcg", "ndcg_cut"), ("recall", "recall"), ("map", "map_cut"), ("mrr", "recip_rank")):
            metrics[f"{ours}@{k}"] = totals.get(f"{theirs}_{k}", 0.0) / len(judged)
    return metrics


@dataclass
class EvalResult:
    """What an evaluation measured, on what, with what, and when (the ``--output`` JSON)."""

    task: str
    metrics: dict[str, float]
    model: str | None = None
    reranker: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    finished: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a data file (recorded with results so figures can be traced to their inputs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("flagstack", "torch", "transformers", "pytrec-eval-terrier", "bm25s"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _finish(result: EvalResult, started: float) -> EvalResult:
    result.seconds = round(time.perf_counter() - started, 3)
    result.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result.versions = _versions()
    return result


# encoding, with the optional cache ---------------------------------------------------------------


def encode_cached(
    model: FlagModel, texts: list[str], side: str, cache: EmbeddingCache | None, show_progress: bool
) -> np.ndarray:
    """``encode_queries`` (side "query") or ``encode_corpus`` (side "passage") of ``texts``, cached."""
    encode = model.encode_queries if side == "query" else model.encode_corpus

    def compute(batch: list[str]) -> np.ndarray:
        return np.asarray(encode(batch, show_progress_bar=show_progress), dtype=np.float32)

    if cache is None:
        return compute(texts)
    identity = {
        "side": side,
        "signature": model.signature(),
        "weights": folder_fingerprint(model.runtime.settings.path),
        "precision": str(model.runtime.dtype),
    }
    return cache.get_or_compute(identity, texts, compute)


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


# the three evaluations ---------------------------------------------------------------------------


def _beir(
    folder: str | os.PathLike[str], split: str
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    qrels = load_qrels(folder, split)
    queries = {q: t for q, t in load_queries(folder).items() if q in qrels}
    lost = sorted(set(qrels) - set(queries))
    if lost:
        raise ValueError(f"{len(lost)} judged queries are missing from queries.jsonl (e.g. {lost[:3]})")
    corpus = {doc_id: doc["full"] for doc_id, doc in load_corpus(folder).items()}
    return corpus, queries, qrels


def _data_digests(folder: Path, split: str, extra: Sequence[Path] = ()) -> dict[str, str]:
    files = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv", *extra]
    return {str(f): file_digest(f) for f in files}


def evaluate_retrieval(
    model: FlagModel,
    data: str | os.PathLike[str],
    split: str = "test",
    k_values: Sequence[int] = K_VALUES,
    top_k: int = 100,
    reranker: FlagReranker | None = None,
    rerank_top_k: int = 100,
    hybrid: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> EvalResult:
    """Dense retrieval (optionally fused with BM25, optionally reranked) on a BEIR folder."""
    started = time.perf_counter()
    folder = Path(data)
    corpus, queries, qrels = _beir(folder, split)
    depth = max(top_k, max(k_values), rerank_top_k if reranker else 0)
    cache = EmbeddingCache(cache_dir) if cache_dir else None
    run = dense_run(model, corpus, queries, depth, cache, show_progress)
    if hybrid:
        run = reciprocal_rank_fusion([run, bm25_run(corpus, queries, depth)], depth)
    if reranker is not None:
        run = rerank_run(reranker, run, corpus, queries, rerank_top_k, show_progress)
    settings: dict[str, Any] = {**model.signature(), "split": split, "top_k": depth, "hybrid": hybrid}
    if reranker is not None:
        settings.update(rerank_top_k=rerank_top_k, reranker_max_length=reranker.max_length)
    result = EvalResult(
        task="retrieval", metrics=evaluate_run(qrels, run, k_values), model=model.model_name_or_path,
        reranker=reranker.model_name_or_path if reranker else None, settings=settings,
        data=_data_digests(folder, split), counts={"queries": len(qrels), "documents": len(corpus)},
    )
    if cache is not None:
        result.counts.update(cache_hits=cache.hits, cache_misses=cache.misses)
    return _finish(result, started)


def evaluate_rerank(
    reranker: FlagReranker | None,
    data: str | os.PathLike[str],
    run_file: str | os.PathLike[str],
    split: str = "test",
    k_values: Sequence[int] = K_VALUES,
    top_k: int = 100,
    show_progress: bool = False,
) -> EvalResult:
    """Rescore a TREC run's candidates with ``reranker`` (None: keep the run's own scores) and evaluate."""
    started = time.perf_counter()
    folder = Path(data)
    corpus, queries, qrels = _beir(folder, split)
    run = load_trec_run(run_file)
    if not run:
        raise ValueError(f"{run_file} holds no results")
    reranked = rerank_run(reranker, run, corpus, queries, top_k, show_progress)
    result = EvalResult(
        task="rerank", metrics=evaluate_run(qrels, reranked, k_values),
        reranker=reranker.model_name_or_path if reranker else "identity",
        settings={"split": split, "top_k": top_k, "max_length": reranker.max_length if reranker else None},
        data=_data_digests(folder, split, [Path(run_file)]),
        counts={"queries": len(qrels), "run_queries": len(run), "pairs": sum(len(v) for v in reranked.values())},
    )
    return _finish(result, started)


def load_sts_pairs(path: str | os.PathLike[str]) -> tuple[list[str], list[str], list[float]]:
    """(sentences 1, sentences 2, gold scores) from a csv or tsv file: sentence1, sentence2, score per line
    (a header line is allowed)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no STS file at {file}")
    delimiter = "\t" if file.suffix.lower() in {".tsv", ".tab"} else ","
    first, second, gold = [], [], []
    with file.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL), start=1):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != 3:
                raise ValueError(f"{file}, line {number}: expected 3 columns (sentence1, sentence2, score), "
                                 f"got {len(row)}")
            try:
                score = float(row[2])
            except ValueError:
                if number == 1:
                    continue  # a header
                raise ValueError(f"{file}, line {number}: score {row[2]!r} is not a number") from None
            first.append(row[0])
            second.append(row[1])
            gold.append(score)
    if len(gold) < 2:
        raise ValueError(f"{file} holds {len(gold)} scored pairs; a correlation needs at least 2")
    return first, second, gold


def evaluate_sts(model: FlagModel, pairs: str | os.PathLike[str], show_progress: bool = False) -> EvalResult:
    """Spearman and Pearson correlation of cosine similarity with the gold scores."""
    from scipy.stats import pearsonr, spearmanr

    started = time.perf_counter()
    first, second, gold = load_sts_pairs(pairs)
    a = np.asarray(model.encode(first, show_progress_bar=show_progress), dtype=np.float64)
    b = np.asarray(model.encode(second, show_progress_bar=show_progress), dtype=np.float64)
    cosine = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    result = EvalResult(
        task="sts",
        metrics={"spearman": float(spearmanr(cosine, gold).statistic), "pearson": float(pearsonr(cosine, gold)[0])},
        model=model.model_name_or_path, settings=model.signature(), data={str(pairs): file_digest(pairs)},
        counts={"pairs": len(gold)},
    )
    return _finish(result, started)
