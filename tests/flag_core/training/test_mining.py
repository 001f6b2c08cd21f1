"""Hard-negative mining never returns positives, the query, or duplicates, and reports short lists."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from flag_core import FlagModel, FlagReranker
from flag_core.training.data import TrainExample
from flag_core.training.mining import add_teacher_scores, mine_hard_negatives

POOL = [f"passage about topic {i % 7} number {i}" for i in range(60)] + ["what is topic 3?"]


def test_mined_negatives_are_clean(mini_model: FlagModel) -> None:
    examples = [
        TrainExample("what is topic 3?", ["passage about topic 3 number 3", "passage about topic 3 number 10"]),
        TrainExample("number 5", ["passage about topic 5 number 5"], ["old negative"], [1.0], [0.0]),
    ]
    pool = POOL + POOL[:10]  # duplicates in the pool are dropped
    mined, report = mine_hard_negatives(mini_model, examples, pool, (2, 40), 10, seed=1)
    for before, after in zip(examples, mined, strict=True):
        assert len(after.neg) == 10 and len(set(after.neg)) == 10
        assert not set(after.neg) & set(before.pos) and before.query not in after.neg
        assert after.pos == before.pos and after.pos_scores is None and after.neg_scores is None
    again, _ = mine_hard_negatives(mini_model, examples, pool, (2, 40), 10, seed=1)
    assert again == mined  # seeded
    assert report.short == 0 and report.pool == len(POOL)


def test_given_pool_vectors_mine_the_same(mini_model: FlagModel) -> None:
    examples = [TrainExample("what is topic 3?", ["passage about topic 3 number 3"])]
    pool = POOL + POOL[:10]
    vectors = np.asarray(mini_model.encode(pool))
    mined, _ = mine_hard_negatives(mini_model, examples, pool, (2, 40), 10, seed=1)
    given, report = mine_hard_negatives(mini_model, examples, pool, (2, 40), 10, seed=1, pool_vectors=vectors)
    assert given == mined and report.pool == len(POOL)
    with pytest.raises(ValueError, match=r"pool_vectors has shape \(71, 384\); expected \(72, 384\)"):
        mine_hard_negatives(mini_model, examples, [*pool, "one more"], (2, 40), 10, pool_vectors=vectors)
    with pytest.raises(ValueError, match="needs the candidate_pool"):
        mine_hard_negatives(mini_model, examples, None, (2, 40), 10, pool_vectors=vectors)


def test_too_few_candidates_gives_fewer_not_positives(mini_model: FlagModel,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    examples = [TrainExample("alpha", ["alpha one"], ["beta"]), TrainExample("gamma", ["gamma one"])]
    with caplog.at_level(logging.WARNING):
        mined, report = mine_hard_negatives(mini_model, examples, None, (0, 10), 5)
    pool = {"alpha one", "beta", "gamma one"}
    for ex in mined:
        assert set(ex.neg) <= pool - set(ex.pos) and len(ex.neg) == len(set(ex.neg)) < 5
    assert report.short == 2 and "fewer than 5 negatives" in caplog.text
    with pytest.raises(ValueError, match="range_for_sampling"):
        mine_hard_negatives(mini_model, examples, None, (10, 5))
    with pytest.raises(ValueError, match="negative_number"):
        mine_hard_negatives(mini_model, examples, None, (0, 5), 0)


def test_teacher_scores(reranker_path: str) -> None:
    reranker = FlagReranker(reranker_path, devices="cpu")
    scored = add_teacher_scores(reranker, [TrainExample("q", ["p1", "p2"], ["n1"])])
    assert scored[0].pos_scores == pytest.approx(reranker.compute_score([("q", "p1"), ("q", "p2")]), abs=1e-6)
    assert scored[0].neg_scores == pytest.approx(reranker.compute_score([("q", "n1")]), abs=1e-6)


def test_mine_never_writes_over_its_input_and_needs_overwrite(model_path: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`mine --output` is checked by the one rule (fileio.check_replaceable) before any work: never the --input
    file or the candidate pool; an existing file only with --overwrite."""
    from flag_core.cli import main
    from flag_core.training.data import read_examples, write_examples

    data = tmp_path / "train.jsonl"
    write_examples(data, [TrainExample("what is topic 3?", ["passage about topic 3 number 3"])])
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(POOL) + "\n", encoding="utf-8")
    before, pool_before = data.read_bytes(), pool.read_bytes()
    base = ["mine", "--model", model_path, "--input", str(data), "--candidate-pool", str(pool),
            "--range-for-sampling", "0-20", "--negative-number", "3", "-q"]
    assert main([*base, "--output", str(data)]) == 2
    assert main([*base, "--output", str(pool), "--overwrite"]) == 2
    assert "holds the input" in capsys.readouterr().err
    assert data.read_bytes() == before and pool.read_bytes() == pool_before
    out = tmp_path / "mined.jsonl"
    out.write_text("earlier\n", encoding="utf-8")
    assert main([*base, "--output", str(out)]) == 2 and "--overwrite" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "earlier\n"
    assert main([*base, "--output", str(out), "--overwrite"]) == 0
    assert len(read_examples(out)[0].neg) == 3
