"""Fine-tuning on CPU with the test model: the loss goes down on real data and the checkpoints load back
into flagstack and sentence-transformers with the pooling they were trained with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flag_core import FlagModel, FlagReranker
from flag_core.evaluation.beir import load_corpus, load_qrels, load_queries
from flag_core.training.data import TrainExample
from flag_core.training.trainer import (
    EmbedderTrainingArgs,
    GroupDataset,
    RerankerTrainingArgs,
    embedder_loss,
    reranker_loss,
    train_embedder,
    train_reranker,
)


@pytest.fixture(scope="module")
def scifact_examples(shared_data: Path) -> list[TrainExample]:
    """12 real SciFact train claims with their cited abstract, and 3 other abstracts as negatives."""
    folder = shared_data / "scifact"
    qrels, queries = load_qrels(folder, "train"), load_queries(folder)
    corpus = {d: doc["full"][:600] for d, doc in load_corpus(folder).items()}
    chosen = list(qrels.items())[:12]
    others = [corpus[d] for _, judged in list(qrels.items())[100:140] for d in judged][:36]
    return [
        TrainExample(queries[q], [corpus[next(iter(judged))]], others[3 * i : 3 * i + 3])
        for i, (q, judged) in enumerate(chosen)
    ]


def _embedding_loss(model: FlagModel, examples: list[TrainExample]) -> float:
    queries = torch.as_tensor(model.encode_queries([e.query for e in examples]))
    passages = torch.as_tensor(model.encode_corpus([p for e in examples for p in (e.pos[0], *e.neg)]))
    return float(embedder_loss(queries, passages, 0.02, True, None))


@pytest.mark.slow
def test_embedder_loss_goes_down_and_checkpoint_loads_everywhere(
    model_path: str, scifact_examples: list[TrainExample], tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    settings = {"devices": "cpu", "pooling_method": "cls", "query_max_length": 64, "passage_max_length": 128}
    before = _embedding_loss(FlagModel(model_path, **settings), scifact_examples)
    args = EmbedderTrainingArgs(
        output_dir=str(tmp_path / "embedder"), epochs=3, batch_size=4, train_group_size=4, learning_rate=3e-5,
        pooling="cls", query_max_length=64, passage_max_length=128, logging_steps=1, save_steps=6,
        show_progress=False,
    )
    result = train_embedder(model_path, scifact_examples, args)
    assert result.steps == 9 and len(result.losses) == 9
    tuned = FlagModel(result.output_dir, **settings)
    after = _embedding_loss(tuned, scifact_examples)
    assert after < before * 0.8, (before, after)
    # the fine-tuned folder (and its checkpoint) says cls pooling, so no reader falls back to mean
    for folder in (Path(result.output_dir), Path(result.output_dir) / "checkpoint-6"):
        assert FlagModel(str(folder), devices="cpu").pooling_method == "cls"
        st = SentenceTransformer(str(folder), device="cpu")
        texts = ["a claim about cells", "another text"]
        np.testing.assert_allclose(st.encode(texts), FlagModel(str(folder), devices="cpu").encode(texts), atol=1e-5)


@pytest.mark.slow
def test_resume_from_checkpoint(model_path: str, scifact_examples: list[TrainExample], tmp_path: Path) -> None:
    args = EmbedderTrainingArgs(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, train_group_size=2,
                                save_steps=1, logging_steps=1, show_progress=False, passage_max_length=64)
    first = train_embedder(model_path, scifact_examples[:8], args)
    args.max_steps = 3
    args.resume_from_checkpoint = str(tmp_path / "run" / "checkpoint-2")
    result = train_embedder(model_path, scifact_examples[:8], args)
    # the history of steps 1-2 comes back from the checkpoint; only step 3 ran again
    assert result.steps == 3 and result.losses[:2] == first.losses and len(result.losses) == 3


def _reranker_loss(reranker: FlagReranker, examples: list[TrainExample]) -> float:
    pairs = [(e.query, p) for e in examples for p in (e.pos[0], *e.neg)]
    return float(reranker_loss(torch.tensor(reranker.compute_score(pairs)), 4, None))


@pytest.mark.slow
def test_reranker_loss_goes_down(model_path: str, scifact_examples: list[TrainExample], tmp_path: Path) -> None:
    args = RerankerTrainingArgs(
        output_dir=str(tmp_path / "reranker"), epochs=4, batch_size=4, train_group_size=4, learning_rate=1e-4,
        max_length=192, logging_steps=1, save_steps=100, show_progress=False, seed=3,
    )
    result = train_reranker(model_path, scifact_examples, args)
    first = train_reranker(model_path, scifact_examples, RerankerTrainingArgs(
        output_dir=str(tmp_path / "zero"), max_steps=1, learning_rate=1e-12, batch_size=4, train_group_size=4,
        max_length=192, show_progress=False, seed=3))
    before = _reranker_loss(FlagReranker(first.output_dir, devices="cpu", max_length=192), scifact_examples)
    after = _reranker_loss(FlagReranker(result.output_dir, devices="cpu", max_length=192), scifact_examples)
    assert after < before * 0.9, (before, after)


def test_groups_and_losses() -> None:
    examples = [TrainExample("q", ["p"], ["n1", "n2"], [3.0], [1.0, 0.0])]
    dataset = GroupDataset(examples, 5, seed=0, distill=True)
    item = dataset[0]
    assert item["passages"][0] == "p" and len(item["passages"]) == 5 and set(item["passages"][1:]) == {"n1", "n2"}
    assert item["teacher"][0] == 3.0
    with pytest.raises(ValueError, match="no negatives"):
        GroupDataset([TrainExample("q", ["p"])], 2, 0, False)
    with pytest.raises(ValueError, match="teacher scores"):
        GroupDataset([TrainExample("q", ["p"], ["n"])], 2, 0, True)
    q = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    in_batch = embedder_loss(q, p, 0.02, True, None)
    expected = torch.nn.functional.cross_entropy(q @ p.T / 0.02, torch.tensor([0, 3]))
    assert torch.allclose(in_batch, expected)
    grouped = embedder_loss(q, p, 0.02, False, None)
    scores = torch.stack([p[:3] @ q[0], p[3:] @ q[1]]) / 0.02
    assert torch.allclose(grouped, torch.nn.functional.cross_entropy(scores, torch.tensor([0, 0])))
