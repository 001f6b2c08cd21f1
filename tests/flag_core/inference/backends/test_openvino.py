"""backend="openvino": FlagEmbedding's golden vectors and scores within 1e-5 in fp32, bf16 close, conversion made
once, and a failed conversion falls back to torch with a message (never other vectors)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flag_core import FlagModel, FlagReranker
from flag_core.fileio import verify_folder
from flag_core.inference.kinds import Head
from flag_core.inference.loading import load_model

pytest.importorskip("openvino", reason="needs the openvino extra")

TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("flagstack-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLAGSTACK_CACHE", str(folder))
        yield folder


@pytest.mark.slow
def test_golden_vectors_and_scores(model_path: str, reranker_path: str, golden: dict[str, Any], cache: Path) -> None:
    reference = golden["embedder"]["cls"]
    settings = reference["settings"]
    model = FlagModel(model_path, pooling_method="cls", devices="cpu", backend="openvino", batch_size=4,
                      query_instruction_for_retrieval=settings["query_instruction_for_retrieval"],
                      query_max_length=512, passage_max_length=512)
    np.testing.assert_allclose(model.encode_queries(golden["texts"]), reference["encode_queries"], atol=TOL, rtol=0)
    np.testing.assert_allclose(model.encode_corpus(golden["texts"]), reference["encode_corpus"], atol=TOL, rtol=0)
    pairs = [tuple(pair) for pair in golden["reranker"]["pairs"]]
    reranker = FlagReranker(reranker_path, devices="cpu", backend="openvino")
    np.testing.assert_allclose(reranker.compute_score(pairs), golden["reranker"]["compute_score"], atol=TOL, rtol=0)
    files = sorted(cache.glob("openvino/*/model.xml"))
    assert len(files) == 2  # one conversion per folder and head, kept
    stamps = [f.stat().st_mtime_ns for f in files]
    FlagModel(model_path, pooling_method="mean", devices="cpu", backend="openvino").encode("again")
    assert [f.stat().st_mtime_ns for f in sorted(cache.glob("openvino/*/model.xml"))] == stamps


@pytest.mark.slow
def test_bf16_is_close(model_path: str) -> None:
    texts = ["a short text", "a medium sentence about proteins and cells " * 5]
    exact = FlagModel(model_path, devices="cpu").encode_corpus(texts)
    fast = FlagModel(model_path, devices="cpu", backend="openvino", use_bf16=True).encode_corpus(texts)
    assert float((exact * fast).sum(axis=1).min()) > 0.999


@pytest.mark.slow
def test_a_damaged_conversion_is_rebuilt_never_used(model_path: str, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Issue 24 items 4 and 10: a truncated cached model.bin made every later run fall back to torch (flipped
    bytes gave NaN vectors); cache folders were made 0700."""
    from flag_core.inference.backends.openvino import export_openvino

    file = export_openvino(Path(model_path), Head.BASE)
    plain = tmp_path / "plain"
    plain.mkdir()
    assert stat.S_IMODE(file.parent.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    weights = file.parent / "model.bin"
    damaged = weights.with_name("damaged.bin")  # a new file in its place: a model loaded earlier may still map the old
    damaged.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    os.replace(damaged, weights)
    with caplog.at_level(logging.WARNING, logger="flag_core"):
        assert export_openvino(Path(model_path), Head.BASE) == file
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(weights) in warnings[0] and "rebuilding" in warnings[0], warnings
    verify_folder(file.parent)
    texts = ["proteins fold into shapes", "Paris is the capital of France"]
    model = load_model(Path(model_path), Head.BASE, "cpu", torch.float32, padding_side="right", backend="openvino")
    assert type(model.model).__name__ == "OpenVinoModel"  # the rebuilt entry runs, not torch
    np.testing.assert_allclose(FlagModel(model_path, devices="cpu", backend="openvino").encode(texts),
                               FlagModel(model_path, devices="cpu").encode(texts), atol=TOL, rtol=0)


def test_a_failed_conversion_falls_back_to_torch(model_path: str, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    import shutil

    import flag_core.inference.backends.openvino as ov_backend

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the tracer met an operation it cannot convert")

    monkeypatch.setattr(ov_backend.OPENVINO, "export", broken)
    folder = tmp_path / "copy"  # a folder no other test has loaded, so the conversion really runs
    shutil.copytree(model_path, folder)
    with caplog.at_level(logging.WARNING, logger="flag_core"):
        model = FlagModel(str(folder), devices="cpu", backend="openvino")
    assert "running it with backend='torch' instead" in caplog.text and "cannot convert" in caplog.text
    np.testing.assert_allclose(model.encode(["x", "y"]), FlagModel(str(folder), devices="cpu").encode(["x", "y"]),
                               atol=1e-6)


def test_a_fallback_is_said_once_per_model_and_backend(model_path: str, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """Issue 24 item 4: every load retried the conversion and logged again; now one warning naming the cause, and
    later loads of that model in this process go straight to torch."""
    import flag_core.inference.backends.openvino as ov_backend

    calls: list[Path] = []

    def broken(path: Path, *args: Any, **kwargs: Any) -> Any:
        calls.append(path)
        raise RuntimeError("the tracer met an operation it cannot convert")

    monkeypatch.setattr(ov_backend.OPENVINO, "export", broken)
    folder = tmp_path / "copy"
    shutil.copytree(model_path, folder)
    with caplog.at_level(logging.WARNING, logger="flag_core"):
        for padding_side in ("right", "left"):  # two loads (two cache keys) of the same model and backend
            loaded = load_model(folder, Head.BASE, "cpu", torch.float32, padding_side=padding_side,
                                backend="openvino")
            assert isinstance(loaded.model, torch.nn.Module)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "RuntimeError: the tracer met an operation it cannot convert" in warnings[0]
    assert str(folder) in warnings[0] and "backend='openvino'" in warnings[0]
    assert len(calls) == 1


def test_the_shape_cache_is_bounded(model_path: str) -> None:
    """OpenVINO keeps kernels per input shape; its default bound let a server's memory grow by ~380 MB under an
    overload of varied batch shapes (int8 + bf16), so flagstack compiles with a smaller one."""
    from flag_core.inference.backends.openvino import SHAPE_CACHE_ENTRIES

    model = FlagModel(model_path, devices="cpu", backend="openvino")
    assert model.runtime.loaded.model.properties["CPU_RUNTIME_CACHE_CAPACITY"] == SHAPE_CACHE_ENTRIES < 5000
    assert model.encode_corpus(["one text"]).shape == (1, 384)
