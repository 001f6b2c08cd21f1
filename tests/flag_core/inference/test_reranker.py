"""FlagReranker: scores equal FlagEmbedding's (golden) and sentence-transformers' CrossEncoder."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core import FlagAutoReranker, FlagLLMReranker, FlagReranker

TOL = 1e-5


@pytest.fixture(scope="module")
def reranker(reranker_path: str) -> FlagReranker:
    return FlagReranker(reranker_path, use_fp16=False, devices="cpu", batch_size=3)


def _pairs(golden: dict[str, Any]) -> list[tuple[str, str]]:
    return [(q, p) for q, p in golden["reranker"]["pairs"]]


def test_scores_match_flagembedding(reranker: FlagReranker, golden: dict[str, Any]) -> None:
    pairs = _pairs(golden)
    assert max(len(p) for _, p in pairs) > 5000  # over-long pairs are part of the check
    np.testing.assert_allclose(reranker.compute_score(pairs), golden["reranker"]["compute_score"], atol=TOL, rtol=0)


def test_normalized_scores_match_flagembedding(reranker: FlagReranker, golden: dict[str, Any]) -> None:
    got = reranker.compute_score(_pairs(golden), normalize=True)
    np.testing.assert_allclose(got, golden["reranker"]["compute_score_normalize"], atol=TOL, rtol=0)


def test_max_length_64_matches_flagembedding(reranker: FlagReranker, golden: dict[str, Any]) -> None:
    got = reranker.compute_score(_pairs(golden), max_length=64)
    np.testing.assert_allclose(got, golden["reranker"]["compute_score_max_length_64"], atol=TOL, rtol=0)


def test_short_pairs_match_sentence_transformers(reranker: FlagReranker, reranker_path: str) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    pairs = [
        ("what is a panda?", "The giant panda is a bear species endemic to China."),
        ("capital of France", "Paris is the capital and most populous city of France."),
        ("json in python", "json.loads parses a JSON document."),
        ("", "empty query"),
    ]
    expected = CrossEncoder(reranker_path, device="cpu").predict(pairs, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(reranker.compute_score(pairs), expected, atol=TOL, rtol=0)


def test_one_pair_and_empty_input(reranker: FlagReranker, golden: dict[str, Any]) -> None:
    pair = _pairs(golden)[0]
    one = reranker.compute_score(pair)
    assert isinstance(one, list) and len(one) == 1 and isinstance(one[0], float)
    assert one == reranker.compute_score([pair])
    assert reranker.compute_score([]) == []


@pytest.mark.parametrize(
    ("bad", "error", "needle"),
    [
        (None, TypeError, "got None"),
        ("just a string", TypeError, "got str"),
        ([("q", "p"), ("q", None)], TypeError, r"sentence_pairs\[1\]"),
        ([("q", "p"), ("only one",)], TypeError, r"sentence_pairs\[1\]"),
        ([["q", "p", "x"]], TypeError, r"sentence_pairs\[0\]"),
    ],
)
def test_bad_pairs(reranker: FlagReranker, bad: Any, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        reranker.compute_score(bad)


def test_rerank_sorts_best_first(reranker: FlagReranker) -> None:
    passages = ["Paris is in France.", "Pandas eat bamboo.", "The giant panda is a bear from China.", ""]
    ranked = reranker.rerank("what is a panda?", passages)
    scores = reranker.compute_score([("what is a panda?", p) for p in passages])
    assert [i for i, _ in ranked] == sorted(range(4), key=lambda i: -scores[i])
    assert [s for _, s in ranked] == sorted(scores, reverse=True)
    assert reranker.rerank("what is a panda?", passages, top_n=2) == ranked[:2]
    assert reranker.rerank("q", []) == []
    with pytest.raises(ValueError, match="top_n"):
        reranker.rerank("q", passages, top_n=0)
    with pytest.raises(TypeError, match="passages"):
        reranker.rerank("q", "one passage")


def test_instructions(reranker_path: str, reranker: FlagReranker) -> None:
    with_instructions = FlagReranker(
        reranker_path, devices="cpu", query_instruction_for_rerank="Q: ", passage_instruction_for_rerank="P: "
    )
    assert with_instructions.compute_score(("a", "b")) == reranker.compute_score(("Q: a", "P: b"))


@pytest.mark.slow
def test_eight_threads(reranker: FlagReranker, golden: dict[str, Any]) -> None:
    pairs = _pairs(golden)
    jobs = [pairs[i:] + pairs[:i] for i in range(8)]
    expected = [reranker.compute_score(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(reranker.compute_score, jobs))
    # concurrent calls share model runs (flag_core.inference.gather): other batch mates, the same scores to fp32
    np.testing.assert_allclose(results, expected, atol=TOL, rtol=0)


def test_duplicates_and_token_budget(reranker_path: str, reranker: FlagReranker, golden: dict[str, Any]) -> None:
    pairs = _pairs(golden)
    small = FlagReranker(reranker_path, devices="cpu", max_tokens_per_batch=64)
    np.testing.assert_allclose(small.compute_score(pairs + pairs[:3]), reranker.compute_score(pairs + pairs[:3]),
                               atol=TOL)


@pytest.mark.slow
def test_two_workers(reranker_path: str, reranker: FlagReranker, golden: dict[str, Any]) -> None:
    pairs = _pairs(golden)
    multi = FlagReranker(reranker_path, devices=["cpu", "cpu"])
    try:
        scores = multi.compute_score(pairs)
        assert isinstance(scores, list)
        np.testing.assert_allclose(scores, reranker.compute_score(pairs), atol=1e-6)
    finally:
        multi.stop_self_pool()


def test_auto_reranker_on_unknown_folders(reranker_path: str, tiny_decoder_path: str, tmp_path: Path) -> None:
    assert type(FlagAutoReranker.from_finetuned(reranker_path, devices="cpu")) is FlagReranker
    assert type(FlagAutoReranker.from_finetuned(tiny_decoder_path, devices="cpu")) is FlagLLMReranker
    with pytest.raises(ValueError, match="model_class"):
        FlagAutoReranker.from_finetuned(reranker_path, model_class="bogus")


def test_an_embedding_folder_is_not_a_reranker(model_path: str) -> None:
    # a plain encoder checkpoint gets transformers' default 2-label head: refused, not mis-shaped scores
    with pytest.raises(ValueError, match="2 output labels"):
        FlagReranker(model_path, devices="cpu")
