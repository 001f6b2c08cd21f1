"""BGE-M3: dense, sparse and ColBERT outputs and every score equal FlagEmbedding's BGEM3FlagModel (golden file)."""

from __future__ import annotations

import logging
import re
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


# issue 24, item 3: one rule for the fusion weights ------------------------------------------------------------


@pytest.fixture(scope="module")
def m3_model(m3_path: str) -> BGEM3FlagModel:
    return BGEM3FlagModel(m3_path, devices="cpu")


@pytest.mark.parametrize("weights", [[0, 0, 0], [1, -1, 0], [0, 0, 1], [float("nan"), 1, 1], [1, float("inf"), 1],
                                     [1, 1], [1, 1, 1, 1]])
def test_fusion_weights_follow_one_rule(m3_model: BGEM3FlagModel, weights: list[float]) -> None:
    from flag_core.retrieval.hybrid import HybridIndex, check_weights

    # FlagEmbedding returns NaN for [0, 0, 0], +-inf for [1, -1, 0] and NaN sparse+dense for [0, 0, 1]: refused
    with pytest.raises(ValueError, match=r"weights_for_different_modes must be three finite, non-negative") as raised:
        m3_model.compute_score([("what do pandas eat?", "Pandas eat bamboo.")], weights_for_different_modes=weights)
    from flag_core.inference.m3 import check_mode_weights
    # HybridIndex (and through it the CLI and the hybrid retrievers) says the same, under its argument's name
    with pytest.raises(ValueError) as hybrid:
        check_weights(weights)
    assert str(hybrid.value) == str(raised.value).replace("weights_for_different_modes", "weights")
    with pytest.raises(ValueError, match="weights must be"):
        check_mode_weights(weights)
    index = HybridIndex(m3_model)
    index.add(["Pandas eat bamboo."])
    with pytest.raises(ValueError, match="weights must be"):
        index.search("pandas", k=1, weights=weights)


def test_fusion_weights_types_and_finite_scores(m3_model: BGEM3FlagModel) -> None:
    scores = m3_model.compute_score([("q", "p"), ("pandas", "Pandas eat bamboo.")],
                                    weights_for_different_modes=[0, 1, 0])
    assert all(np.isfinite(values).all() for values in scores.values())
    np.testing.assert_allclose(scores["sparse+dense"], scores["sparse"])
    with pytest.raises(TypeError, match="three numbers"):
        m3_model.compute_score(("q", "p"), weights_for_different_modes="111")  # type: ignore[arg-type]
    from flag_core.inference.m3 import check_mode_weights

    with pytest.raises(TypeError, match=r"weights\[1\] must be a number"):
        check_mode_weights([1, "1", 1])
    assert check_mode_weights(np.array([1, 0, 0])) == (1.0, 0.0, 0.0)


# issue 24, item 7: head files checked at load, lengths clamped ---------------------------------------------------


def _folder_with_head(m3_path: str, tmp_path: Path, name: str, write: Any) -> tuple[Path, Path]:
    """The checkpoint's files linked into a new folder, the head file ``name`` written by ``write(path)``."""
    folder = tmp_path / "damaged-m3"
    folder.mkdir()
    for item in Path(m3_path).iterdir():
        if item.name != name:
            (folder / item.name).symlink_to(item)
    write(folder / name)
    return folder, folder / name


def _save(state: Any) -> Any:
    import torch

    return lambda path: torch.save(state, path)


