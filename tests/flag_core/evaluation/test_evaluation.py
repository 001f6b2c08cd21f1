"""Evaluation: metric wiring on hand-made data, bad files, the embedding cache, and real-data figures."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core import FlagModel
from flag_core.evaluation import (
    evaluate_rerank,
    evaluate_retrieval,
    evaluate_run,
    evaluate_sts,
    load_sts_pairs,
    reciprocal_rank_fusion,
    trec_order,
)
from flag_core.evaluation.beir import load_corpus, load_qrels, load_trec_run
from flag_core.evaluation.cache import EmbeddingCache

QRELS = {"q1": {"d1": 1, "d2": 1, "d4": 0}, "q2": {"d5": 1}}
RUN = {"q1": {"d3": 0.9, "d1": 0.8, "d2": 0.1}}


def test_hand_computed_metrics() -> None:
    m = evaluate_run(QRELS, RUN, k_values=[1, 3])
    # q1: ranking d3, d1, d2 with d1, d2 relevant; q2 has no results and counts as 0
    ndcg3 = (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert m["ndcg@3"] == pytest.approx(ndcg3 / 2)
    assert m["ndcg@1"] == 0.0
    assert m["recall@3"] == pytest.approx(1.0 / 2) and m["recall@1"] == 0.0
    assert m["mrr@3"] == pytest.approx(0.5 / 2) and m["mrr@1"] == 0.0
    assert m["map@3"] == pytest.approx((1 / 2 + 2 / 3) / 2 / 2)


def test_missing_and_empty_runs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        empty = evaluate_run(QRELS, {}, k_values=[10])
    assert set(empty.values()) == {0.0}
    assert "2 of 2 judged queries have no results" in caplog.text
    assert evaluate_run(QRELS, {"q2": {"d5": 1.0}}, k_values=[1])["ndcg@1"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no judged query"):
        evaluate_run({}, RUN)
    with pytest.raises(ValueError, match="positive"):
        evaluate_run(QRELS, RUN, k_values=[0])


def test_trec_order_and_fusion() -> None:
    assert trec_order({"a": 1.0, "b": 1.0, "c": 2.0}) == ["c", "b", "a"]  # ties: doc id descending
    fused = reciprocal_rank_fusion([{"q": {"a": 3, "b": 2}}, {"q": {"b": 9, "c": 1}}], top_k=2, k=60)
    assert list(fused["q"]) == ["b", "a"]
    assert fused["q"]["b"] == pytest.approx(1 / 62 + 1 / 61)


@pytest.fixture
def beir(mini_beir: Path) -> Path:
    return mini_beir


def test_retrieval_with_cache_rerank_and_hybrid(beir: Path, mini_model: FlagModel, reranker_path: str,
                                                tmp_path: Path) -> None:
    from flag_core import FlagReranker

    cache = tmp_path / "cache"
    first = evaluate_retrieval(mini_model, beir, cache_dir=cache, k_values=[1, 3])
    assert first.metrics["ndcg@1"] == 1.0 and first.metrics["recall@3"] == 1.0
    assert first.counts == {"queries": 2, "documents": 4, "cache_hits": 0, "cache_misses": 2}
    second = evaluate_retrieval(mini_model, beir, cache_dir=cache, k_values=[1, 3])
    assert second.counts["cache_hits"] == 2 and second.metrics == first.metrics
    assert set(first.data) >= {str(beir / "corpus.jsonl")} and first.versions["flagstack"]
    reranker = FlagReranker(reranker_path, devices="cpu")
    reranked = evaluate_retrieval(mini_model, beir, reranker=reranker, rerank_top_k=3, k_values=[1, 3])
    assert reranked.reranker == reranker_path and 0.0 <= reranked.metrics["ndcg@3"] <= 1.0
    hybrid = evaluate_retrieval(mini_model, beir, hybrid=True, k_values=[1, 3])
    assert hybrid.settings["hybrid"] is True and hybrid.metrics["recall@3"] == 1.0


def test_identity_rerank_equals_the_run(beir: Path, tmp_path: Path) -> None:
    run_file = tmp_path / "run.trec"
    run_file.write_text("q1 Q0 d2 1 3.0 x\nq1 Q0 d1 2 2.0 x\nq2 Q0 d2 1 1.5 x\n", encoding="utf-8")
    result = evaluate_rerank(None, beir, run_file, k_values=[1, 3])
    assert result.metrics == evaluate_run(load_qrels(beir), load_trec_run(run_file), k_values=[1, 3])
    assert result.reranker == "identity" and result.metrics["mrr@3"] == pytest.approx((0.5 + 1) / 2)
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 nope 1 1.0 x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not in the corpus"):
        evaluate_rerank(None, beir, bad)


def test_malformed_files_name_file_and_line(beir: Path, tmp_path: Path) -> None:
    (beir / "qrels" / "dev.tsv").write_text("q1\td1\t1\nq2 d2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dev\.tsv, line 2"):
        load_qrels(beir, "dev")
    with (beir / "corpus.jsonl").open("a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    with pytest.raises(ValueError, match=r"corpus\.jsonl, line 5"):
        load_corpus(beir)
    run = tmp_path / "short.trec"
    run.write_text("q1 Q0 d1 1 1.0\nq1 Q0 d2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"short\.trec, line 2"):
        load_trec_run(run)
    sts = tmp_path / "pairs.csv"
    sts.write_text("a,b,1.0\nc,d,high\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"pairs\.csv, line 2"):
        load_sts_pairs(sts)
    with pytest.raises(FileNotFoundError, match=r"qrels"):
        load_qrels(tmp_path)


def test_cache_hit_miss_and_corruption(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def compute(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return np.arange(len(texts) * 2, dtype=np.float32).reshape(len(texts), 2)

    cache = EmbeddingCache(tmp_path)
    identity = {"model": "m", "side": "passage"}
    first = cache.get_or_compute(identity, ["a", "b"], compute)
    again = cache.get_or_compute(identity, ["a", "b"], compute)
    np.testing.assert_array_equal(first, again)
    assert calls == [2] and (cache.hits, cache.misses) == (1, 1)
    cache.get_or_compute(identity, ["a", "c"], compute)  # other texts: a miss
    cache.get_or_compute({**identity, "model": "n"}, ["a", "b"], compute)  # other model: a miss
    assert calls == [2, 2, 2]
    key = cache.key(identity, ["a", "b"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(key)) == [f"{key}.json", f"{key}.npy"]
    entry = tmp_path / f"{key}.npy"
    entry.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        rebuilt = cache.get_or_compute(identity, ["a", "b"], compute)
    np.testing.assert_array_equal(rebuilt, first)
    assert cache.rebuilt == 1 and "unreadable" in caplog.text and calls[-1] == 2
    np.save(entry, np.zeros((2, 2), dtype=np.float32))  # readable, but not what the checksum says
    cache.get_or_compute(identity, ["a", "b"], compute)
    assert cache.rebuilt == 2 and "checksum" in caplog.text


def test_cache_streams_blocks_to_disk(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    blocks = [np.full((3, 4), i, dtype=np.float32) for i in range(3)]
    vectors = cache.get_or_compute({"m": 1}, [str(i) for i in range(9)], lambda texts: iter(blocks))
    assert vectors.shape == (9, 4) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, np.concatenate(blocks))
    with pytest.raises(ValueError, match="2 vectors for 9 texts"):
        cache.get_or_compute({"m": 2}, [str(i) for i in range(9)], lambda texts: np.zeros((2, 4), np.float32))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(cache.key({"m": 2}, [str(i) for i in range(9)]))]


def test_sts_on_tiny_file(mini_model: FlagModel, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("s1\ts2\tscore\nA dog runs.\tA dog is running.\t4.8\nA cat sleeps.\tStocks fell today.\t0.2\n"
                     "A man cooks.\tA person is cooking.\t4.0\n", encoding="utf-8")
    result = evaluate_sts(mini_model, pairs)
    assert result.counts == {"pairs": 3} and -1 <= result.metrics["spearman"] <= 1
    assert result.metrics["spearman"] == pytest.approx(1.0)


def test_mteb_encoder(mini_model: FlagModel) -> None:
    from flag_core.mteb_encoder import MTEBEncoder

    encoder = MTEBEncoder(mini_model)
    texts = ["a b", "c d", "e"]
    batches = [{"text": texts[:2]}, {"text": texts[2:]}]
    np.testing.assert_array_equal(encoder.encode(batches, prompt_type="document"), mini_model.encode_corpus(texts))
    np.testing.assert_array_equal(encoder.encode(texts, prompt_type="query"), mini_model.encode_queries(texts))
    assert encoder.similarity(encoder.encode(texts), encoder.encode(texts)).shape == (3, 3)
    with pytest.raises(TypeError, match="batch 0"):
        encoder.encode([{"image": 1}])


def test_cli_eval_outputs_and_plot(beir: Path, model_path: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from flag_core.cli import main

    out = tmp_path / "res.json"
    plot = tmp_path / "res.png"
    assert main(["eval", "retrieval", "--model", model_path, "--data", str(beir), "--output", str(out),
                 "--plot", str(plot), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "nDCG" in printed and "@10" in printed
    data: dict[str, Any] = json.loads(out.read_text())
    assert {"ndcg@10", "recall@100", "mrr@10", "map@10"} <= set(data["metrics"])
    assert all(isinstance(v, float) for v in data["metrics"].values())
    assert plot.read_bytes()[:4] == b"\x89PNG"
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 2.0 x\nq2 Q0 d3 1 1.0 x\n", encoding="utf-8")
    second = tmp_path / "rerank.json"
    assert main(["eval", "rerank", "--reranker", "identity", "--data", str(beir), "--run", str(run),
                 "--output", str(second), "-q"]) == 0
    assert json.loads(second.read_text())["metrics"]["ndcg@1"] == 0.5
    both = tmp_path / "both.png"
    assert main(["eval", "plot", str(out), str(second), "--output", str(both)]) == 0
    assert both.stat().st_size > 1000
    assert main(["eval", "rerank", "--reranker", "identity", "--data", str(tmp_path), "--run", str(run)]) == 2


@pytest.mark.parametrize("split", ["test"])
def test_identity_rerank_reproduces_the_bm25_run(shared_data: Path, split: str) -> None:
    result = evaluate_rerank(None, shared_data / "scifact", shared_data / "scifact_rerank" / "bm25_top100_test.trec",
                             split=split)
    assert result.metrics["ndcg@10"] == pytest.approx(0.6762, abs=0.0005)
    assert result.metrics["recall@100"] == pytest.approx(0.9127, abs=0.0005)


@pytest.mark.slow
def test_sts_benchmark_matches_mteb(shared_data: Path, model_path: str) -> None:
    model = FlagModel(model_path, devices="cpu")  # its own mean pooling and max_seq_length 256
    result = evaluate_sts(model, shared_data / "stsb" / "stsb-en-test.csv")
    assert result.counts["pairs"] == 1379
    assert result.metrics["spearman"] == pytest.approx(0.8203, abs=0.002)


def test_nothing_to_evaluate_is_an_error_and_writes_nothing(
    beir: Path, mini_model: FlagModel, model_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flag_core.cli import main

    (beir / "corpus.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"corpus\.jsonl holds no documents"):
        evaluate_retrieval(mini_model, beir)
    output = tmp_path / "out.json"
    code = main(["eval", "retrieval", "--model", model_path, "--data", str(beir), "--output", str(output), "-q"])
    assert code == 2 and "holds no documents" in capsys.readouterr().err and not output.exists()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("a\tb\tnan\nc\td\t1.0\n", r"line 1: score 'nan' is not a finite number"),
        ("a\tb\t3.0\nc\td\t3.0\ne\tf\t3.0\n", "every gold score .* is 3.0"),
    ],
)
def test_sts_scores_that_give_no_correlation(mini_model: FlagModel, tmp_path: Path, rows: str, message: str) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(rows, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        evaluate_sts(mini_model, pairs)


def test_judgements_of_documents_missing_from_the_corpus_are_reported(
    beir: Path, mini_model: FlagModel, caplog: pytest.LogCaptureFixture
) -> None:
    (beir / "qrels" / "test.tsv").write_text("q1\td1\t1\nq1\td9\t1\nq2\td2\t1\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        result = evaluate_retrieval(mini_model, beir, k_values=[1, 3])
    assert "1 of 3 relevance judgements name documents missing from corpus.jsonl (e.g. query q1 -> d9)" in caplog.text
    assert result.counts["judged_missing"] == 1


def test_beir_and_sts_files_with_a_bom_or_not_utf8(beir: Path, mini_model: FlagModel, tmp_path: Path) -> None:
    queries = beir / "queries.jsonl"
    queries.write_bytes(b"\xef\xbb\xbf" + queries.read_bytes())  # a UTF-8 byte-order mark is fine
    assert evaluate_retrieval(mini_model, beir, k_values=[1]).counts["queries"] == 2
    queries.write_text(queries.read_text(encoding="utf-8-sig"), encoding="utf-16")
    with pytest.raises(ValueError, match=r"queries\.jsonl, line 1: not UTF-8 text"):
        evaluate_retrieval(mini_model, beir)


def test_a_failing_plot_leaves_no_json(beir: Path, model_path: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import flag_core.evaluation.plots as plots
    from flag_core.cli import main

    def no_matplotlib() -> None:
        raise ImportError("plots need matplotlib: pip install 'flagstack[eval]'")

    monkeypatch.setattr(plots, "_pyplot", no_matplotlib)
    output = tmp_path / "out.json"
    args = ["eval", "retrieval", "--model", model_path, "--data", str(beir), "--output", str(output),
            "--plot", str(tmp_path / "p.png"), "-q"]
    assert main(args) == 2
    assert "matplotlib" in capsys.readouterr().err and not output.exists()


def test_bge_m3_modes(beir: Path, m3_path: str, mini_model: FlagModel, capsys: pytest.CaptureFixture[str]) -> None:
    from flag_core import BGEM3FlagModel
    from flag_core.cli import main
    from flag_core.retrieval import HybridIndex

    m3 = BGEM3FlagModel(m3_path, devices="cpu")
    hybrid = evaluate_retrieval(m3, beir, k_values=[1, 3], mode="hybrid", weights=[0.5, 0.2, 0.3])
    assert hybrid.settings["mode"] == "hybrid" and hybrid.settings["weights"] == [0.5, 0.2, 0.3]
    corpus = {doc["_id"]: (doc["title"] + " " + doc["text"]).strip() for doc in
              (json.loads(line) for line in (beir / "corpus.jsonl").read_text().splitlines())}
    lines = (beir / "queries.jsonl").read_text().splitlines()
    queries = {q["_id"]: q["text"] for q in map(json.loads, lines)}
    index = HybridIndex(m3, colbert_storage="float32")  # evaluation scores the model's own (float32) vectors
    index.add(list(corpus.values()))
    qrels = load_qrels(beir)
    run = {qid: {list(corpus)[h.position]: h.score for h in index.search(queries[qid], 100, weights=(0.5, 0.2, 0.3))}
           for qid in qrels}
    assert hybrid.metrics == pytest.approx(evaluate_run(qrels, run, k_values=[1, 3]))  # the same ranking, scored
    for mode in ("sparse", "colbert", "sparse+dense"):
        assert 0 <= evaluate_retrieval(m3, beir, k_values=[1], mode=mode).metrics["ndcg@1"] <= 1
    with pytest.raises(ValueError, match="needs a BGE-M3 model"):
        evaluate_retrieval(mini_model, beir, mode="sparse")
    assert main(["eval", "retrieval", "--model", m3_path, "--data", str(beir), "--mode", "colbert", "-q"]) == 0
    assert "nDCG" in capsys.readouterr().out
