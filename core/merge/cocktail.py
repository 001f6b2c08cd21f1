"""LM-Cocktail's interface: merge embedders ("encoder"), rerankers ("reranker") and LLMs ("decoder") by
fixed weights (:func:`mix_models`) or by weights chosen from each model's loss on a few examples of the
target task (:func:`mix_models_with_data`); :func:`merged_model` keeps merges in flagstack's cache for
building framework objects from them (:class:`FromMerge`). The merge itself is :mod:`.checkpoints`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..fileio import ArtefactError, cache_folder, file_lock, jsonl_rows, verify_folder
from ..inference.inputs import check_positive_int
from ..inference.kinds import ModelKind, merge_type
from ..inference.loading import length_limit
from ..inference.model_files import load_tokenizer, quiet_transformers, resolve_model_path
from ..inference.pooling import pool, resolve_pooling
from ..inference.registry import clamp_length
from ..inference.reranker import FlagReranker
from ..training.data import TrainExample, parse_example
from ..training.trainer import check_number
from .checkpoints import MERGE_KIND, merge_checkpoints

logger = logging.getLogger(__name__)


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
    """(query, [pos[0], negatives...]) per example, as LM-Cocktail builds them: ``neg_number`` negatives drawn
    from the example's own (LM-Cocktail's draw is unseeded; here it is seeded, and when ``neg_number`` is the
    number of negatives the loss does not depend on the draw). An example with fewer negatives (LM-Cocktail
    stops there with an error) is topped up from the other examples' positives, with one warning."""
    rng = random.Random(seed)
    groups = []
    short = 0
    for i, ex in enumerate(examples):
        negatives = list(ex.neg)
        if len(negatives) < neg_number:
            short += 1
            others = [p for j, other in enumerate(examples) if j != i for p in other.pos if p not in ex.pos]
            negatives += rng.sample(others, min(len(others), neg_number - len(negatives)))
        groups.append((ex.query, [ex.pos[0], *rng.sample(negatives, min(neg_number, len(negatives)))]))
    if short:
        logger.warning("%d of %d examples have fewer than neg_number=%d negatives: topped up with other examples' "
                       "positives (LM-Cocktail refuses such examples)", short, len(examples), neg_number)
    return groups


def _batches(items: Sequence[Any], batch_size: int) -> list[Sequence[Any]]:
    """Consecutive runs of ``batch_size`` items (the last one may be shorter), as LM-Cocktail batches."""
    return [items[start : start + batch_size] for start in range(0, len(items), batch_size)]


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _embedder_loss(model_path: str, tokenizer: Any, groups: Sequence[tuple[str, list[str]]], batch_size: int,
                   max_input_length: int, pooling: str) -> float:
    """LM-Cocktail's embedder loss: per batch, every query against every passage of the batch (its own positive
    the target), vectors pooled (``cls``: the first token's state, or the model's own pooling) and normalised,
    scores / 0.05, cross-entropy averaged over the batch's queries; then averaged over batches."""
    from transformers import AutoModel

    device = _device()
    with quiet_transformers():
        model: Any = AutoModel.from_pretrained(model_path)
    model.to(device).eval()
    method = "cls" if pooling == "cls" else resolve_pooling(model_path, Path(model_path))
    length = clamp_length(max_input_length, length_limit(model.config, tokenizer), "max_input_length")

    def embed(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=length, return_tensors="pt").to(device)
        hidden = model(**tokens, return_dict=True).last_hidden_state
        return F.normalize(pool(hidden, tokens["attention_mask"], method), dim=-1)

    losses = []
    with torch.inference_mode():
        for batch in _batches(groups, batch_size):
            queries = embed([query for query, _ in batch])
            passages = embed([text for _, texts in batch for text in texts])
            starts = np.cumsum([0] + [len(texts) for _, texts in batch[:-1]])
            scores = queries @ passages.T / 0.05
            target = torch.as_tensor(starts, dtype=torch.long, device=scores.device)
            losses.append(float(F.cross_entropy(scores.float(), target)))
    return float(np.mean(losses))


def _reranker_loss(model_path: str, groups: Sequence[tuple[str, list[str]]], batch_size: int,
                   max_input_length: int) -> float:
    """The reranker loss on LM-Cocktail's terms (which has none): each group's listwise cross-entropy (the
    positive first) over the reranker's scores at ``max_input_length``, averaged per batch, then over batches."""
    reranker = FlagReranker(model_path, batch_size=batch_size, devices=None)
    length = clamp_length(max_input_length, reranker.runtime.max_length, "max_input_length")
    losses = []
    for batch in _batches(groups, batch_size):
        pairs = [(query, text) for query, texts in batch for text in texts]
        scores = iter(reranker.compute_score(pairs, max_length=length))
        per_group = [_cross_entropy([next(scores) for _ in texts]) for _, texts in batch]
        losses.append(float(np.mean(per_group)))
    return float(np.mean(losses))


def _cross_entropy(scores: list[float]) -> float:
    values = np.asarray(scores, dtype=np.float64)
    return float(np.log(np.exp(values - values.max()).sum()) + values.max() - values[0])


