"""Model merging (LM-Cocktail): a weighted average of parameters, by fixed weights or weights chosen from
a few examples of the target task, for embedders ("encoder"), rerankers ("reranker") and LLMs ("decoder").

Unlike LM-Cocktail, which loads every model at once, merging here reads one tensor of one model at a
time from safetensors files and writes the result shard by shard, so peak memory stays near one model.
Everything is checked (weights, architectures, every tensor's name, shape and dtype) before anything is
written; the output is built in a temporary folder and renamed into place at the end.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fileio import cache_folder
from .finetune_data import TrainExample, parse_example
from .loading import resolve_model_path, write_sentence_transformers_config

logger = logging.getLogger(__name__)

MODEL_TYPES = ("encoder", "reranker", "decoder")
_FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt")


@dataclass
class MergeResult:
    """The merged folder, the weights used, and (for merges by examples) each model's loss."""

    output_path: Path
    weights: list[float]
    losses: list[float] = field(default_factory=list)

    def load(self, model_type: str = "encoder") -> Any:
        """The merged model as a transformers object (AutoModel / ...ForSequenceClassification / ...ForCausalLM)."""
        import transformers

        classes = {
            "encoder": transformers.AutoModel,
            "reranker": transformers.AutoModelForSequenceClassification,
            "decoder": transformers.AutoModelForCausalLM,
        }
        return classes[_check_type(model_type)].from_pretrained(self.output_path)


def _check_type(model_type: str) -> str:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    return model_type


def check_weights(weights: Sequence[float], count: int) -> list[float]:
    """Weights must be finite numbers, one per model, summing to 1 within 1e-3."""
    values = list(weights)
    if len(values) != count:
        raise ValueError(f"{len(values)} weights for {count} models: give one weight per model")
    for i, w in enumerate(values):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"weights[{i}] is {w!r}; weights must be finite numbers")
    if abs(sum(values) - 1.0) > 1e-3:
        raise ValueError(f"weights must sum to 1 (within 1e-3), they sum to {sum(values):.6f}")
    return [float(w) for w in values]


# reading checkpoints tensor by tensor ------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    file: str
    shape: tuple[int, ...]
    dtype: str


class Checkpoint:
    """A model folder's tensors: names, shapes, dtypes and which file holds each (no tensor is loaded)."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open

        self.folder = folder
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise ValueError(f"{folder} has no .safetensors weights; merging reads safetensors only "
                             "(convert with transformers: model.save_pretrained(path, safe_serialization=True))")
        self.tensors: dict[str, TensorInfo] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open handles are not mappings
                    piece = handle.get_slice(name)
                    self.tensors[name] = TensorInfo(file.name, tuple(piece.get_shape()), str(piece.get_dtype()))
        self.config = json.loads((folder / "config.json").read_text(encoding="utf-8"))

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor, read on its own (the file is opened and closed around it)."""
        from safetensors import safe_open

        with safe_open(str(self.folder / self.tensors[name].file), framework="pt") as handle:
            return handle.get_tensor(name)


def check_compatible(checkpoints: Sequence[Checkpoint]) -> None:
    """Same architecture and the same tensor names, shapes and dtypes, or a ValueError saying what differs."""
    first = checkpoints[0]
    for other in checkpoints[1:]:
        for key in ("architectures", "model_type"):
            if first.config.get(key) != other.config.get(key):
                raise ValueError(f"{other.folder} has {key} {other.config.get(key)!r}, {first.folder} has "
                                 f"{first.config.get(key)!r}: only models of one architecture can be merged")
        # integer buffers (e.g. position_ids, which older transformers versions saved) may be missing
        # from some checkpoints: they are not learned, and the first model's copy is used
        differing = set(first.tensors) ^ set(other.tensors)
        learned = sorted(
            name for name in differing
            if (first.tensors.get(name) or other.tensors[name]).dtype in _FLOAT_DTYPES
        )
        if learned:
            raise ValueError(f"{first.folder} and {other.folder} hold different tensors (e.g. {learned[:3]})")
        for name, info in first.tensors.items():
            if name not in other.tensors:
                continue
            theirs = other.tensors[name]
            if (info.shape, info.dtype) != (theirs.shape, theirs.dtype):
                raise ValueError(f"tensor {name}: {info.shape} {info.dtype} in {first.folder} but "
                                 f"{theirs.shape} {theirs.dtype} in {other.folder}")




def _copy_support_files(source: Path, target: Path) -> None:
    """Config, tokenizer and sentence-transformers files of the first model (weights excluded)."""
    for item in source.iterdir():
        if item.name.startswith(".") or item.name.endswith(_WEIGHT_SUFFIXES) or item.name.endswith(".index.json"):
            continue
        if item.is_dir():
            if item.name.startswith(("checkpoint-", "runs")):
                continue
            shutil.copytree(item, target / item.name)
        else:
            shutil.copy2(item, target / item.name)


