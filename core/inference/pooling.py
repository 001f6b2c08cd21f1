"""Pooling of token states into one vector per input, as FlagEmbedding defines it, and which pooling a
model uses."""

from __future__ import annotations

from pathlib import Path

import torch

from .kinds import POOLING_METHODS, check_pooling
from .registry import resolve_embedder

__all__ = ["POOLING_METHODS", "check_pooling", "pool", "resolve_pooling"]


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


def resolve_pooling(model_name_or_path: str, path: Path, explicit: str | None = None) -> str:
    """The pooling for a model, as :func:`~.registry.resolve_embedder` decides it for every entry point."""
    return resolve_embedder(model_name_or_path, path, pooling=explicit).pooling
