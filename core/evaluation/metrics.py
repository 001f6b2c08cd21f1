"""Ranking metrics from trec_eval itself (through ``pytrec_eval``, the implementation BEIR, MTEB and
FlagEmbedding report with): nDCG@k, Recall@k and MAP@k are trec_eval's ``ndcg_cut``, ``recall`` and
``map_cut``; MRR@k is trec_eval's ``recip_rank`` on each ranking cut to its first k documents (trec_eval
order: score, then doc id, descending). Averages run over every judged query; a judged query the system
returned nothing for counts as 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

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
