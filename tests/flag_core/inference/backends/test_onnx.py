"""backend="onnx": the same vectors and scores as FlagEmbedding (golden file) and the torch backend, an
export made once and reused, and clear errors for what it does not run."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core import FlagLLMReranker, FlagModel, FlagReranker
from flag_core.fileio import MANIFEST_FILE, verify_folder
from flag_core.inference.backends.onnx import cache_root, export_onnx
from flag_core.inference.kinds import Head

pytest.importorskip("onnxruntime", reason="needs the onnx extra")
pytest.importorskip("onnx", reason="needs the onnx extra")

TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Exports go to a fresh folder for this module."""
    folder = tmp_path_factory.mktemp("flagstack-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLAGSTACK_CACHE", str(folder))
        yield folder


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_embeddings_match_flagembedding(model_path: str, golden: dict[str, Any], pooling: str) -> None:
    reference = golden["embedder"][pooling]
    settings = reference["settings"]
    model = FlagModel(
        model_path, pooling_method=pooling, devices="cpu", backend="onnx", batch_size=4,
        query_instruction_for_retrieval=settings["query_instruction_for_retrieval"],
        query_instruction_format=settings["query_instruction_format"],
        query_max_length=512, passage_max_length=512,
    )
    np.testing.assert_allclose(model.encode_queries(golden["texts"]), reference["encode_queries"], atol=TOL, rtol=0)
    np.testing.assert_allclose(model.encode_corpus(golden["texts"]), reference["encode_corpus"], atol=TOL, rtol=0)
    unnormalized = FlagModel(model_path, pooling_method=pooling, normalize_embeddings=False, devices="cpu",
                             backend="onnx", passage_max_length=128)
    np.testing.assert_allclose(unnormalized.encode_corpus(golden["texts"]),
                               reference["encode_corpus_unnormalized_max_length_128"], atol=TOL, rtol=0)


@pytest.mark.slow
def test_embeddings_match_the_torch_backend_on_varied_lengths(model_path: str) -> None:
    texts = ["", "short", "a medium sentence about proteins and cells " * 5, "long text " * 400, "short"]
    torch_model = FlagModel(model_path, devices="cpu", pooling_method="mean")
    onnx_model = FlagModel(model_path, devices="cpu", pooling_method="mean", backend="onnx")
    expected, got = torch_model.encode_corpus(texts), onnx_model.encode_corpus(texts)
    assert got.shape == expected.shape == (5, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
    assert onnx_model.encode("one text").shape == (384,)


@pytest.mark.slow
def test_reranker_scores_match_flagembedding(reranker_path: str, golden: dict[str, Any]) -> None:
    reference = golden["reranker"]
    pairs = [tuple(pair) for pair in reference["pairs"]]
    reranker = FlagReranker(reranker_path, devices="cpu", backend="onnx")
    np.testing.assert_allclose(reranker.compute_score(pairs), reference["compute_score"], atol=TOL, rtol=0)
    np.testing.assert_allclose(reranker.compute_score(pairs, normalize=True), reference["compute_score_normalize"],
                               atol=TOL, rtol=0)
    np.testing.assert_allclose(reranker.compute_score(pairs, max_length=64), reference["compute_score_max_length_64"],
                               atol=TOL, rtol=0)


@pytest.mark.slow
def test_export_is_made_once_and_reused(model_path: str, onnx_cache: Path) -> None:
    FlagModel(model_path, devices="cpu", backend="onnx")
    files = sorted(cache_root().glob("*/model.onnx"))
    assert files and all(f.is_relative_to(onnx_cache) for f in files)
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = FlagModel(model_path, devices="cpu", pooling_method="mean", backend="onnx")  # another runtime, same file
    assert again.encode("x").shape == (384,)
    assert {f: f.stat().st_mtime_ns for f in sorted(cache_root().glob("*/model.onnx"))} == stamps
    # no temporary files left: only the models, their manifests, and the lock files of their writers
    assert not [p for p in cache_root().rglob("*")
                if p.is_file() and p.name not in ("model.onnx", MANIFEST_FILE) and not p.name.endswith(".lock")]


@pytest.mark.slow
def test_a_damaged_export_is_rebuilt_never_used(model_path: str, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 24 item 4: flipped bytes in the cached model.onnx loaded silently (min cosine -0.035 to torch)."""
    file = export_onnx(Path(model_path), Head.BASE)
    verify_folder(file.parent, kinds=["flagstack-onnx-3"])
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the weights
    file.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="flag_core"):
        assert export_onnx(Path(model_path), Head.BASE) == file
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(file.parent) in warnings[0] and "does not match its checksum" in warnings[0]
    verify_folder(file.parent)
    gc.collect()  # no runtime of an earlier test still holds a session on the old file
    texts = ["proteins fold into shapes", "Paris is the capital of France"]
    np.testing.assert_allclose(FlagModel(model_path, devices="cpu", backend="onnx").encode(texts),
                               FlagModel(model_path, devices="cpu").encode(texts), atol=TOL, rtol=0)


def test_what_it_does_not_run_is_refused(model_path: str, tiny_decoder_path: str) -> None:
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        FlagModel(model_path, devices="cpu", backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fp32: drop use_bf16"):
        FlagModel(model_path, devices="cpu", backend="onnx", use_bf16=True)
    with pytest.raises(ValueError, match="CPU only, not on 'cuda:0'"):
        FlagModel(model_path, devices="cuda:0", backend="onnx")
    with pytest.raises(ValueError, match="encoder embedders and cross-encoder rerankers only"):
        FlagLLMReranker(tiny_decoder_path, devices="cpu", backend="onnx")


@pytest.mark.slow  # exports the model to ONNX
def test_adapters_take_the_backend(model_path: str) -> None:
    pytest.importorskip("langchain_core")
    from langchain_flag import FlagEmbeddings

    vectors = FlagEmbeddings(model_name=model_path, backend="onnx", devices="cpu").embed_documents(["a", "b"])
    expected = FlagModel(model_path, devices="cpu").encode_corpus(["a", "b"])
    np.testing.assert_allclose(np.array(vectors), expected, atol=TOL, rtol=0)
    assert os.environ["FLAGSTACK_CACHE"]


def test_cli_encode_with_the_onnx_backend(model_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flag_core.cli import main

    target = tmp_path / "v.npy"
    assert main(["encode", "--model", model_path, "--backend", "onnx", "--output", str(target), "-q", "a", "b"]) == 0
    expected = FlagModel(model_path, devices="cpu").encode_corpus(["a", "b"])
    np.testing.assert_allclose(np.load(target), expected, atol=TOL, rtol=0)
