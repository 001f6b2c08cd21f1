"""Pooling of token states into one vector per input, as FlagEmbedding defines it."""

from __future__ import annotations

import torch

POOLING_METHODS = ("cls", "mean", "last_token")


def check_pooling(method: str) -> str:
    """Return ``method`` if it is a known pooling method, else raise a ValueError listing them."""
    if method not in POOLING_METHODS:
        raise ValueError(f"unknown pooling_method {method!r}; use one of {', '.join(POOLING_METHODS)}")
    return method


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, method: str) -> torch.Tensor:
    """Pool ``hidden`` (batch, seq, dim) with ``attention_mask`` (batch, seq) into (batch, dim)."""
    if method == "cls":
        return hidden[:, 0]
    if method == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / attention_mask.sum(dim=1, keepdim=True).to(hidden.dtype)
    if method == "last_token":
        if bool(attention_mask[:, -1].all()):  # left padding: every row ends at the last position
            return hidden[:, -1]
        last = attention_mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling_method {method!r}; use one of {', '.join(POOLING_METHODS)}")
