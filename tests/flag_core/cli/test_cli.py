"""The flagstack command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flag_core.cli import main


def test_encode_prints_similarities(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["encode", "-q"]) == 0
    out = capsys.readouterr().out
    assert "pooling=mean" in out and "[4]" in out and "1.0000" in out


def test_encode_writes_vectors(tmp_path: Path, model_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out" / "v.npy"
    texts = tmp_path / "texts.txt"
    texts.write_text("first line\n\nsecond line\n", encoding="utf-8")
    assert main(["encode", "--model", model_path, "--file", str(texts), "--output", str(target), "-q"]) == 0
    vectors = np.load(target)
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert not [p for p in target.parent.iterdir() if p.name != "v.npy"]  # no temp file left


def test_info(capsys: pytest.CaptureFixture[str], model_path: str) -> None:
    assert main(["info", "--model", model_path]) == 0
    out = capsys.readouterr().out
    assert "transformers" in out and "pooling used" in out and "384" in out


def test_errors_are_reported_not_raised(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["encode", "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_devices_and_damaged_models_give_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], model_copy: object
) -> None:
    import torch

    if not torch.cuda.is_available():
        assert main(["encode", "hi", "--device", "cuda:0", "-q"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "device 'cuda:0' is not available" in err
    folder = Path(model_copy("damaged"))  # type: ignore[operator]
    (folder / "config.json").write_text("[1]")
    assert main(["encode", "hi", "--model", str(folder), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{folder / 'config.json'} holds a JSON list" in err
    (folder / "config.json").write_text((Path(model_copy("source")) / "config.json").read_text())  # type: ignore[operator]
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["encode", "hi", "--model", str(folder), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(folder) in err and "truncated or corrupt" in err


def test_a_lone_surrogate_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["encode", "fine", "bad \udcff text", "-q"]) == 2
    assert "sentences[1] holds '\\udcff' at position 4" in capsys.readouterr().err


def test_encode_writes_bge_m3_outputs(tmp_path: Path, m3_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from flag_core import BGEM3FlagModel

    texts = ["what is a panda?", "The giant panda is a bear species endemic to China; it eats bamboo."]
    dense, sparse, colbert = tmp_path / "d.npy", tmp_path / "s.jsonl", tmp_path / "c.npz"
    assert main(["encode", *texts, "--model", m3_path, "--output", str(dense), "--sparse-output", str(sparse),
                 "--colbert-output", str(colbert), "-q"]) == 0
    expected = BGEM3FlagModel(m3_path, devices="cpu").encode_corpus(texts, return_sparse=True,
                                                                     return_colbert_vecs=True)
    np.testing.assert_allclose(np.load(dense), expected["dense_vecs"], atol=1e-6)
    rows = [json.loads(line) for line in sparse.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1]
    assert rows[1]["lexical_weights"] == pytest.approx(expected["lexical_weights"][1])
    with np.load(colbert) as data:
        offsets = data["offsets"]
        np.testing.assert_allclose(data["vectors"][offsets[1]:offsets[2]], expected["colbert_vecs"][1], atol=1e-6)
    assert "BGE-M3 outputs" in capsys.readouterr().out
