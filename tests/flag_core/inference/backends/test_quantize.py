"""flagstack quantize: int8 folders for ONNX Runtime and OpenVINO that load like models, judged by task quality
(STS Spearman), written atomically, and refused by the wrong backend."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flag_core import FlagModel, FlagReranker
from flag_core.evaluation import evaluate_sts
from flag_core.inference.backends.quantize import quantize_model

pytest.importorskip("onnxruntime", reason="needs the onnx extra")

CALIBRATION = [f"calibration sentence {i} about {topic}" for i, topic in
               enumerate(["proteins", "cells", "pandas", "bamboo", "Paris", "JSON", "rivers", "genes"] * 4)]


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("flagstack-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLAGSTACK_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def sts_rows(shared_data: Path) -> list[list[str]]:
    with open(shared_data / "stsb" / "stsb-en-test.csv", encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def sts_calibration(sts_rows: list[list[str]]) -> list[str]:
    """The user's own kind of text: STS-B sentences that are not in the checked sample."""
    return [row[0] for row in sts_rows[1000:1128]]


@pytest.fixture(scope="module")
def sts_sample(sts_rows: list[list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = sts_rows[:300]
    target = tmp_path_factory.mktemp("sts") / "sts.csv"
    with open(target, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return target


@pytest.mark.slow
def test_onnx_dynamic_int8_folder(model_path: str, tmp_path: Path) -> None:
    folder = quantize_model(model_path, "onnx", "dynamic", output=tmp_path / "int8")
    meta = json.loads((folder / "flagstack_quantization.json").read_text())
    assert meta["backend"] == "onnx" and meta["mode"] == "int8-dynamic" and (folder / "model.onnx").is_file()
    assert (folder / "tokenizer.json").is_file() and not list(folder.glob("*.safetensors"))
    model = FlagModel(str(folder), devices="cpu", backend="onnx")
    assert model.pooling_method == "mean" and model.encode(["a", "b"]).shape == (2, 384)  # its ST files came along
    with pytest.raises(ValueError, match=r"holds a int8-dynamic onnx model.*backend='onnx'"):
        FlagModel(str(folder), devices="cpu", backend="openvino")
    with pytest.raises(ValueError, match="quantized model written by flagstack quantize"):
        FlagModel(str(folder), devices="cpu")
    with pytest.raises(FileExistsError, match="--overwrite"):
        quantize_model(model_path, "onnx", "dynamic", output=folder)
    with pytest.raises(ValueError, match="static quantization calibrates on texts"):
        quantize_model(model_path, "onnx", "static")
    with pytest.raises(ValueError, match="mode static"):
        quantize_model(model_path, "openvino", "dynamic")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "onnx"])
def test_static_int8_keeps_the_sts_score(model_path: str, sts_sample: Path, sts_calibration: list[str],
                                         backend: str) -> None:
    pytest.importorskip(backend if backend == "onnx" else "nncf", reason=f"needs the {backend} extra")
    folder = quantize_model(model_path, backend, "static", sts_calibration)
    assert quantize_model(model_path, backend, "static", sts_calibration) == folder  # made once, then reused
    fp32 = evaluate_sts(FlagModel(model_path, devices="cpu"), sts_sample).metrics["spearman"]
    int8 = evaluate_sts(FlagModel(str(folder), devices="cpu", backend=backend), sts_sample).metrics["spearman"]
    assert abs(int8 - fp32) / fp32 < 0.005, (fp32, int8)  # judged by the task, not by cosine alone
    texts = ["proteins fold into shapes", "Paris is the capital of France"]
    vectors = FlagModel(str(folder), devices="cpu", backend=backend).encode(texts)
    assert float((vectors * FlagModel(model_path, devices="cpu").encode(texts)).sum(axis=1).min()) > 0.95


@pytest.mark.slow
def test_reranker_int8_and_the_cli(model_path: str, reranker_path: str, sts_sample: Path, sts_calibration: list[str],
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flag_core.cli import main

    pairs = [(f"question about {t}", f"a passage about {t} and more") for t in CALIBRATION]
    folder = quantize_model(reranker_path, "onnx", "static", pairs, cross_encoder=True)
    scores = np.array(FlagReranker(str(folder), devices="cpu", backend="onnx").compute_score(pairs))
    exact = np.array(FlagReranker(reranker_path, devices="cpu").compute_score(pairs))
    assert np.corrcoef(scores, exact)[0, 1] > 0.99
    calibration = tmp_path / "texts.txt"
    calibration.write_text("\n".join(sts_calibration), encoding="utf-8")
    code = main(["quantize", "--model", model_path, "--backend", "onnx", "--calibration", str(calibration),
                 "--output", str(tmp_path / "q"), "--check", str(sts_sample)])
    out = capsys.readouterr().out
    assert code == 0 and "min cosine" in out and "STS Spearman sts.csv" in out and "within the tolerance" in out
    code = main(["quantize", "--model", model_path, "--backend", "onnx", "--mode", "dynamic", "--output",
                 str(tmp_path / "d"), "--check", str(sts_sample), "--tolerance", "0.000001"])
    assert code == 3 and "lose more than the tolerance" in capsys.readouterr().err  # said loudly, exit code 3
