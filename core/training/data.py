"""FlagEmbedding's fine-tuning data: one JSON object per line with ``query``, ``pos``, ``neg`` and optional
``pos_scores``, ``neg_scores``, ``prompt`` and ``type``. Every line is checked; a bad one stops the
read with its file, line and field, so nothing is trained on silently dropped rows."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import CHECKSUM_SUFFIX, checked_write, jsonl_rows, verify_file


@dataclass
class TrainExample:
    """One query with its positive and negative passages (and optional teacher scores)."""

    query: str
    pos: list[str]
    neg: list[str] = field(default_factory=list)
    pos_scores: list[float] | None = None
    neg_scores: list[float] | None = None
    prompt: str | None = None
    type: str | None = None

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"query": self.query, "pos": self.pos, "neg": self.neg}
        for name in ("pos_scores", "neg_scores", "prompt", "type"):
            if getattr(self, name) is not None:
                row[name] = getattr(self, name)
        return row


def _texts(row: dict[str, Any], name: str, where: str, required: bool) -> list[str]:
    value = row.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list) or (required and not value):
        raise ValueError(f"{where}: field '{name}' must be a {'non-empty ' if required else ''}list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"{where}: field '{name}'[{i}] is {type(item).__name__}, expected a string")
    return value


def _scores(row: dict[str, Any], name: str, count: int, where: str) -> list[float] | None:
    value = row.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != count:
        raise ValueError(f"{where}: field '{name}' must be a list of {count} numbers (one per passage)")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise ValueError(f"{where}: field '{name}'[{i}] is {item!r}, expected a finite number")
    return [float(v) for v in value]


def parse_example(row: Any, where: str) -> TrainExample:
    """Check one decoded line; ``where`` ("file, line N") prefixes any error."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    query = row.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"{where}: field 'query' must be a non-empty string")
    pos = _texts(row, "pos", where, required=True)
    neg = _texts(row, "neg", where, required=False)
    example = TrainExample(
        query=query,
        pos=pos,
        neg=neg,
        pos_scores=_scores(row, "pos_scores", len(pos), where),
        neg_scores=_scores(row, "neg_scores", len(neg), where),
    )
    for name in ("prompt", "type"):
        value = row.get(name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: field '{name}' must be a string")
        setattr(example, name, value)
    if neg and (example.pos_scores is None) != (example.neg_scores is None):
        raise ValueError(f"{where}: give both 'pos_scores' and 'neg_scores', or neither")
    return example


def read_examples(path: str | os.PathLike[str]) -> list[TrainExample]:
    """All examples of a jsonl file, or a ValueError naming the file, line and field of the first bad row. A
    file written by :func:`write_examples` (it has a ``<file>.sha256`` beside it) is checked against it first: a
    truncated or changed one is an ArtefactError naming it."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no training data at {file}")
    if file.with_name(file.name + CHECKSUM_SUFFIX).exists():
        verify_file(file)
    examples = [parse_example(row, where) for where, row in jsonl_rows(file)]
    if not examples:
        raise ValueError(f"{file} holds no examples")
    return examples


def write_examples(path: str | os.PathLike[str], examples: Iterable[TrainExample]) -> None:
    """Write examples as jsonl, atomically, and its checksum beside it (``<file>.sha256``, sha256sum's format),
    which :func:`read_examples` verifies. (Edit the file by hand, and delete the checksum file with it.)"""
    with checked_write(path, "w") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")


def text_rows(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """("file, line N", text) of each row of FlagEmbedding's pretraining jsonl (``{"text": ...}`` a line), or a
    ValueError naming the file and line of the first bad row."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no pretraining data at {file}")
    rows = []
    for where, row in jsonl_rows(file):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object with a 'text' field, got {type(row).__name__}")
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: field 'text' must be a non-empty string")
        rows.append((where, text))
    if not rows:
        raise ValueError(f"{file} holds no texts")
    return rows


def read_texts(path: str | os.PathLike[str]) -> list[str]:
    """The texts of FlagEmbedding's pretraining jsonl (``{"text": ...}`` a line), or a ValueError naming the
    file and line of the first bad row."""
    return [text for _, text in text_rows(path)]
