"""last_token pooling on a tiny decoder built from a config: batched equals one-at-a-time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flag_core import FlagAutoModel, FlagModel
from flag_core.inference.pooling import pool


@pytest.fixture(scope="module")
def tiny_decoder(tiny_decoder_path: str) -> Path:
    """The shared tiny Llama (conftest), read here as a base model for last_token embeddings."""
    return Path(tiny_decoder_path)


def test_last_token_batched_equals_single(tiny_decoder: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    model = FlagModel(str(tiny_decoder), pooling_method="last_token", devices="cpu", normalize_embeddings=False)
    texts = ["short", "a somewhat longer text here", "mid length text"]
    got = model.encode(texts)
    reference = AutoModel.from_pretrained(tiny_decoder).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder)
    with torch.inference_mode():
        want = np.stack([reference(**tokenizer(t, return_tensors="pt")).last_hidden_state[0, -1].numpy()
                         for t in texts])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_decoder_model_class(tiny_decoder: Path) -> None:
    model = FlagAutoModel.from_finetuned(str(tiny_decoder), model_class="decoder-only-base", devices="cpu")
    assert model.pooling_method == "last_token"
    assert model.encode(["x", "y z"]).shape == (2, 32)


def test_pool_last_token_left_and_right_padding() -> None:
    hidden = torch.arange(2 * 3 * 1, dtype=torch.float32).reshape(2, 3, 1)
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert pool(hidden, right, "last_token")[:, 0].tolist() == [1.0, 5.0]
    assert pool(hidden, left, "last_token")[:, 0].tolist() == [2.0, 5.0]
    assert pool(hidden, right, "cls")[:, 0].tolist() == [0.0, 3.0]
    assert pool(hidden, right, "mean")[:, 0].tolist() == [0.5, 4.0]
