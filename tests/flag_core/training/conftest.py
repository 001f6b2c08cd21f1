"""Fixtures of the training tests: a tiny seeded BERT encoder (two layers of 32, 128 positions) with the test
model's tokenizer (which says 512 tokens: the model's own limit is the smaller one), and a few examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from flag_core.training.data import TrainExample, write_examples


@pytest.fixture(scope="session")
def tiny_encoder(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny") / "encoder"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def tiny_examples() -> list[TrainExample]:
    return [TrainExample(f"what is known about topic {i}?", [f"a study of topic {i} found an effect"],
                         [f"an unrelated note on subject {i + 7}", f"policy of area {i + 3}"]) for i in range(4)]


@pytest.fixture
def tiny_data(tmp_path: Path, tiny_examples: list[TrainExample]) -> Path:
    data = tmp_path / "data" / "train.jsonl"
    write_examples(data, tiny_examples)
    return data
