"""Evaluation: retrieval and reranking on BEIR-format data and STS, with trec_eval's metrics, an embedding
cache, plots, and an encoder for MTEB.

``beir`` reads the data, ``runs`` makes rankings (dense, BM25, fused, reranked), ``metrics`` scores them,
``tasks`` runs whole evaluations into an :class:`EvalResult`, ``cache`` keeps encoded corpora and
``plots`` draws results.
"""

from .cache import EmbeddingCache
from .metrics import K_VALUES, Qrels, Run, evaluate_run, trec_order
from .runs import bm25_run, dense_run, encode_cached, reciprocal_rank_fusion, rerank_run
from .tasks import EvalResult, evaluate_rerank, evaluate_retrieval, evaluate_sts, file_digest, load_sts_pairs

__all__ = [
    "K_VALUES",
    "EmbeddingCache",
    "EvalResult",
    "Qrels",
    "Run",
    "bm25_run",
    "dense_run",
    "encode_cached",
    "evaluate_rerank",
    "evaluate_retrieval",
    "evaluate_run",
    "evaluate_sts",
    "file_digest",
    "load_sts_pairs",
    "reciprocal_rank_fusion",
    "rerank_run",
    "trec_order",
]