def _truncated(m3_path: str, name: str) -> Any:
    data = (Path(m3_path) / name).read_bytes()
    return lambda path: path.write_bytes(data[: len(data) // 2])


HIDDEN = 384


def _damages() -> list[Any]:
    import torch

    colbert = "colbert_linear.pt"
    sparse = "sparse_linear.pt"
    good_bias = torch.zeros(HIDDEN)
    return [
        pytest.param(colbert, lambda path: path.write_bytes(b""), "cannot be read", id="empty"),
        pytest.param(sparse, lambda path: path.write_text("not a torch file\n"), "cannot be read", id="text"),
        pytest.param(colbert, "truncate", "cannot be read", id="truncated"),
        pytest.param(colbert, _save({"weight": torch.zeros(HIDDEN, HIDDEN + 1), "bias": good_bias}),
                     r"weight of shape \(384, 385\)", id="colbert-wrong-in"),
        pytest.param(sparse, _save({"weight": torch.zeros(2, HIDDEN), "bias": torch.zeros(2)}),
                     r"weight of shape \(2, 384\)", id="sparse-two-outputs"),
        pytest.param(sparse, _save({"weight": torch.zeros(HIDDEN), "bias": torch.zeros(1)}),
                     r"weight of shape \(384,\)", id="sparse-1d"),
        pytest.param(colbert, _save({"weight": torch.zeros(HIDDEN, HIDDEN)}), r"holds \['weight'\]", id="no-bias"),
        pytest.param(colbert, _save({"weight": torch.zeros(HIDDEN, HIDDEN), "bias": torch.zeros(3)}),
                     r"bias of shape \(3,\)", id="bias-shape"),
        pytest.param(sparse, _save({"weight": torch.full((1, HIDDEN), float("nan")), "bias": torch.zeros(1)}),
                     "NaN", id="nan"),
        pytest.param(sparse, _save(torch.zeros(1, HIDDEN)), "holds a Tensor", id="bare-tensor"),
        pytest.param(sparse, _save({"weight": torch.zeros(1, HIDDEN, dtype=torch.int64),
                                    "bias": torch.zeros(1, dtype=torch.int64)}), "torch.int64", id="integers"),
    ]


@pytest.mark.parametrize(("name", "write", "problem"), _damages())
def test_a_damaged_head_is_one_error_at_load(m3_path: str, tmp_path: Path, name: str, write: Any,
                                             problem: str) -> None:
    from flag_core.fileio import ArtefactError

    if write == "truncate":
        write = _truncated(m3_path, name)
    folder, file = _folder_with_head(m3_path, tmp_path, name, write)
    expected = r"weight \(out, 384\) and bias \(out,\)" if name == "colbert_linear.pt" else (
        r"weight \(1, 384\) and bias \(1,\)")
    with pytest.raises(ArtefactError, match=problem) as raised:  # at load, not at the first encode
        BGEM3FlagModel(str(folder), devices="cpu")
    message = str(raised.value)
    assert str(file) in message and re.search(expected, message), message


def test_a_colbert_head_of_another_size_needs_its_colbert_dim(m3_path: str, tmp_path: Path) -> None:
    import torch

    head = {"weight": torch.randn(16, HIDDEN), "bias": torch.zeros(16)}
    folder, _ = _folder_with_head(m3_path, tmp_path, "colbert_linear.pt", _save(head))
    model = BGEM3FlagModel(str(folder), devices="cpu", colbert_dim=16)
    assert model.encode("pandas", return_colbert_vecs=True)["colbert_vecs"].shape[1] == 16
    with pytest.raises(ValueError, match=r"colbert_dim=32, but .*colbert_linear\.pt gives 16 dimensions"):
        BGEM3FlagModel(str(folder), devices="cpu", colbert_dim=32)


LONG = "pandas eat bamboo in the mountains of central china " * 120  # about 1,000 tokens


def test_lengths_beyond_the_model_are_clamped_with_one_warning(
    m3_path: str, m3_model: BGEM3FlagModel, caplog: pytest.LogCaptureFixture
) -> None:
    assert m3_model.runtime.max_length == 512 and (m3_model.query_max_length, m3_model.passage_max_length) == (512, 512)
    reference = m3_model.encode(LONG, max_length=512, return_sparse=True, return_colbert_vecs=True)
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        out = m3_model.encode(LONG, max_length=5000, return_sparse=True, return_colbert_vecs=True)
    assert [r.getMessage() for r in caplog.records if "accepts" in r.getMessage()] == [
        "max_length=5000 is more than the model accepts; using 512"]
    np.testing.assert_allclose(out["dense_vecs"], reference["dense_vecs"], atol=1e-6)
    assert out["lexical_weights"] == reference["lexical_weights"]
    np.testing.assert_allclose(out["colbert_vecs"], reference["colbert_vecs"], atol=1e-6)
    for encode in (m3_model.encode_queries, m3_model.encode_corpus):
        np.testing.assert_allclose(encode([LONG], max_length=5000)["dense_vecs"][0], reference["dense_vecs"],
                                   atol=1e-6)
    scores = m3_model.compute_score([(LONG, LONG)], max_query_length=5000, max_passage_length=5000)
    assert all(np.isfinite(v).all() for v in scores.values())
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        model = BGEM3FlagModel(m3_path, devices="cpu", query_max_length=5000, passage_max_length=2000)
    assert (model.query_max_length, model.passage_max_length) == (512, 512)
    assert sorted(r.getMessage() for r in caplog.records if "accepts" in r.getMessage()) == [
        "passage_max_length=2000 is more than the model accepts; using 512",
        "query_max_length=5000 is more than the model accepts; using 512",
    ]
    np.testing.assert_allclose(model.encode_corpus(LONG)["dense_vecs"], reference["dense_vecs"], atol=1e-6)
    with pytest.raises(ValueError, match="max_length must be a positive int"):
        m3_model.encode("x", max_length=0)