def merge_checkpoints(
    paths: Sequence[str | os.PathLike[str]],
    weights: Sequence[float],
    output_path: str | os.PathLike[str],
    model_type: str = "encoder",
    overwrite: bool = False,
) -> Path:
    """Write the weighted average of ``paths`` to ``output_path`` (see the module docstring)."""
    _check_type(model_type)
    if not paths:
        raise ValueError("give at least one model to merge")
    weights = check_weights(weights, len(paths))
    output = Path(output_path)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass overwrite=True to replace it")
    folders = [resolve_model_path(p) for p in paths]
    checkpoints = [Checkpoint(f) for f in folders]
    check_compatible(checkpoints)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        _write_average(checkpoints, weights, staging)
        _copy_support_files(folders[0], staging)
        if model_type == "encoder" and not (staging / "modules.json").exists():
            from .embedder import resolve_pooling

            config = checkpoints[0].config
            write_sentence_transformers_config(
                staging, resolve_pooling(str(paths[0]), folders[0]), True,
                int(config.get("max_position_embeddings", 512)), int(config.get("hidden_size", 0)),
            )
        (staging / "merge_config.json").write_text(json.dumps(
            {"models": [str(p) for p in paths], "weights": weights, "model_type": model_type}, indent=2
        ), encoding="utf-8")
        if output.exists():
            backup = output.with_name(f".{output.name}.old")
            os.replace(output, backup)
            os.replace(staging, output)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def _write_average(checkpoints: Sequence[Checkpoint], weights: Sequence[float], target: Path) -> None:
    from safetensors.torch import save_file

    first = checkpoints[0]
    by_file: dict[str, list[str]] = {}
    for name, info in first.tensors.items():
        by_file.setdefault(info.file, []).append(name)
    index: dict[str, str] = {}
    for file, names in sorted(by_file.items()):
        merged: dict[str, torch.Tensor] = {}
        for name in names:
            info = first.tensors[name]
            if info.dtype not in _FLOAT_DTYPES:  # integer buffers (position ids, ...) are copied from the first model
                merged[name] = first.tensor(name).contiguous()
                continue
            total: torch.Tensor | None = None
            for checkpoint, weight in zip(checkpoints, weights, strict=True):
                part = checkpoint.tensor(name).to(torch.float32).mul_(weight)
                total = part if total is None else total.add_(part)
                del part
            assert total is not None
            merged[name] = total.to(_FLOAT_DTYPES[info.dtype]).contiguous()
            del total
        save_file(merged, str(target / file), metadata={"format": "pt"})
        index.update(dict.fromkeys(names, file))
        del merged
    if len(by_file) > 1:
        (target / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": index}, indent=2), encoding="utf-8"
        )


# LM-Cocktail's interface -------------------------------------------------------------------------


def _output_or_temp(output_path: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    if output_path is not None:
        return Path(output_path), False
    return Path(tempfile.mkdtemp(prefix="flagstack-merge-")) / "merged", True


def mix_models(
    model_names_or_paths: Sequence[str],
    model_type: str,
    weights: Sequence[float],
    output_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> MergeResult:
    """Merge models with fixed weights (LM-Cocktail's ``mix_models``); without ``output_path`` the merge goes
    to a temporary folder. Returns where it went and the weights (``.load()`` gives the model)."""
    output, _ = _output_or_temp(output_path)
    path = merge_checkpoints(model_names_or_paths, weights, output, model_type, overwrite)
    return MergeResult(path, [float(w) for w in weights])


def _examples(example_data: Any, model_type: str) -> list[Any]:
    if isinstance(example_data, (str, os.PathLike)):
        with open(example_data, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    else:
        rows = list(example_data)
    if not rows:
        raise ValueError("example_data holds no examples")
    if model_type == "decoder":
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("input"), str) or not isinstance(
                row.get("output"), str
            ):
                raise ValueError(f"example_data[{i}] must be {{'input': str, 'output': str}} for decoders")
        return rows
    return [row if isinstance(row, TrainExample) else parse_example(row, f"example_data[{i}]")
            for i, row in enumerate(rows)]


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
    if model_type == "encoder":
        from .embedder import FlagModel

        embedder = FlagModel(model_path, devices=None, batch_size=max(batch_size, 1))
        losses = []
        for query, passages in _groups(examples, neg_number, seed):
            q = np.asarray(embedder.encode_queries(query))
            p = np.asarray(embedder.encode_corpus(passages))
            losses.append(_cross_entropy(list(p @ q / 0.05)))
        return float(np.mean(losses))
    if model_type == "reranker":
        from .reranker import FlagReranker

        reranker = FlagReranker(model_path, batch_size=max(batch_size, 1), max_length=min(max_input_length, 512))
        losses = [_cross_entropy(reranker.compute_score([(query, p) for p in passages]))
                  for query, passages in _groups(examples, neg_number, seed)]
        return float(np.mean(losses))
    return _decoder_loss(model_path, examples, batch_size, max_input_length)


def _decoder_loss(model_path: str, examples: Sequence[dict[str, str]], batch_size: int, max_input_length: int) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
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
    _check_type(model_type)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    examples = _examples(example_data, model_type)
    paths = [str(resolve_model_path(p)) for p in model_names_or_paths]
    losses = [example_loss(p, model_type, examples, batch_size, max_input_length, neg_number, seed) for p in paths]
    logits = -np.asarray(losses) / temperature
    weights = np.exp(logits - logits.max())
    weights = (weights / weights.sum()).tolist()
    output, _ = _output_or_temp(output_path)
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
        import hashlib

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
