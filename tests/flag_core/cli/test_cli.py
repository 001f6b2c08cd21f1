"""The flagstack command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    # no temp file left; the checksum file beside it
    assert sorted(p.name for p in target.parent.iterdir()) == ["v.npy", "v.npy.sha256"]


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


@pytest.mark.parametrize("content", ["", "\n  \n\t\n"])
def test_an_empty_input_file_is_an_error_never_the_samples(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    texts = tmp_path / "texts.txt"
    texts.write_text(content, encoding="utf-8")
    target = tmp_path / "v.npy"
    assert main(["encode", "--file", str(texts), "--output", str(target), "-q"]) == 2
    assert f"{texts} holds no text" in capsys.readouterr().err
    assert not target.exists()
    monkeypatch.setattr("sys.stdin", io.StringIO(content))
    assert main(["encode", "--file", "-", "--output", str(target), "-q"]) == 2
    assert "stdin holds no text" in capsys.readouterr().err
    assert not target.exists()


def test_encode_outputs_follow_the_overwrite_rule_and_carry_checksums(
    tmp_path: Path, model_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from flag_core import FlagModel
    from flag_core.fileio import verify_file

    texts = tmp_path / "texts.txt"
    texts.write_text("first line\nsecond line\n", encoding="utf-8")
    target = tmp_path / "v.npy"
    assert main(["encode", "--model", model_path, "--file", str(texts), "--output", str(target), "-q"]) == 0
    verify_file(target)
    expected = FlagModel(model_path, devices="cpu").encode_corpus(["first line", "second line"])
    np.testing.assert_allclose(np.load(target), expected, atol=1e-6)
    before = target.read_bytes()
    assert main(["encode", "other", "--model", model_path, "--output", str(target), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err and target.read_bytes() == before
    assert main(["encode", "--model", model_path, "--file", str(texts), "--output", str(texts), "--overwrite"]) == 2
    assert "holds the input" in capsys.readouterr().err and texts.read_text().startswith("first line")
    assert main(["encode", "x", "--model", model_path, "--output", str(Path(model_path) / "model.safetensors"),
                 "--overwrite", "-q"]) == 2
    assert "inside the input" in capsys.readouterr().err
    assert main(["encode", "other", "--model", model_path, "--output", str(target), "--overwrite", "-q"]) == 0
    verify_file(target)
    assert np.load(target).shape == (1, 384)


def test_eval_with_a_real_reranker_folder(
    mini_beir: Path, model_path: str, reranker_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both reranker paths of `eval` run a real cross-encoder, and --rerank-max-length is the reranker's alone."""
    from flag_core import FlagModel, FlagReranker
    from flag_core.evaluation import EvalResult, evaluate_rerank, evaluate_retrieval

    run = mini_beir.parent / "run.trec"
    out = tmp_path / "rerank.json"
    assert main(["eval", "rerank", "--reranker", reranker_path, "--data", str(mini_beir), "--run", str(run),
                 "--rerank-max-length", "64", "--output", str(out), "-q"]) == 0
    assert "nDCG" in capsys.readouterr().out
    api = evaluate_rerank(FlagReranker(reranker_path, devices="cpu", max_length=64), mini_beir, run)
    saved = EvalResult.load(out)
    assert saved.metrics == pytest.approx(api.metrics) and saved.settings["max_length"] == 64

    out = tmp_path / "retrieval.json"
    assert main(["eval", "retrieval", "--model", model_path, "--data", str(mini_beir), "--max-length", "64",
                 "--reranker", reranker_path, "--rerank-max-length", "300", "--rerank-top-k", "3",
                 "--output", str(out), "-q"]) == 0
    assert "max length 64" in capsys.readouterr().out
    saved = EvalResult.load(out)
    assert saved.settings["passage_max_length"] == 64 and saved.settings["reranker_max_length"] == 300
    api = evaluate_retrieval(FlagModel(model_path, devices="cpu", query_max_length=64, passage_max_length=64),
                             mini_beir, reranker=FlagReranker(reranker_path, devices="cpu", max_length=300),
                             rerank_top_k=3)
    assert saved.metrics == pytest.approx(api.metrics)


def test_results_json_is_checked_when_plotted(mini_beir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import json

    run = mini_beir.parent / "run.trec"
    out = tmp_path / "res.json"
    assert main(["eval", "rerank", "--reranker", "identity", "--data", str(mini_beir), "--run", str(run),
                 "--output", str(out), "-q"]) == 0
    document = json.loads(out.read_text())
    document["metrics"]["ndcg@10"] = 0.99  # an edited figure
    out.write_text(json.dumps(document))
    plot = tmp_path / "p.png"
    assert main(["eval", "plot", str(out), "--output", str(plot)]) == 2
    assert f"{out} does not match its checksum" in capsys.readouterr().err and not plot.exists()


def test_outputs_never_land_on_an_input_or_a_users_file(
    tmp_path: Path, model_path: str, model_copy: Any, mini_beir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a hostile pass found: merge --plot and mine --output over a model's weights, a run whose queries are
    all unjudged giving zeros with exit 0, unreadable --file inputs without a name."""
    import json

    copy = Path(model_copy("copy"))
    weights = (copy / "model.safetensors").read_bytes()
    sts = tmp_path / "sts.csv"
    sts.write_text("a,b,1\nc,d,2\ne,f,3\n", encoding="utf-8")
    assert main(["merge", "--models", model_path, str(copy), "--weights", "0.5", "0.5", "--output",
                 str(tmp_path / "m"), "--plot", str(copy / "model.safetensors"), "--sweep-sts", str(sts)]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": ["n"]}) + "\n", encoding="utf-8")
    assert main(["mine", "--model", str(copy), "--input", str(train), "--output", str(copy / "model.safetensors"),
                 "--overwrite", "-q"]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert (copy / "model.safetensors").read_bytes() == weights and not (tmp_path / "m").exists()
    run = tmp_path / "other.trec"
    run.write_text("999999 Q0 d1 1 3.0 x\n", encoding="utf-8")
    assert main(["eval", "rerank", "--reranker", "identity", "--data", str(mini_beir), "--run", str(run), "-q"]) == 2
    assert "is judged" in capsys.readouterr().err
    assert main(["encode", "--file", str(tmp_path), "-q"]) == 2
    assert f"{tmp_path} is not a file" in capsys.readouterr().err
    binary = tmp_path / "utf16.txt"
    binary.write_text("some text", encoding="utf-16")
    assert main(["encode", "--file", str(binary), "-q"]) == 2
    assert f"{binary}, line 1: not UTF-8" in capsys.readouterr().err
