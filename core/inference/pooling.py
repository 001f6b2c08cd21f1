"""Pooling of token states into one vector per input, as FlagEmbedding defines it, and which pooling a
model uses."""

from __future__ import annotations

from pathlib import Path

import torch

from .kinds import ModelKind
from .model_files import read_sentence_transformers_config
from .registry import lookup_embedder

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


def resolve_pooling(model_name_or_path: str, path: Path, explicit: str | None = None) -> str:
    """The pooling for a model: ``explicit``, else its sentence-transformers config, else the registry's,
    else FlagEmbedding's default for an encoder embedder (cls)."""
    if explicit is not None:
        return check_pooling(explicit)
    entry = lookup_embedder(model_name_or_path)
    pooling = read_sentence_transformers_config(path).pooling or (entry.pooling if entry else None)
    return check_pooling(pooling or ModelKind.EMBEDDER.default_pooling or "cls")
