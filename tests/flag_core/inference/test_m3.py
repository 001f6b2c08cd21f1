"""BGE-M3: dense, sparse and ColBERT outputs and every score equal FlagEmbedding's BGEM3FlagModel (golden file)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core import BGEM3FlagModel, FlagAutoModel, FlagModel, build_embedder

ATOL = 1e-5


def _model(path: str, settings: dict[str, Any]) -> BGEM3FlagModel:
    return BGEM3FlagModel(path, use_fp16=False, devices="cpu", batch_size=settings["batch_size"],
                          query_max_length=settings["query_max_length"],
                          passage_max_length=settings["passage_max_length"])


def _same_lexical(ours: list[dict[str, float]], theirs: list[dict[str, float]]) -> None:
    assert [set(a) for a in ours] == [set(b) for b in theirs]  # the same token ids
    for a, b in zip(ours, theirs, strict=True):
        for token, weight in b.items():
            assert a[token] == pytest.approx(weight, abs=ATOL), token


@pytest.mark.parametrize("length", ["max_length_512", "max_length_32"])
def test_outputs_match_flagembedding(m3_path: str, m3_golden: dict[str, Any], length: str) -> None:
    reference = m3_golden[length]
    model = _model(m3_path, reference["settings"])
    for side, texts, encode in (("queries", m3_golden["queries"], model.encode_queries),
                                ("passages", m3_golden["passages"], model.encode_corpus)):
        out = encode(texts, return_dense=True, return_sparse=True, return_colbert_vecs=True)
        expected = reference[side]
        np.testing.assert_allclose(out["dense_vecs"], expected["dense_vecs"], atol=ATOL)
        _same_lexical(out["lexical_weights"], expected["lexical_weights"])
        assert len(out["colbert_vecs"]) == len(expected["colbert_vecs"])
        for ours, theirs in zip(out["colbert_vecs"], expected["colbert_vecs"], strict=True):
            assert ours.shape == np.asarray(theirs).reshape(-1, ours.shape[1]).shape  # no padding rows
            np.testing.assert_allclose(ours, np.asarray(theirs).reshape(ours.shape), atol=ATOL)


@pytest.mark.parametrize("length", ["max_length_512", "max_length_32"])
def test_scores_match_flagembedding(m3_path: str, m3_golden: dict[str, Any], length: str) -> None:
    reference = m3_golden[length]
    model = _model(m3_path, reference["settings"])
    q = model.encode_queries(m3_golden["queries"], return_sparse=True, return_colbert_vecs=True)
    p = model.encode_corpus(m3_golden["passages"], return_sparse=True, return_colbert_vecs=True)
    np.testing.assert_allclose(model.compute_lexical_matching_score(q["lexical_weights"], p["lexical_weights"]),
                               reference["lexical_matching_score"], atol=ATOL)
    colbert = [[model.colbert_score(a, b) for b in p["colbert_vecs"]] for a in q["colbert_vecs"]]
    np.testing.assert_allclose(colbert, reference["colbert_score"], atol=ATOL)
    pairs = [(a, b) for a, b in reference["compute_score_pairs"]]
    scores = model.compute_score(pairs, weights_for_different_modes=reference["compute_score_weights"])
    assert set(scores) == set(reference["compute_score"])  # the five modes
    for mode, values in reference["compute_score"].items():
        np.testing.assert_allclose(scores[mode], values, atol=ATOL, err_msg=mode)
    tokens = model.convert_id_to_token(p["lexical_weights"][0])
    assert tokens.keys() == reference["convert_id_to_token_passage_0"].keys()  # type: ignore[union-attr]
    one = model.compute_score(pairs[0], weights_for_different_modes=reference["compute_score_weights"])
    assert one["dense"] == pytest.approx(reference["compute_score"]["dense"][0], abs=ATOL)


def test_one_text_and_the_defaults(m3_path: str, m3_golden: dict[str, Any]) -> None:
    model = BGEM3FlagModel(m3_path, devices="cpu")
    out = model.encode("what is a panda?")
    assert out["dense_vecs"].shape == (384,) and out["lexical_weights"] is None and out["colbert_vecs"] is None
    both = model.encode(["a", "what is a panda?", "a"], return_sparse=True, return_colbert_vecs=True)
    assert both["lexical_weights"][0] == both["lexical_weights"][2]  # repeated texts computed once, order kept
    np.testing.assert_allclose(both["dense_vecs"][1], out["dense_vecs"], atol=1e-6)
    dense = FlagModel(m3_path, pooling_method="cls", devices="cpu", passage_max_length=512)
    np.testing.assert_allclose(dense.encode_corpus(m3_golden["passages"]),
                               model.encode_corpus(m3_golden["passages"])["dense_vecs"], atol=1e-6)
    empty = model.encode([], return_sparse=True)
    assert empty["dense_vecs"].shape == (0, 384) and empty["lexical_weights"] == []


def test_auto_model_and_framework_embeddings(m3_path: str, tmp_path: Path) -> None:
    folder = tmp_path / "bge-m3"
    shutil.copytree(m3_path, folder)
    assert isinstance(FlagAutoModel.from_finetuned(str(folder), devices="cpu"), BGEM3FlagModel)
    assert isinstance(FlagAutoModel.from_finetuned(m3_path, model_class="encoder-only-m3", devices="cpu"),
                      BGEM3FlagModel)
    dense = build_embedder(str(folder), devices="cpu")  # what the framework classes use: M3's dense vectors
    assert isinstance(dense, FlagModel) and dense.pooling_method == "cls"


def test_a_folder_without_the_heads_is_a_clear_error(m3_path: str, tmp_path: Path) -> None:
    folder = tmp_path / "no-heads"
    shutil.copytree(m3_path, folder)
    (folder / "sparse_linear.pt").unlink()
    model = BGEM3FlagModel(str(folder), devices="cpu")
    assert model.encode("dense only works")["dense_vecs"].shape == (384,)
    with pytest.raises(ValueError, match=r"no-heads has no sparse_linear\.pt"):
        model.encode("x", return_sparse=True)
    with pytest.raises(ValueError, match="sparse_linear"):
        model.compute_score([("q", "p")])
    with pytest.raises(ValueError, match="colbert_dim=128"):
        BGEM3FlagModel(m3_path, devices="cpu", colbert_dim=128)


@pytest.mark.slow
def test_two_workers_give_the_in_process_outputs(m3_path: str, m3_golden: dict[str, Any]) -> None:
    texts = m3_golden["passages"] + m3_golden["queries"]
    single = BGEM3FlagModel(m3_path, devices="cpu").encode(texts, return_sparse=True, return_colbert_vecs=True)
    model = BGEM3FlagModel(m3_path, devices=["cpu", "cpu"])
    try:
        pooled = model.encode(texts, return_sparse=True, return_colbert_vecs=True)
    finally:
        model.stop_self_pool()
    np.testing.assert_allclose(pooled["dense_vecs"], single["dense_vecs"], atol=1e-6)
    _same_lexical(pooled["lexical_weights"], single["lexical_weights"])
    for a, b in zip(pooled["colbert_vecs"], single["colbert_vecs"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
