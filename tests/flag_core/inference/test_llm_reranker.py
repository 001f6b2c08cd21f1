"""LLM and layerwise rerankers on a tiny decoder, checked against a direct forward pass."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from flag_core import FlagLLMReranker, LayerWiseFlagLLMReranker
from flag_core.inference.rerank_runtime import DEFAULT_LLM_PROMPT

PAIRS = [
    ("what is a panda?", "The giant panda is a bear species endemic to China."),
    ("capital of France", "Paris is the capital and most populous city of France. " * 3),
    ("q", ""),
    ("a much longer query about json parsing in python " * 4, "json.loads(s)"),
]


def _direct_scores(folder: str, pairs: list[tuple[str, str]], max_length: int = 512) -> list[list[float]]:
    """FlagEmbedding's recipe, written out one pair at a time with no padding: [score per layer]."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    yes = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    prompt = tokenizer(DEFAULT_LLM_PROMPT, add_special_tokens=False)["input_ids"]
    sep = tokenizer("\n", add_special_tokens=False)["input_ids"]
    out = []
    for query, passage in pairs:
        q = tokenizer("A: " + query, add_special_tokens=False)["input_ids"][: max_length * 3 // 4]
        p = tokenizer("B: " + passage, add_special_tokens=False)["input_ids"][:max_length]
        first = [tokenizer.bos_token_id, *q]
        second = (sep + p)[: max_length + len(sep) + len(prompt) - len(first)]
        ids = torch.tensor([first + second + sep + prompt])
        layer_scores = []
        with torch.inference_mode():
            result = model(input_ids=ids, output_hidden_states=True)
            for layer in (1, 2):
                state = result.hidden_states[layer][0, -1]
                if layer < 2:
                    state = model.model.norm(state)
                layer_scores.append(float(model.lm_head(state)[yes]))
        assert abs(layer_scores[-1] - float(result.logits[0, -1, yes])) < 1e-5
        out.append(layer_scores)
    return out


def test_llm_reranker_equals_direct_forward(tiny_decoder_path: str) -> None:
    reranker = FlagLLMReranker(tiny_decoder_path, devices="cpu")
    expected = [s[-1] for s in _direct_scores(tiny_decoder_path, PAIRS)]
    np.testing.assert_allclose(reranker.compute_score(PAIRS), expected, atol=1e-5)
    one = reranker.compute_score(PAIRS[0])
    assert isinstance(one, list) and len(one) == 1
    np.testing.assert_allclose(one, expected[:1], atol=1e-5)
    assert reranker.compute_score([]) == []


def test_llm_reranker_truncation(tiny_decoder_path: str) -> None:
    reranker = FlagLLMReranker(tiny_decoder_path, devices="cpu", max_length=16)
    long_pairs = [("query " * 30, "passage " * 40), ("short", "passage " * 40)]
    expected = [s[-1] for s in _direct_scores(tiny_decoder_path, long_pairs, max_length=16)]
    np.testing.assert_allclose(reranker.compute_score(long_pairs), expected, atol=1e-5)


def test_layerwise_scores(tiny_decoder_path: str) -> None:
    reranker = LayerWiseFlagLLMReranker(tiny_decoder_path, devices="cpu")
    expected = np.array(_direct_scores(tiny_decoder_path, PAIRS))
    last = reranker.compute_score(PAIRS)
    np.testing.assert_allclose(last, expected[:, 1], atol=1e-5)
    both = reranker.compute_score(PAIRS, cutoff_layers=[1, 2])
    assert isinstance(both, list) and len(both) == 2
    np.testing.assert_allclose(both[0], expected[:, 0], atol=1e-5)
    np.testing.assert_allclose(both[1], expected[:, 1], atol=1e-5)
    with pytest.raises(ValueError, match="cutoff_layers"):
        reranker.compute_score(PAIRS, cutoff_layers=[3])


def test_llm_reranker_threads_and_bad_input(tiny_decoder_path: str) -> None:
    reranker = FlagLLMReranker(tiny_decoder_path, devices="cpu")
    jobs = [PAIRS[i:] + PAIRS[:i] for i in range(4)] * 2
    expected = [reranker.compute_score(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(reranker.compute_score, jobs)) == expected
    with pytest.raises(TypeError, match=r"sentence_pairs\[0\]"):
        reranker.compute_score([("q", 3)])
