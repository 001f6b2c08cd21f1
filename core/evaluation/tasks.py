"""The evaluations: retrieval and reranking on BEIR-format data, and STS, each returning an
:class:`EvalResult` (metrics, settings, data checksums, versions, time) for tables, JSON and plots.

Ranking metrics are trec_eval's (:mod:`.metrics`); STS correlations come from scipy.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import ArtefactError, read_checked_json, text_lines, write_checked_json
from ..inference.embedder import FlagModel
from ..inference.m3 import BGEM3FlagModel
from ..inference.reranker import FlagReranker
from ..retrieval.hybrid import DEFAULT_WEIGHTS, MODES
from .beir import load_corpus, load_qrels, load_queries, load_trec_run
from .cache import EmbeddingCache
from .metrics import K_VALUES, evaluate_run
from .runs import bm25_run, dense_run, m3_run, reciprocal_rank_fusion, rerank_run

logger = logging.getLogger(__name__)


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

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the result as JSON with a checksum of its content, atomically (:meth:`load` verifies it)."""
        write_checked_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvalResult:
        """A result written by :meth:`save`; a damaged, edited or foreign file is an ArtefactError naming it."""
        document = read_checked_json(path)
        names = {f.name for f in fields(cls)}
        if not isinstance(document.get("metrics"), dict) or not isinstance(document.get("task"), str):
            raise ArtefactError(f"{path} is not an evaluation result (no task or metrics)")
        return cls(**{k: v for k, v in document.items() if k in names})


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


# the three evaluations ---------------------------------------------------------------------------


