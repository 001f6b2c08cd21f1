"""The runtime's token budget: fixed on CPUs, sized to the card's free memory on CUDA."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from flag_core.inference import runtime
from flag_core.inference.runtime import ACCELERATOR_BUDGET_RANGE, CPU_TOKEN_BUDGET, default_token_budget


def test_cpu_budget_is_fixed() -> None:
    config = SimpleNamespace(hidden_size=384, intermediate_size=1536)
    assert default_token_budget("cpu") == CPU_TOKEN_BUDGET
    assert default_token_budget("cpu", config, torch.float16) == CPU_TOKEN_BUDGET


@pytest.mark.parametrize(
    ("free_gib", "hidden", "intermediate", "dtype", "expected"),
    [
        # 0.4 * 16 GiB over 2 bytes * (8 * 1024 + 2 * 4096) = 32 KiB per token
        (16, 1024, 4096, torch.float16, int(0.4 * 16 * 2**30) // (2 * (8 * 1024 + 2 * 4096))),
        # fp32 doubles the bytes per token, so half the tokens
        (16, 1024, 4096, torch.float32, int(0.4 * 16 * 2**30) // (4 * (8 * 1024 + 2 * 4096))),
        (1, 4096, 14336, torch.float16, ACCELERATOR_BUDGET_RANGE[0]),  # a nearly full card: the floor
        (139, 384, 1536, torch.float16, ACCELERATOR_BUDGET_RANGE[1]),  # a big card, small model: the ceiling
    ],
)
def test_cuda_budget_follows_free_memory(
    monkeypatch: pytest.MonkeyPatch, free_gib: int, hidden: int, intermediate: int, dtype: torch.dtype, expected: int
) -> None:
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime.torch.cuda, "mem_get_info", lambda device: (free_gib * 2**30, 141 * 2**30))
    config = SimpleNamespace(hidden_size=hidden, intermediate_size=intermediate)
    assert default_token_budget("cuda:0", config, dtype) == expected


def test_cuda_budget_without_a_readable_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime.torch.cuda, "mem_get_info", lambda device: (16 * 2**30, 16 * 2**30))
    assert default_token_budget("cuda:0", None) == runtime.ACCELERATOR_TOKEN_BUDGET
    assert default_token_budget("cuda:0", SimpleNamespace()) == runtime.ACCELERATOR_TOKEN_BUDGET
