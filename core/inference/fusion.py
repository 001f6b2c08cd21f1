"""BGE-M3's scores and their fusion, once for ``BGEM3FlagModel.compute_score``, :class:`~flag_core.retrieval.hybrid.
HybridIndex` and the LangChain / LlamaIndex hybrid retrievers.

Mode names: :data:`MODES` are the canonical ones (what the index, the retrievers, the command line and
evaluation take and report). FlagEmbedding calls the three-way fusion "colbert+sparse+dense"; :data:`ALIASES` is
the one table of other names (alias -> canonical), and :data:`SCORE_MODES` (the keys ``compute_score`` returns,
FlagEmbedding's) is derived from it.

Fusion (:func:`fuse`), as FlagEmbedding's ``compute_score`` computes it: sparse+dense is
``(w_sparse * sparse + w_dense * dense) / (w_sparse + w_dense)``, hybrid is
``(w_colbert * colbert + w_sparse * sparse + w_dense * dense) / (w_dense + w_sparse + w_colbert)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LexicalWeights = dict[str, float]

MODES = ("dense", "sparse", "colbert", "sparse+dense", "hybrid")  # canonical, in FlagEmbedding's order
ALIASES: Mapping[str, str] = {"colbert+sparse+dense": "hybrid"}  # the one table of other names: alias -> canonical
SCORE_MODES = tuple(next((alias for alias, mode in ALIASES.items() if mode == name), name) for name in MODES)
COLBERT_MODES = ("colbert", "hybrid")  # the modes that need ColBERT vectors


def canonical_mode(mode: Any) -> str:
    """``mode`` by its canonical name (one of :data:`MODES`; an alias of :data:`ALIASES` gives its mode), or a
    ValueError naming the modes."""
    name = ALIASES.get(mode, mode) if isinstance(mode, str) else mode
    if name not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return str(name)


def check_mode_weights(weights: Any, name: str = "weights") -> tuple[float, float, float]:
    """The one rule for BGE-M3's fusion weights (compute_score, HybridIndex, the hybrid retrievers, the command
    line): three finite, non-negative numbers (dense, sparse, colbert) with dense + sparse positive, since the
    sparse+dense fusion divides by dense + sparse and the three-way fusion by their sum (FlagEmbedding gives NaN or
    infinite scores there); returned as floats."""
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence | np.ndarray):
        raise TypeError(f"{name} must be three numbers (dense, sparse, colbert), got {type(weights).__name__} "
                        f"({weights!r:.60})")
    values: list[float] = []
    for i, weight in enumerate(weights):
        if isinstance(weight, bool) or not isinstance(weight, int | float | np.integer | np.floating):
            raise TypeError(f"{name}[{i}] must be a number, got {type(weight).__name__} ({weight!r:.60})")
        values.append(float(weight))
    if len(values) != 3 or any(not math.isfinite(w) or w < 0 for w in values) or values[0] + values[1] <= 0:
        raise ValueError(
            f"{name} must be three finite, non-negative numbers (dense, sparse, colbert) with dense + sparse "
            f"positive (the sparse+dense score is divided by it; rank by ColBERT alone with the colbert mode), "
            f"got {tuple(weights)!r}"
        )
    return values[0], values[1], values[2]


def lexical_matching_score(weights_1: LexicalWeights, weights_2: LexicalWeights) -> float:
    """The sparse score of two texts: the sum of weight products over the token ids they share."""
    if len(weights_2) < len(weights_1):
        weights_1, weights_2 = weights_2, weights_1
    return float(sum(weight * weights_2[token] for token, weight in weights_1.items() if token in weights_2))


def maxsim(query: Any, passages: Sequence[Any]) -> np.ndarray:
    """ColBERT MaxSim of one query's token vectors with each of ``passages``' (float64; 0 where either side has no
    tokens): each query token's best match among the passage tokens, averaged over query tokens, computed in
    float32 as FlagEmbedding does."""
    q = np.asarray(query, dtype=np.float32)
    out = np.zeros(len(passages), dtype=np.float64)
    if q.shape[0] == 0:
        return out
    for i, passage in enumerate(passages):
        p = np.asarray(passage, dtype=np.float32)
        if p.shape[0]:
            out[i] = float((q @ p.T).max(axis=1).sum() / q.shape[0])
    return out


def colbert_score(query: Any, passage: Any) -> float:
    """ColBERT MaxSim of one query and one passage (:func:`maxsim`)."""
    return float(maxsim(query, [passage])[0])


def fuse(
    dense: Any, sparse: Any, colbert: Any | None, weights: Sequence[float]
) -> dict[str, np.ndarray]:
    """Every mode's scores (float64 arrays keyed by canonical name: dense, sparse, sparse+dense, and with
    ``colbert`` given, colbert and hybrid) from the three scores of the same items and ``weights`` (dense, sparse,
    colbert), which :func:`check_mode_weights` has checked."""
    w_dense, w_sparse, w_colbert = weights
    d, s = np.asarray(dense, dtype=np.float64), np.asarray(sparse, dtype=np.float64)
    scores = {"dense": d, "sparse": s, "sparse+dense": (s * w_sparse + d * w_dense) / (w_sparse + w_dense)}
    if colbert is not None:
        c = np.asarray(colbert, dtype=np.float64)
        scores["colbert"] = c
        scores["hybrid"] = (c * w_colbert + s * w_sparse + d * w_dense) / (w_dense + w_sparse + w_colbert)
    return scores
