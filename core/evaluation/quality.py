"""What a faster mode costs in quality: a candidate model (int8, bf16, another backend) against the fp32 reference,
on the user's own data. Vectors are compared by cosine, but judged by task metrics (STS Spearman, retrieval
nDCG@10): int8 vectors can drift by cosine and still rank the same."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ..inference.embedder import FlagModel
from ..inference.reranker import FlagReranker
from .beir import load_corpus
from .tasks import evaluate_retrieval, evaluate_sts, load_sts_pairs


@dataclass
class QualityReport:
    """Agreement with the reference and each task metric for both models."""

    agreement: dict[str, float] = field(default_factory=dict)  # min/mean cosine, or score agreement
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (reference, candidate)

    def relative_losses(self) -> dict[str, float]:
        """Each metric's loss relative to the reference (0.01 = 1% worse; negative: better)."""
        return {name: (ref - new) / abs(ref) if ref else 0.0 for name, (ref, new) in self.metrics.items()}

    def over(self, tolerance: float) -> list[str]:
        """The metrics whose relative loss exceeds ``tolerance``."""
        return [name for name, loss in self.relative_losses().items() if loss > tolerance]


def _cosines(reference: FlagModel, candidate: FlagModel, texts: Sequence[str]) -> np.ndarray:
    a = np.asarray(reference.encode_corpus(list(texts)), dtype=np.float64)
    b = np.asarray(candidate.encode_corpus(list(texts)), dtype=np.float64)
    return (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def compare_embedders(
    reference: FlagModel,
    candidate: FlagModel,
    checks: Sequence[str | os.PathLike[str]],
    corpus_limit: int | None = None,
    cosine_texts: int = 1000,
) -> QualityReport:
    """Cosine agreement of the vectors and the STS Spearman (for a csv/tsv of scored pairs) and SciFact-style
    nDCG@10 (for a BEIR folder, optionally a sub-corpus of ``corpus_limit`` documents) of both models."""
    if not checks:
        raise ValueError("give at least one check: an STS pairs file or a BEIR folder")
    report = QualityReport()
    texts: list[str] = []
    for check in checks:
        path = Path(check)
        if path.is_dir():
            ref = evaluate_retrieval(reference, path, k_values=[10], corpus_limit=corpus_limit)
            new = evaluate_retrieval(candidate, path, k_values=[10], corpus_limit=corpus_limit)
            report.metrics[f"nDCG@10 {path.name}"] = (ref.metrics["ndcg@10"], new.metrics["ndcg@10"])
            texts += [doc["full"] for doc in list(load_corpus(path).values())[:cosine_texts]]
        elif path.is_file():
            ref_sts, new_sts = evaluate_sts(reference, path), evaluate_sts(candidate, path)
            report.metrics[f"STS Spearman {path.name}"] = (ref_sts.metrics["spearman"], new_sts.metrics["spearman"])
            first, second, _ = load_sts_pairs(path)
            texts += (first + second)[:cosine_texts]
        else:
            raise FileNotFoundError(f"no check data at {path}: give an STS csv/tsv file or a BEIR folder")
    cosines = _cosines(reference, candidate, texts)
    report.agreement = {"min cosine": float(cosines.min()), "mean cosine": float(cosines.mean())}
    return report


def compare_rerankers(
    reference: FlagReranker, candidate: FlagReranker, pairs: Sequence[tuple[str, str]]
) -> QualityReport:
    """Score agreement of two rerankers on ``pairs``: the largest difference and the Spearman correlation."""
    if len(pairs) < 2:
        raise ValueError("give at least two (query, passage) pairs to compare rerankers on")
    a = np.asarray(reference.compute_score(list(pairs)))
    b = np.asarray(candidate.compute_score(list(pairs)))
    report = QualityReport()
    report.agreement = {"max |score diff|": float(np.abs(a - b).max()),
                        "score Spearman": float(spearmanr(a, b).statistic)}
    report.metrics["score Spearman"] = (1.0, report.agreement["score Spearman"])
    return report
