"""Vectors equal FlagEmbedding's (golden file) and sentence-transformers' to fp32 precision."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from flag_core import FlagModel

TOL = 1e-5


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_queries_and_corpus_match_flagembedding(model_path: str, golden: dict[str, Any], pooling: str) -> None:
    reference = golden["embedder"][pooling]
    settings = reference["settings"]
    model = FlagModel(
        model_path,
        pooling_method=pooling,
        normalize_embeddings=True,
        query_instruction_for_retrieval=settings["query_instruction_for_retrieval"],
        query_instruction_format=settings["query_instruction_format"],
        use_fp16=False,
        devices="cpu",
        batch_size=4,
        query_max_length=512,
        passage_max_length=512,
    )
    texts = golden["texts"]
    assert max(len(t) for t in texts) > 5000  # the over-512-token texts are part of the check
    queries = model.encode_queries(texts)
    corpus = model.encode_corpus(texts)
    assert isinstance(queries, np.ndarray) and queries.dtype == np.float32 and queries.shape == (len(texts), 384)
    np.testing.assert_allclose(queries, np.array(reference["encode_queries"]), atol=TOL, rtol=0)
    np.testing.assert_allclose(corpus, np.array(reference["encode_corpus"]), atol=TOL, rtol=0)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_unnormalized_max_length_128_matches_flagembedding(
    model_path: str, golden: dict[str, Any], pooling: str
) -> None:
    model = FlagModel(
        model_path, pooling_method=pooling, normalize_embeddings=False, use_fp16=False, devices="cpu",
        batch_size=3, passage_max_length=128,
    )
    expected = np.array(golden["embedder"][pooling]["encode_corpus_unnormalized_max_length_128"])
    got = model.encode_corpus(golden["texts"])
    assert np.abs(np.linalg.norm(got, axis=1) - 1).max() > 0.1  # really unnormalised
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)


def test_mean_pooling_matches_sentence_transformers(model_path: str, golden: dict[str, Any]) -> None:
    from sentence_transformers import SentenceTransformer

    texts = golden["texts"]
    expected = SentenceTransformer(model_path, device="cpu").encode(texts, normalize_embeddings=True)
    # no explicit settings: pooling and max length come from the folder's sentence-transformers files
    model = FlagModel(model_path, devices="cpu")
    assert model.pooling_method == "mean" and model.passage_max_length == 256
    np.testing.assert_allclose(model.encode(texts), expected, atol=TOL, rtol=0)
