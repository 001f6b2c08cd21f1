"""LM-Cocktail's interface: merge embedders ("encoder"), rerankers ("reranker") and LLMs ("decoder") by
fixed weights (:func:`mix_models`) or by weights chosen from each model's loss on a few examples of the
target task (:func:`mix_models_with_data`); :func:`merged_model` keeps merges in flagstack's cache for
building framework objects from them (:class:`FromMerge`). The merge itself is :mod:`.checkpoints`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..fileio import cache_folder, jsonl_rows
from ..inference.embedder import FlagModel
from ..inference.kinds import ModelKind, merge_type
from ..inference.model_files import load_tokenizer, resolve_model_path
from ..inference.reranker import FlagReranker
from ..training.data import TrainExample, parse_example
from .checkpoints import merge_checkpoints


@dataclass
class MergeResult:
    """The merged folder, the weights used, and (for merges by examples) each model's loss."""

    output_path: Path
    weights: list[float]
    losses: list[float] = field(default_factory=list)

    def load(self, model_type: str = "encoder") -> Any:
        """The merged model as a transformers object (AutoModel / ...ForSequenceClassification / ...ForCausalLM)."""
        return merge_type(model_type).head.auto_class().from_pretrained(self.output_path)


def _output_or_temp(output_path: str | os.PathLike[str] | None) -> Path:
    if output_path is not None:
        return Path(output_path)
    return Path(tempfile.mkdtemp(prefix="flagstack-merge-")) / "merged"


def mix_models(
    model_names_or_paths: Sequence[str],
    model_type: str,
    weights: Sequence[float],
    output_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    allow_negative: bool = False,
) -> MergeResult:
    """Merge models with fixed weights (LM-Cocktail's ``mix_models``); without ``output_path`` the merge goes
    to a temporary folder. Negative weights need ``allow_negative``. Returns where it went and the weights
    (``.load()`` gives the model)."""
    output = _output_or_temp(output_path)
    path = merge_checkpoints(model_names_or_paths, weights, output, model_type, overwrite, allow_negative)
    return MergeResult(path, [float(w) for w in weights])


def _examples(example_data: Any, model_type: str) -> list[Any]:
    if isinstance(example_data, (str, os.PathLike)):
        if not Path(example_data).is_file():
            raise FileNotFoundError(f"no example data at {example_data}")
        located = list(jsonl_rows(example_data))
    else:
        located = [(f"example_data[{i}]", row) for i, row in enumerate(example_data)]
    if not located:
        raise ValueError("example_data holds no examples")
    if merge_type(model_type) is ModelKind.LLM:
        for where, row in located:
            if not isinstance(row, dict) or not isinstance(row.get("input"), str) or not isinstance(
                row.get("output"), str
            ):
                raise ValueError(f"{where} must be {{'input': str, 'output': str}} for decoders")
        return [row for _, row in located]
    return [row if isinstance(row, TrainExample) else parse_example(row, where) for where, row in located]


def _groups(examples: Sequence[TrainExample], neg_number: int, seed: int) -> list[tuple[str, list[str]]]:
    """(query, [positive, negatives...]) per example; negatives sampled with a fixed seed, and taken from
    the other examples' positives when an example has too few of its own."""
    rng = random.Random(seed)
    groups = []
    for i, ex in enumerate(examples):
        negatives = list(ex.neg)
        if len(negatives) < neg_number:
            others = [p for j, other in enumerate(examples) if j != i for p in other.pos if p not in ex.pos]
            negatives += rng.sample(others, min(len(others), neg_number - len(negatives)))
        groups.append((ex.query, [ex.pos[0], *rng.sample(negatives, min(neg_number, len(negatives)))]))
    return groups


def _cross_entropy(scores: list[float]) -> float:
    values = np.asarray(scores, dtype=np.float64)
    return float(np.log(np.exp(values - values.max()).sum()) + values.max() - values[0])


def example_loss(
    model_path: str, model_type: str, examples: Sequence[Any], batch_size: int, max_input_length: int,
    neg_number: int, seed: int,
) -> float:
    """The mean loss of one model on the examples (the signal LM-Cocktail weighs models by)."""
    kind = merge_type(model_type)
    if kind is ModelKind.EMBEDDER:
        embedder = FlagModel(model_path, devices=None, batch_size=max(batch_size, 1))
        losses = []
        for query, passages in _groups(examples, neg_number, seed):
            q = np.asarray(embedder.encode_queries(query))
            p = np.asarray(embedder.encode_corpus(passages))
            losses.append(_cross_entropy(list(p @ q / 0.05)))
        return float(np.mean(losses))
    if kind is ModelKind.RERANKER:
        reranker = FlagReranker(model_path, batch_size=max(batch_size, 1), max_length=min(max_input_length, 512))
        losses = [_cross_entropy(reranker.compute_score([(query, p) for p in passages]))
                  for query, passages in _groups(examples, neg_number, seed)]
        return float(np.mean(losses))
    return _decoder_loss(model_path, examples, batch_size, max_input_length)


