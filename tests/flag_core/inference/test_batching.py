"""Token-budget batching, order restoration and the out-of-memory back-off."""

from __future__ import annotations

import pytest
import torch

from flag_core.inference.batching import SpecialTokenLayout, plan_batches, run_batched, tokenize_texts


def test_plan_respects_budget_count_and_covers_every_index() -> None:
    lengths = [5, 50, 7, 12, 50, 3, 9, 30]
    batches = plan_batches(lengths, max_tokens=64, max_count=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        longest = max(lengths[i] for i in batch)
        assert longest == lengths[batch[0]]  # longest first within a batch
        assert len(batch) == 1 or len(batch) * longest <= 64
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)


def test_an_input_longer_than_the_budget_gets_its_own_batch() -> None:
    assert plan_batches([100, 2], max_tokens=10, max_count=8) == [[0], [1]]


def test_run_batched_restores_input_order() -> None:
    sequences = [[1] * n for n in (3, 9, 1, 6, 6)]
    out = run_batched(sequences, lambda idx: torch.tensor([[float(i)] for i in idx]), max_tokens=12, max_count=4)
    assert out[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_out_of_memory_halves_the_budget_and_retries() -> None:
    calls: list[int] = []

    def forward(idx: list[int]) -> torch.Tensor:
        calls.append(len(idx))
        if len(idx) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.tensor([[float(i)] for i in idx])

    out = run_batched([[1] * 4] * 8, forward, max_tokens=32, max_count=8)
    assert out[:, 0].tolist() == [float(i) for i in range(8)]
    assert calls == [8, 4, 2, 2, 2, 2]  # halved until it fits, then kept


def test_out_of_memory_on_a_single_input_is_raised() -> None:
    def forward(idx: list[int]) -> torch.Tensor:
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(torch.OutOfMemoryError):
        run_batched([[1, 2, 3]], forward, max_tokens=100, max_count=10)


def test_other_errors_propagate_without_retry() -> None:
    calls: list[int] = []

    def forward(idx: list[int]) -> torch.Tensor:
        calls.append(len(idx))
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batched([[1]] * 6, forward, max_tokens=100, max_count=10)
    assert calls == [6]


def test_tokenize_detects_truncation_exactly(mini_model: object) -> None:
    tokenizer = mini_model.runtime.loaded.tokenizer  # type: ignore[attr-defined]
    assert SpecialTokenLayout.of(tokenizer) == SpecialTokenLayout(prefix=1, suffix=1)
    exact = "a " * 14  # 14 tokens + [CLS] + [SEP] = 16
    texts = [exact, exact + "b", "short"]
    ids, truncated = tokenize_texts(tokenizer, texts, max_length=16)
    assert truncated == 1
    assert ids == tokenizer(texts, truncation=True, max_length=16)["input_ids"]
    with pytest.raises(ValueError, match="max_length=2"):
        tokenize_texts(tokenizer, texts, max_length=2)


def test_rows_do_not_keep_their_batch_alive() -> None:
    """Rows that are views of a batch tensor (cls pooling, the "Yes" logit) are copied, so a batch's
    activations are freed as soon as the next batch runs, and what a call holds stays near its output."""
    import weakref

    import numpy as np

    batches: list[weakref.ref[np.ndarray]] = []

    def forward(indices: list[int]) -> torch.Tensor:
        assert all(ref() is None for ref in batches), "an earlier batch's memory is still held"
        memory = np.ones((len(indices), 64, 32), dtype=np.float32)  # (batch, tokens, dim): 64x the kept rows
        batches.append(weakref.ref(memory))  # alive as long as any tensor viewing it is
        return torch.from_numpy(memory)[:, 0]  # a view, like cls pooling or logits[:, -1, yes]

    sequences = [[1] * (1 + i % 5) for i in range(40)]
    out = run_batched(sequences, forward, max_tokens=20, max_count=8)
    assert len(batches) > 3 and out.shape == (40, 32)
    assert out.untyped_storage().nbytes() <= 2 * out.numel() * out.element_size()


def test_a_tokenizers_layout_is_found_once_and_kept_while_it_lives(model_path: str) -> None:
    import copy
    import gc

    from transformers import AutoTokenizer

    from flag_core.inference import batching

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    calls: list[str] = []
    found = SpecialTokenLayout.find

    def counted(tokenizer: object) -> SpecialTokenLayout:
        calls.append("find")
        return found(tokenizer)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SpecialTokenLayout, "find", staticmethod(counted))
        first = SpecialTokenLayout.of(tokenizer)
        ids, _ = tokenize_texts(tokenizer, ["some text"], 8)
        other = copy.deepcopy(tokenizer)
        assert SpecialTokenLayout.of(other) == first == SpecialTokenLayout(prefix=1, suffix=1)
    assert calls == ["find", "find"]  # once per tokenizer object, not once per call
    assert len(ids[0]) == len(tokenizer("some text")["input_ids"])
    size = len(batching._LAYOUTS)
    del other
    gc.collect()
    assert len(batching._LAYOUTS) <= size - 1  # kept only while its tokenizer lives