def _beir(
    folder: str | os.PathLike[str], split: str, corpus_limit: int | None = None
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    qrels = load_qrels(folder, split)
    queries = {q: t for q, t in load_queries(folder).items() if q in qrels}
    lost = sorted(set(qrels) - set(queries))
    if lost:
        raise ValueError(f"{len(lost)} judged queries are missing from queries.jsonl (e.g. {lost[:3]})")
    corpus = {doc_id: doc["full"] for doc_id, doc in load_corpus(folder).items()}
    if not corpus:
        raise ValueError(f"{Path(folder) / 'corpus.jsonl'} holds no documents: nothing to retrieve from")
    if corpus_limit is not None and corpus_limit < len(corpus):
        judged = {doc for docs in qrels.values() for doc, grade in docs.items() if grade > 0 and doc in corpus}
        others = [doc for doc in corpus if doc not in judged][: max(corpus_limit - len(judged), 0)]
        corpus = {doc: corpus[doc] for doc in corpus if doc in judged or doc in set(others)}
    return corpus, queries, qrels


def _count_missing(result: EvalResult, qrels: Mapping[str, Mapping[str, int]], corpus: Mapping[str, str]) -> None:
    missing = missing_judged(qrels, corpus)
    if missing:
        result.counts["judged_missing"] = missing  # in the table and the JSON, beside the warning


def missing_judged(qrels: Mapping[str, Mapping[str, int]], corpus: Mapping[str, str]) -> int:
    """How many relevance judgements (grade > 0) name documents the corpus lacks, with a loud warning when
    any do: those documents can never be retrieved, so recall (and nDCG) cannot reach 1."""
    relevant = [(qid, doc) for qid, judged in qrels.items() for doc, grade in judged.items() if grade > 0]
    missing = [(qid, doc) for qid, doc in relevant if doc not in corpus]
    if missing:
        logger.warning(
            "%d of %d relevance judgements name documents missing from corpus.jsonl (e.g. %s): they can never "
            "be retrieved, so the metrics are capped below 1; check that qrels and corpus belong together",
            len(missing), len(relevant), ", ".join(f"query {q} -> {d}" for q, d in missing[:3]),
        )
    return len(missing)


def _data_digests(folder: Path, split: str, extra: Sequence[Path] = ()) -> dict[str, str]:
    files = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv", *extra]
    return {str(f): file_digest(f) for f in files}


def evaluate_retrieval(
    model: FlagModel | BGEM3FlagModel,
    data: str | os.PathLike[str],
    split: str = "test",
    k_values: Sequence[int] = K_VALUES,
    top_k: int = 100,
    reranker: FlagReranker | None = None,
    rerank_top_k: int = 100,
    hybrid: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
    mode: str = "dense",
    weights: Sequence[float] | None = None,
    corpus_limit: int | None = None,
) -> EvalResult:
    """Retrieval on a BEIR folder: dense (optionally fused with BM25 by ``hybrid``), or with a BGE-M3 model any
    of its ``mode``s (dense, sparse, colbert, sparse+dense, hybrid with ``weights`` for dense, sparse, colbert);
    optionally reranked. ``corpus_limit`` keeps every judged document and fills up to that many with the first
    others (a sub-corpus: quicker, and its figures are not the full corpus's)."""
    started = time.perf_counter()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "dense" and not isinstance(model, BGEM3FlagModel):
        raise ValueError(f"mode={mode!r} needs a BGE-M3 model (BGEM3FlagModel); {model.model_name_or_path} gives "
                         "dense vectors only")
    folder = Path(data)
    corpus, queries, qrels = _beir(folder, split, corpus_limit)
    depth = max(top_k, max(k_values), rerank_top_k if reranker else 0)
    cache = EmbeddingCache(cache_dir) if cache_dir else None
    if isinstance(model, BGEM3FlagModel):
        run = m3_run(model, corpus, queries, depth, mode, weights or DEFAULT_WEIGHTS)
    else:
        run = dense_run(model, corpus, queries, depth, cache, show_progress)
    if hybrid:
        run = reciprocal_rank_fusion([run, bm25_run(corpus, queries, depth)], depth)
    if reranker is not None:
        run = rerank_run(reranker, run, corpus, queries, rerank_top_k, show_progress)
    settings: dict[str, Any] = {**model.signature(), "split": split, "top_k": depth, "hybrid": hybrid,
                                "corpus_limit": corpus_limit}
    if isinstance(model, BGEM3FlagModel):
        settings.update(mode=mode, weights=list(weights or DEFAULT_WEIGHTS))
    if reranker is not None:
        settings.update(rerank_top_k=rerank_top_k, reranker_max_length=reranker.max_length)
    result = EvalResult(
        task="retrieval", metrics=evaluate_run(qrels, run, k_values), model=model.model_name_or_path,
        reranker=reranker.model_name_or_path if reranker else None, settings=settings,
        data=_data_digests(folder, split), counts={"queries": len(qrels), "documents": len(corpus)},
    )
    if cache is not None:
        result.counts.update(cache_hits=cache.hits, cache_misses=cache.misses)
    _count_missing(result, qrels, corpus)
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
    judged = [qid for qid in run if qid in qrels]
    if not judged:
        raise ValueError(f"none of the {len(run)} queries of {run_file} is judged in {folder} ({split} qrels): the "
                         "run belongs to other data or another split; every metric would be 0")
    if len(judged) < len(qrels):
        logger.warning("%d of %d judged queries have no results in %s: they count as 0 in every metric",
                       len(qrels) - len(judged), len(qrels), run_file)
    reranked = rerank_run(reranker, run, corpus, queries, top_k, show_progress)
    result = EvalResult(
        task="rerank", metrics=evaluate_run(qrels, reranked, k_values),
        reranker=reranker.model_name_or_path if reranker else "identity",
        settings={"split": split, "top_k": top_k, "max_length": reranker.max_length if reranker else None},
        data=_data_digests(folder, split, [Path(run_file)]),
        counts={"queries": len(qrels), "run_queries": len(run), "pairs": sum(len(v) for v in reranked.values())},
    )
    _count_missing(result, qrels, corpus)
    return _finish(result, started)


def load_sts_pairs(path: str | os.PathLike[str]) -> tuple[list[str], list[str], list[float]]:
    """(sentences 1, sentences 2, gold scores) from a csv or tsv file: sentence1, sentence2, score per line
    (a header line is allowed)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no STS file at {file}")
    delimiter = "\t" if file.suffix.lower() in {".tsv", ".tab"} else ","
    first, second, gold = [], [], []
    lines = (line for _, line in text_lines(file))
    for number, row in enumerate(csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL), start=1):
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
        if not math.isfinite(score):
            raise ValueError(f"{file}, line {number}: score {row[2]!r} is not a finite number")
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
    if len(set(gold)) < 2:
        raise ValueError(f"every gold score in {pairs} is {gold[0]}: a correlation with constant scores is undefined")
    if np.ptp(cosine) == 0:
        raise ValueError(f"the model gives every pair in {pairs} the same similarity ({cosine[0]:.6f}): a correlation "
                         "with constant scores is undefined; check the model and its pooling")
    metrics = {"spearman": float(spearmanr(cosine, gold).statistic), "pearson": float(pearsonr(cosine, gold)[0])}
    if not all(math.isfinite(value) for value in metrics.values()):
        raise ValueError(f"the correlations on {pairs} are not finite ({metrics}); check the data and the model")
    result = EvalResult(
        task="sts",
        metrics=metrics,
        model=model.model_name_or_path, settings=model.signature(), data={str(pairs): file_digest(pairs)},
        counts={"pairs": len(gold)},
    )
    return _finish(result, started)