def _decoder_loss(model_path: str, examples: Sequence[dict[str, str]], batch_size: int, max_input_length: int) -> float:
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(Path(model_path))
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(examples), max(batch_size, 1)):
            for row in examples[start : start + max(batch_size, 1)]:
                prompt = tokenizer(row["input"], add_special_tokens=True)["input_ids"]
                answer = tokenizer(" " + row["output"], add_special_tokens=False)["input_ids"]
                eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
                ids = (prompt + answer + eos)[:max_input_length]
                labels = ([-100] * len(prompt) + answer + eos)[:max_input_length]
                if all(label == -100 for label in labels):
                    continue
                out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
                targets = sum(1 for label in labels[1:] if label != -100)
                total += float(out.loss) * targets
                count += targets
    if not count:
        raise ValueError("no example has output tokens within max_input_length")
    return total / count


def mix_models_with_data(
    model_names_or_paths: Sequence[str],
    model_type: str,
    example_data: Any,
    temperature: float = 5.0,
    batch_size: int = 2,
    max_input_length: int = 2048,
    neg_number: int = 7,
    output_path: str | os.PathLike[str] | None = None,
    seed: int = 42,
    overwrite: bool = False,
) -> MergeResult:
    """Merge with weights ``softmax(-loss / temperature)`` of each model's loss on ``example_data``
    (LM-Cocktail's ``mix_models_with_data``): FlagEmbedding jsonl rows (query/pos/neg) for encoders and
    rerankers, {"input", "output"} rows for decoders; a path or a list. Returns weights and losses."""
    merge_type(model_type)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    examples = _examples(example_data, model_type)
    paths = [str(resolve_model_path(p)) for p in model_names_or_paths]
    losses = [example_loss(p, model_type, examples, batch_size, max_input_length, neg_number, seed) for p in paths]
    logits = -np.asarray(losses) / temperature
    weights = np.exp(logits - logits.max())
    weights = (weights / weights.sum()).tolist()
    output = _output_or_temp(output_path)
    path = merge_checkpoints(model_names_or_paths, weights, output, model_type, overwrite)
    return MergeResult(path, [float(w) for w in weights], losses)


def merged_model(
    models: Sequence[str],
    model_type: str,
    weights: Sequence[float] | None = None,
    example_data: Any = None,
    output_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> str:
    """The folder of a merge of ``models`` (by ``weights``, or by ``example_data``), for building framework
    objects from a merge. Without ``output_path`` merges are kept under ``cache_dir`` (default
    $FLAGSTACK_CACHE/merges, else ~/.cache/flagstack/merges), keyed by their inputs, and reused."""
    if (weights is None) == (example_data is None):
        raise ValueError("give either weights or example_data")
    if output_path is None:
        if example_data is not None and isinstance(example_data, (str, os.PathLike)):
            data_key: Any = Path(example_data).read_text(encoding="utf-8")
        else:
            data_key = example_data if example_data is None else [
                e.to_json() if isinstance(e, TrainExample) else e for e in example_data
            ]
        key = json.dumps([list(models), model_type, weights, data_key, kwargs], sort_keys=True, default=str)
        root = Path(cache_dir) if cache_dir else cache_folder("merges")
        output_path = root / hashlib.sha256(key.encode()).hexdigest()[:24]
        if (Path(output_path) / "merge_config.json").is_file():
            return str(output_path)
    if weights is not None:
        return str(mix_models(models, model_type, weights, output_path, **kwargs).output_path)
    return str(mix_models_with_data(models, model_type, example_data, output_path=output_path, **kwargs).output_path)


def sweep_weights(
    models: Sequence[str], score: Callable[[Path], float], steps: int = 5, model_type: str = "encoder"
) -> list[tuple[float, float]]:
    """Merge two models at ``steps`` evenly spaced weights of the second (0 to 1) and score each merge with
    ``score(folder)`` (e.g. STS Spearman); returns (weight of the second model, score) pairs."""
    if len(models) != 2:
        raise ValueError(f"a weight sweep merges two models, got {len(models)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int of at least 2, got {steps!r}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(steps):
            weight = i / (steps - 1)
            folder = merge_checkpoints(models, [1 - weight, weight], Path(tmp) / f"w{i}", model_type)
            results.append((weight, float(score(folder))))
    return results


class FromMerge:
    """``from_merge`` for framework classes: build the object from an LM-Cocktail merge, without handling
    files. Classes set ``merge_type`` (an LM-Cocktail model_type) and ``model_field`` (their model argument)."""

    merge_type: ClassVar[str] = "encoder"
    model_field: ClassVar[str] = "model_name"

    @classmethod
    def from_merge(
        cls,
        models: list[str],
        weights: list[float] | None = None,
        example_data: Any = None,
        output_path: str | None = None,
        **settings: Any,
    ) -> Any:
        """This class over a merge of ``models``, by ``weights`` or by a few ``example_data`` rows
        (query/pos/neg); the merged folder is cached unless ``output_path`` is given."""
        path = merged_model(models, cls.merge_type, weights, example_data, output_path)
        return cls(**{cls.model_field: path}, **settings)