def _decoder_loss(model_path: str, tokenizer: Any, examples: Sequence[dict[str, str]], batch_size: int,
                  max_input_length: int) -> float:
    """LM-Cocktail's decoder loss: ``input + " " + output`` (+ eos) tokenized whole, the tokens of ``input``
    masked from the labels, cut at ``max_input_length``; the model's mean token loss per batch, averaged over
    batches."""
    from transformers import AutoModelForCausalLM

    device = _device()
    with quiet_transformers():
        model: Any = AutoModelForCausalLM.from_pretrained(model_path)
    model.to(device).eval()
    length = clamp_length(max_input_length, length_limit(model.config, tokenizer), "max_input_length")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    rows = []
    for row in examples:
        ids = list(tokenizer.encode(row["input"] + " " + row["output"]))
        if eos is not None:
            ids.append(eos)
        prompt = tokenizer.encode(row["input"])
        labels = [-100] * len(prompt) + ids[len(prompt):]
        rows.append((ids[:length], labels[:length]))
    losses = []
    with torch.inference_mode():
        for number, batch in enumerate(_batches(rows, batch_size)):
            if all(label == -100 for _, labels in batch for label in labels[1:]):
                raise ValueError(f"examples {number * batch_size} to {number * batch_size + len(batch) - 1} have no "
                                 f"output tokens within max_input_length={length}")
            width = max(len(ids) for ids, _ in batch)
            filler = pad if pad is not None else (eos if eos is not None else 0)
            input_ids = torch.tensor([ids + [filler] * (width - len(ids)) for ids, _ in batch], device=device)
            label_ids = torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in batch], device=device)
            if pad is not None:  # LM-Cocktail's mask: every position that is not the pad token
                mask = input_ids.ne(pad).long()
            else:
                mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch], device=device)
            out = model(input_ids=input_ids, attention_mask=mask, labels=label_ids)
            losses.append(float(out.loss))
    return float(np.mean(losses))


POOLINGS = ("cls", "model")


def example_loss(
    model_path: str, model_type: str, examples: Sequence[Any], batch_size: int, max_input_length: int,
    neg_number: int, seed: int, pooling: str = "cls", tokenizer_path: str | None = None,
) -> float:
    """The loss of one model on the examples, the signal LM-Cocktail weighs models by (see
    :func:`mix_models_with_data`). ``tokenizer_path``: whose tokenizer reads the examples (LM-Cocktail: the
    first model's, for every model), default the model's own."""
    kind = merge_type(model_type)
    check_positive_int(batch_size, "batch_size", allow_none=False)
    check_positive_int(max_input_length, "max_input_length", allow_none=False)
    check_positive_int(neg_number, "neg_number", allow_none=False)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if kind is ModelKind.RERANKER:
        return _reranker_loss(model_path, _groups(examples, neg_number, seed), batch_size, max_input_length)
    tokenizer = load_tokenizer(Path(tokenizer_path or model_path))
    if kind is ModelKind.EMBEDDER:
        return _embedder_loss(model_path, tokenizer, _groups(examples, neg_number, seed), batch_size,
                              max_input_length, pooling)
    return _decoder_loss(model_path, tokenizer, examples, batch_size, max_input_length)


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
    pooling: str = "cls",
) -> MergeResult:
    """Merge with weights ``softmax(-loss / temperature)`` of each model's loss on ``example_data``, computed as
    LM-Cocktail 0.0.4's ``mix_models_with_data`` computes it: FlagEmbedding jsonl rows (query/pos/neg) for
    encoders and rerankers, {"input", "output"} rows for decoders; a path or a list. The examples go in
    consecutive batches of ``batch_size``; every model reads them with the first model's tokenizer, cut at
    ``max_input_length`` (and at the model's limit, with one warning line); the loss is averaged per batch, then
    over batches.

    - Encoders: ``pos[0]`` and ``neg_number`` negatives per example (seeded by ``seed``; too few are topped up
      from other examples' positives, with a warning, where LM-Cocktail fails); each query is scored against
      every passage of its batch (in-batch negatives), vectors normalised, temperature 0.05, and pooled by
      ``pooling``: ``"cls"`` (LM-Cocktail's, the default) or ``"model"`` (the model's own pooling, e.g. mean for
      sentence-transformers models: the loss of the model as it is used).
    - Decoders: the LM loss of ``output`` after ``input``.
    - Rerankers (not in LM-Cocktail): the listwise cross-entropy of each group, the same groups and batches.

    Returns weights and losses."""
    merge_type(model_type)
    check_number(temperature, "temperature", 0, above=True)
    examples = _examples(example_data, model_type)
    paths = [str(resolve_model_path(p)) for p in model_names_or_paths]
    if not paths:
        raise ValueError("give at least one model to merge")
    losses = [example_loss(p, model_type, examples, batch_size, max_input_length, neg_number, seed, pooling,
                           tokenizer_path=paths[0]) for p in paths]
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
        name = hashlib.sha256(key.encode()).hexdigest()[:24]
        with file_lock(root / f".{name}.lock"):  # a second process merging the same models waits, then reuses
            cached = root / name
            if cached.exists():
                try:
                    verify_folder(cached, kinds=[MERGE_KIND])
                    return str(cached)
                except ArtefactError as exc:
                    logger.warning("merging again: the cached merge is damaged or incomplete (%s)", exc)
                kwargs = {**kwargs, "overwrite": True}
            return _merge(models, model_type, weights, example_data, cached, kwargs)
    return _merge(models, model_type, weights, example_data, output_path, kwargs)


def _merge(models: Sequence[str], model_type: str, weights: Sequence[float] | None, example_data: Any,
           output_path: str | os.PathLike[str], kwargs: dict[str, Any]) -> str:
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
