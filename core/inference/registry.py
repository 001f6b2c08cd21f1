"""A registry of known model families and their defaults (pooling, instructions, lengths, kind).

Lookup matches hub ids ("BAAI/bge-base-en-v1.5"), local folders named after a model
("/models/bge-base-en-v1.5"), and fine-tuned ``checkpoint-N`` folders inside such a folder. An unknown
name is never an error: :func:`lookup` returns None and callers fall back to generic defaults.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .instructions import BGE_EN_QUERY_INSTRUCTION, BGE_ZH_QUERY_INSTRUCTION
from .kinds import ModelKind


@dataclass(frozen=True)
class ModelEntry:
    """Defaults for one family of models. ``kind`` says which class serves it."""

    name: str
    pattern: str
    kind: ModelKind
    pooling: str | None = None
    query_instruction: str | None = None
    passage_instruction: str | None = None
    instruction_format: str = "{}{}"
    max_length: int | None = None

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name, flags=re.IGNORECASE) is not None


_QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
_E5_INSTRUCT_FORMAT = "Instruct: {}\nQuery: {}"

# Most specific first: the first entry that matches wins.
EMBEDDERS: tuple[ModelEntry, ...] = (
    ModelEntry("bge-m3", r"bge-m3.*", ModelKind.M3, pooling="cls", max_length=8192),
    ModelEntry("llm-embedder", r"llm-embedder.*", ModelKind.LLM_EMBEDDER, pooling="cls"),
    ModelEntry(
        "bge-en-icl", r"bge-en-icl.*", ModelKind.DECODER_EMBEDDER, pooling="last_token",
        query_instruction=_QWEN3_INSTRUCTION,
        instruction_format="<instruct>{}\n<query>{}",
    ),
    ModelEntry(
        "bge-multilingual-gemma2", r"bge-multilingual-gemma2.*", ModelKind.DECODER_EMBEDDER, pooling="last_token",
        query_instruction=_QWEN3_INSTRUCTION, instruction_format="<instruct>{}\n<query>{}",
    ),
    ModelEntry(
        "bge-zh", r"bge-(small|base|large)-zh(-v1\.5)?.*", ModelKind.EMBEDDER, pooling="cls",
        query_instruction=BGE_ZH_QUERY_INSTRUCTION, max_length=512,
    ),
    ModelEntry(
        "bge-en", r"bge-(small|base|large)-en(-v1\.5)?.*", ModelKind.EMBEDDER, pooling="cls",
        query_instruction=BGE_EN_QUERY_INSTRUCTION, max_length=512,
    ),
    ModelEntry(
        "e5-mistral", r"e5-mistral.*", ModelKind.DECODER_EMBEDDER, pooling="last_token",
        query_instruction=_QWEN3_INSTRUCTION, instruction_format=_E5_INSTRUCT_FORMAT,
    ),
    ModelEntry(
        "multilingual-e5-instruct", r"multilingual-e5-large-instruct.*", ModelKind.EMBEDDER, pooling="mean",
        query_instruction=_QWEN3_INSTRUCTION, instruction_format=_E5_INSTRUCT_FORMAT, max_length=512,
    ),
    ModelEntry(
        "e5", r"(multilingual-)?e5-(small|base|large)(-v2)?.*", ModelKind.EMBEDDER, pooling="mean",
        query_instruction="query: ", passage_instruction="passage: ", max_length=512,
    ),
    ModelEntry(
        "gte-qwen", r"gte-qwen.*", ModelKind.DECODER_EMBEDDER, pooling="last_token",
        query_instruction=_QWEN3_INSTRUCTION, instruction_format=_E5_INSTRUCT_FORMAT,
    ),
    ModelEntry("gte", r"gte-(small|base|large)(-en-v1\.5|-zh)?.*", ModelKind.EMBEDDER, pooling="mean", max_length=512),
    ModelEntry(
        "qwen3-embedding", r"qwen3-embedding.*", ModelKind.DECODER_EMBEDDER, pooling="last_token",
        query_instruction=_QWEN3_INSTRUCTION, instruction_format="Instruct: {}\nQuery:{}",
    ),
)

RERANKERS: tuple[ModelEntry, ...] = (
    ModelEntry("bge-reranker-v2-minicpm-layerwise", r"bge-reranker-v2(\.5)?-(minicpm|gemma2)-(layerwise|lightweight).*",
               ModelKind.LAYERWISE_RERANKER),
    ModelEntry("bge-reranker-v2-gemma", r"bge-reranker-v2-gemma.*", ModelKind.LLM_RERANKER),
    ModelEntry("bge-reranker-v2-m3", r"bge-reranker-v2-m3.*", ModelKind.RERANKER, max_length=512),
    ModelEntry("bge-reranker", r"bge-reranker-(base|large).*", ModelKind.RERANKER, max_length=512),
)

_CHECKPOINT = re.compile(r"checkpoint-\d+|checkpoint_\d+|final|best|merged")


def candidate_names(name_or_path: str) -> list[str]:
    """Names under which a model may be known: its basename, the folder above a checkpoint, and the
    base model recorded in its config (``_name_or_path``) when that is present."""
    text = str(name_or_path).rstrip("/\\")
    parts = [p for p in re.split(r"[/\\]", text) if p]
    names: list[str] = []
    if parts:
        names.append(parts[-1])
        if _CHECKPOINT.fullmatch(parts[-1]) and len(parts) > 1:
            names.append(parts[-2])
    config = Path(text) / "config.json"
    if config.is_file():
        try:
            recorded = json.loads(config.read_text(encoding="utf-8")).get("_name_or_path")
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, str) and recorded and os.path.basename(recorded.rstrip("/")) not in names:
            names.append(os.path.basename(recorded.rstrip("/")))
    return names


def _lookup(name_or_path: str, table: tuple[ModelEntry, ...]) -> ModelEntry | None:
    for name in candidate_names(name_or_path):
        # a fine-tuned folder is often named "<base>-<suffix>": the patterns allow trailing text.
        for entry in table:
            if entry.matches(name):
                return entry
    return None


def lookup_embedder(name_or_path: str) -> ModelEntry | None:
    """The registry entry for an embedding model, or None when the name is unknown."""
    return _lookup(name_or_path, EMBEDDERS)


def lookup_reranker(name_or_path: str) -> ModelEntry | None:
    """The registry entry for a reranker, or None when the name is unknown."""
    return _lookup(name_or_path, RERANKERS)
