"""flagstack quantize: int8 folders for ONNX Runtime and OpenVINO that load like models, judged by task quality
(STS Spearman), written atomically with a manifest verified on load, never replacing a folder that holds an input,
its --check data checked before any work, and refused by the wrong backend."""

from __future__ import annotations

import csv
import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core import FlagModel, FlagReranker
from flag_core.cli import main
from flag_core.evaluation import evaluate_sts
from flag_core.fileio import MANIFEST_FILE, ArtefactError, verify_folder
from flag_core.inference.backends import QUANTIZATION_FILE
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


@pytest.fixture
def fake_int8(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """quantize_model without the ONNX export and quantization (seconds of work): the int8 file is a stand-in,
    everything around it (checks, staging, manifest, metadata, replacing) is the real code."""
    from flag_core.inference.backends.onnx import ONNX

    written: list[Path] = []

    def fake(path: Path, head: Any, mode: str, batches: Any, file: Path, trust_remote_code: bool) -> None:
        file.write_bytes(b"int8 weights " * 1000)
        written.append(file)

    monkeypatch.setattr(ONNX, "quantize", fake)  # the ONNX backend's quantization step
    return written


def flip(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def test_overwrite_never_deletes_an_input_inside_the_output(model_path: str, tmp_path: Path, fake_int8: list[Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24 item 1: `quantize --model q1/src --output q1 --overwrite` deleted q1/src."""
    q1 = quantize_model(model_path, "onnx", "dynamic", output=tmp_path / "q1")
    shutil.copytree(model_path, q1 / "src")
    with pytest.raises(ValueError, match="holds the input"):
        quantize_model(q1 / "src", "onnx", "dynamic", output=q1, overwrite=True)
    assert (q1 / "src" / "config.json").is_file() and len(fake_int8) == 1  # refused before any work
    code = main(["quantize", "--model", str(q1 / "src"), "--backend", "onnx", "--mode", "dynamic", "--output",
                 str(q1), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and "holds the input" in err and len(err.strip().splitlines()) == 1
    assert (q1 / "src" / "config.json").is_file()
    shutil.rmtree(q1 / "src")
    (q1 / "texts.txt").write_text("a calibration text\nanother one\n", encoding="utf-8")  # data read by the run
    code = main(["quantize", "--model", model_path, "--backend", "onnx", "--calibration", str(q1 / "texts.txt"),
                 "--output", str(q1), "--overwrite"])
    assert code == 2 and "holds the input" in capsys.readouterr().err and (q1 / "texts.txt").is_file()
    (q1 / "texts.txt").unlink()
    assert quantize_model(model_path, "onnx", "dynamic", output=q1, overwrite=True) == q1  # an earlier output: ok
    verify_folder(q1, kinds=["quantize"])
    with pytest.raises(FileExistsError, match="--overwrite"):
        quantize_model(model_path, "onnx", "dynamic", output=q1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not flagstack's", encoding="utf-8")
    with pytest.raises(ValueError, match="flagstack replaces only its own outputs"):
        quantize_model(model_path, "onnx", "dynamic", output=tmp_path / "mine", overwrite=True)


def test_the_output_is_staged_with_a_manifest_and_the_usual_mode(model_path: str, tmp_path: Path,
                                                                 fake_int8: list[Path]) -> None:
    """Issue 24 item 10: a killed quantize left its staging folder forever; outputs were made 0700."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".int8.{int(dead.stdout)}.abcd1234.staging"  # left by a quantize killed mid-write
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half written" * 1000)
    folder = quantize_model(model_path, "onnx", "dynamic", output=tmp_path / "int8")
    manifest = verify_folder(folder, kinds=["quantize"])
    assert {"model.onnx", QUANTIZATION_FILE, "config.json", "tokenizer.json"} <= set(manifest["files"])
    assert json.loads((folder / QUANTIZATION_FILE).read_text())["file"] == "model.onnx"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert stat.S_IMODE(folder.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8", "plain"]  # the stale staging folder is gone


def test_a_damaged_or_incomplete_quantized_folder_is_one_clear_error(model_path: str, tmp_path: Path,
                                                                     fake_int8: list[Path],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24 items 4 and 10: a damaged int8 file loaded silently (or gave a traceback), a missing one gave a
    traceback; the metadata is covered by the manifest; a folder without its manifest is refused by name."""
    folder = quantize_model(model_path, "onnx", "dynamic", output=tmp_path / "int8")
    cases = {
        "flipped": (lambda f: flip(f / "model.onnx"), r"model\.onnx does not match its checksum"),
        "truncated": (lambda f: (f / "model.onnx").write_bytes(b"int8"), r"model\.onnx has 4 bytes"),
        "missing": (lambda f: (f / "model.onnx").unlink(), r"model\.onnx is missing"),
        "metadata": (lambda f: (f / QUANTIZATION_FILE).write_text('{"backend": "onnx", "file": "../x.onnx"}'),
                     QUANTIZATION_FILE),
        "no manifest": (lambda f: (f / MANIFEST_FILE).unlink(), f"no {MANIFEST_FILE}.*older flagstack"),
    }
    for name, (damage, message) in cases.items():
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        damage(copy)
        with pytest.raises(ArtefactError, match=message):
            FlagModel(str(copy), devices="cpu", backend="onnx")
        code = main(["encode", "--model", str(copy), "--backend", "onnx", "--output", str(tmp_path / "v.npy"),
                     "-q", "a"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and str(copy) in err, (name, err)
    # whole, but not a model ONNX Runtime can read (the stand-in): one error naming the folder, no traceback
    with pytest.raises(ArtefactError, match=r"quantized model could not be loaded with backend='onnx'"):
        FlagModel(str(folder), devices="cpu", backend="onnx")


def test_check_data_is_validated_before_any_work(model_path: str, tmp_path: Path, mini_beir: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24 item 10: --check data was read only after 13-15 s of quantizing (the output already written), and
    --check without a path skipped the check silently."""
    import flag_core.inference.backends.quantize as quantize_module

    def no_work(*args: Any, **kwargs: Any) -> Path:
        raise AssertionError("quantized before checking the --check data")

    monkeypatch.setattr(quantize_module, "quantize_model", no_work)
    texts = tmp_path / "texts.txt"
    texts.write_text("one text\nanother\n", encoding="utf-8")
    two_columns = tmp_path / "sts.csv"
    two_columns.write_text("a,b\nc,d\n", encoding="utf-8")
    no_qrels = tmp_path / "beir"
    shutil.copytree(mini_beir, no_qrels)
    shutil.rmtree(no_qrels / "qrels")
    strings = tmp_path / "strings.jsonl"
    strings.write_text('"a text"\n"another"\n', encoding="utf-8")
    base = ["quantize", "--model", model_path, "--backend", "onnx", "--mode", "dynamic", "--output",
            str(tmp_path / "out")]
    cases = [
        (["--check", str(tmp_path / "nothing.csv")], "no such file or folder"),
        (["--check", str(two_columns)], "expected 3 columns"),
        (["--check", str(no_qrels)], "qrels"),
        (["--reranker", "--check", str(texts)], "jsonl files of"),
        (["--reranker", "--check", str(strings)], "holds texts"),
        (["--check", str(mini_beir), "--tolerance", "-0.1"], "--tolerance"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (extra, err)
    with pytest.raises(SystemExit) as exited:
        main([*base, "--check"])
    assert exited.value.code == 2 and "--check" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_good_check_data_passes(shared_data: Path, mini_beir: Path, sts_sample: Path, tmp_path: Path) -> None:
    from flag_core.cli.quantize import check_data

    assert check_data([str(sts_sample), str(mini_beir), str(shared_data / "scifact")], False, None) == []
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "q1", "passage": "p1"}\n{"query": "q2", "passage": "p2"}\n', encoding="utf-8")
    assert check_data([str(pairs)], True, None) == [("q1", "p1"), ("q2", "p2")]
    assert check_data([str(pairs)], True, 1) == [("q1", "p1")]


@pytest.mark.slow
def test_onnx_dynamic_int8_folder(model_path: str, tmp_path: Path) -> None:
    folder = quantize_model(model_path, "onnx", "dynamic", output=tmp_path / "int8")
    meta = json.loads((folder / "flagstack_quantization.json").read_text())
    assert meta["backend"] == "onnx" and meta["mode"] == "int8-dynamic" and (folder / "model.onnx").is_file()
    assert (folder / "tokenizer.json").is_file() and not list(folder.glob("*.safetensors"))
    assert {"model.onnx", QUANTIZATION_FILE} <= set(verify_folder(folder, kinds=["quantize"])["files"])
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    flip(damaged / "model.onnx")  # a real int8 file with one byte changed: refused, never other vectors
    with pytest.raises(ArtefactError, match=r"model\.onnx does not match its checksum"):
        FlagModel(str(damaged), devices="cpu", backend="onnx")
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
