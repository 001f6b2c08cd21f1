"""Hard-negative mining, the BGE recipe: search each query in a candidate pool and sample negatives from
a band of ranks (default 10-210), never a positive, never the query itself, never a duplicate.

Where FlagEmbedding fills a short list with random pool items (which can be positives), a short list
here stays short and is reported.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..inference.embedder import FlagModel
from ..inference.inputs import check_positive_int
from ..inference.reranker import FlagReranker
from ..retrieval.index import VectorIndex
from .data import TrainExample

logger = logging.getLogger(__name__)


@dataclass
class MiningReport:
    """What mining did: how many queries got fewer negatives than asked, and the smallest count."""

    queries: int
    pool: int
    short: int
    fewest: int


def mine_hard_negatives(
    model: FlagModel,
    examples: Sequence[TrainExample],
    candidate_pool: Sequence[str] | None = None,
    range_for_sampling: tuple[int, int] = (10, 210),
    negative_number: int = 15,
    seed: int = 42,
    show_progress: bool = False,
    pool_vectors: np.ndarray | None = None,
) -> tuple[list[TrainExample], MiningReport]:
    """New examples whose ``neg`` are mined hard negatives (teacher scores are dropped: they no longer
    match). The pool defaults to every positive and negative passage in ``examples``; queries are
    encoded with the model's query instruction, the pool as plain passages.

    ``pool_vectors`` skips encoding the pool: one row per ``candidate_pool`` text, in its order, encoded
    by the same model (e.g. the corpus vectors of an evaluation run, when the model has no passage
    instruction)."""
    start, end = range_for_sampling
    if not 0 <= start < end:
        raise ValueError(f"range_for_sampling must be (start, end) with 0 <= start < end, got {range_for_sampling}")
    check_positive_int(negative_number, "negative_number", allow_none=False)
    if candidate_pool is None:
        if pool_vectors is not None:
            raise ValueError("pool_vectors needs the candidate_pool they were encoded from")
        first_rows = {text: 0 for ex in examples for text in (*ex.pos, *ex.neg)}
    else:
        first_rows = {}
        for row, text in enumerate(candidate_pool):
            first_rows.setdefault(text, row)
    pool = list(first_rows)
    if not pool:
        raise ValueError("the candidate pool is empty")
    if pool_vectors is None or candidate_pool is None:
        vectors = np.asarray(model.encode(pool, show_progress_bar=show_progress))
    else:  # one given row per candidate_pool text; a repeated text keeps its first row
        vectors = _checked_pool_vectors(pool_vectors, len(candidate_pool), model.dimension)
        vectors = vectors[list(first_rows.values())]
    index = VectorIndex()
    index.add(vectors, [{} for _ in pool])
    queries = np.asarray(model.encode_queries([ex.query for ex in examples], show_progress_bar=show_progress))
    hits = index.search(queries, min(end, len(pool))) if len(examples) else []
    rng = random.Random(seed)
    mined: list[TrainExample] = []
    short = 0
    fewest = negative_number
    for example, found in zip(examples, hits, strict=True):
        banned = {*example.pos, example.query}
        seen: set[str] = set()
        candidates = []
        for position, _ in found[start:end]:
            text = pool[position]
            if text in banned or text in seen:
                continue
            seen.add(text)
            candidates.append(text)
        chosen = rng.sample(candidates, negative_number) if len(candidates) > negative_number else candidates
        if len(chosen) < negative_number:
            short += 1
            fewest = min(fewest, len(chosen))
        mined.append(replace(example, neg=chosen, pos_scores=None, neg_scores=None))
    if short:
        logger.warning(
            "%d of %d queries got fewer than %d negatives (fewest: %d): the pool or the rank band is too small",
            short, len(examples), negative_number, fewest,
        )
    return mined, MiningReport(queries=len(examples), pool=len(pool), short=short, fewest=fewest)


def _checked_pool_vectors(vectors: np.ndarray, rows: int, dimension: int) -> np.ndarray:
    """``vectors`` as an array, after checking it has one row of the model's ``dimension`` per pool text."""
    vectors = np.asarray(vectors)
    if vectors.shape != (rows, dimension):
        raise ValueError(
            f"pool_vectors has shape {vectors.shape}; expected ({rows}, {dimension}): one row of "
            "the model's dimension per candidate_pool text, in the same order"
        )
    return vectors


def add_teacher_scores(
    reranker: FlagReranker, examples: Sequence[TrainExample], show_progress: bool = False
) -> list[TrainExample]:
    """Examples with ``pos_scores``/``neg_scores`` from a reranker, for distillation."""
    pairs = [(ex.query, text) for ex in examples for text in (*ex.pos, *ex.neg)]
    scores = iter(reranker.compute_score(pairs, show_progress_bar=show_progress))
    scored = []
    for ex in examples:
        pos_scores = [next(scores) for _ in ex.pos]
        neg_scores = [next(scores) for _ in ex.neg]
        scored.append(replace(ex, pos_scores=pos_scores, neg_scores=neg_scores))
    return scored
