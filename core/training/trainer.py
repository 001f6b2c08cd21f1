"""Fine-tuning BGE embedders and rerankers with the BGE recipe, on transformers' ``Trainer``.

Embedders: InfoNCE over (query, 1 positive + n-1 negatives) groups with temperature 0.02, in-batch
negatives on by default, the query instruction on queries, separate query/passage lengths, and optional
distillation (KL to the softmax of teacher scores). Rerankers: listwise cross-entropy over each group
with the positive first, optional distillation. The Trainer brings checkpoints (resumable), fp16/bf16 on
GPUs, gradient checkpointing, seeding, logging and progress. Every checkpoint and the final folder are
Hugging Face folders; embedders also get sentence-transformers files with the pooling they trained with.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..fileio import (
    MANIFEST_FILE,
    ArtefactError,
    check_replaceable,
    new_staging_folder,
    publish_folder,
    verify_folder,
    write_manifest,
)
from ..inference.batching import PairLayout, cut_second, pad_batch, pad_token_id, tokenize_plain
from ..inference.inputs import check_positive_int
from ..inference.instructions import DEFAULT_INSTRUCTION_FORMAT, apply_instruction
from ..inference.kinds import DEFAULT_MAX_LENGTH
from ..inference.loading import length_limit
from ..inference.model_files import (
    load_tokenizer,
    quiet_transformers,
    resolve_model_path,
    write_sentence_transformers_config,
)
from ..inference.pooling import pool, resolve_pooling
from ..inference.registry import clamp_length
from ..inference.settings import EmbedderSettings, setting_defaults
from .data import TrainExample, read_examples
from .distributed import any_process, barrier, broadcast_object, gather_with_grad, rank

logger = logging.getLogger(__name__)

_EMBEDDER = setting_defaults(EmbedderSettings)  # the embedder settings' declared defaults


def check_number(value: Any, name: str, minimum: float | None = None, above: bool = False,
                 below: float | None = None) -> float:
    """``value`` if it is a finite number (not a bool) of at least ``minimum`` (above it with ``above``) and
    under ``below``; else a TypeError or ValueError naming the setting ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if minimum is not None and (value <= minimum if above else value < minimum):
        raise ValueError(f"{name} must be {'above' if above else 'at least'} {minimum}, got {value}")
    if below is not None and value >= below:
        raise ValueError(f"{name} must be below {below}, got {value}")
    return float(value)


@dataclass
class RunArgs:
    """What every training run takes (fine-tuning and pretraining): the Trainer's settings. ``batch_size`` is
    per process: the global batch is ``batch_size`` x the number of processes. Every setting is checked when
    the arguments are made (and again when a run starts): a nonsensical one is a ValueError naming it.

    ``output_dir`` gets the final model (with a checksummed manifest) and the ``checkpoint-N`` folders (each
    with its own). An existing non-empty ``output_dir`` is replaced only with ``overwrite`` (an earlier
    flagstack training output, never a folder holding the model or the data), or trained in when
    ``resume_from_checkpoint`` is a checkpoint inside it. ``ddp_timeout``: seconds a process waits for the
    others (several-process training) before the run fails."""

    output_dir: str
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 1e-5
    batch_size: int = 4
    seed: int = 42
    fp16: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    optim: str = "adamw_torch"  # any of transformers' optimizer names ("sgd", "adafactor", ...)
    max_grad_norm: float = 1.0  # gradient clipping (0: none)
    save_steps: int = 500
    save_total_limit: int | None = 2
    logging_steps: int = 10
    resume_from_checkpoint: str | bool | None = None
    show_progress: bool = True
    overwrite: bool = False
    ddp_timeout: int = 1800

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise a TypeError or ValueError naming the first nonsensical setting."""
        if isinstance(self.output_dir, os.PathLike):
            self.output_dir = os.fspath(self.output_dir)
        if not isinstance(self.output_dir, str) or not self.output_dir.strip():
            raise TypeError(f"output_dir must be a non-empty path, got {self.output_dir!r}")
        check_number(self.epochs, "epochs", 0, above=True)
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int):
            raise TypeError(f"max_steps must be an int, got {type(self.max_steps).__name__} ({self.max_steps!r})")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be positive, or -1 to run the epochs; got {self.max_steps}")
        check_number(self.learning_rate, "learning_rate", 0, above=True)
        for name in ("batch_size", "save_steps", "logging_steps", "ddp_timeout"):
            check_positive_int(getattr(self, name), name, allow_none=False)
        check_positive_int(self.save_total_limit, "save_total_limit")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an int from 0 to 2**32 - 1, got {self.seed!r}")
        check_number(self.warmup_ratio, "warmup_ratio", 0, below=1)
        check_number(self.weight_decay, "weight_decay", 0)
        check_number(self.max_grad_norm, "max_grad_norm", 0)
        if not isinstance(self.optim, str) or not self.optim:
            raise TypeError(f"optim must be an optimizer name (a str), got {self.optim!r}")
        resume = self.resume_from_checkpoint
        if resume is not None and not isinstance(resume, (str, bool, os.PathLike)):
            raise TypeError(f"resume_from_checkpoint must be a checkpoint folder, True or None, got {resume!r}")


@dataclass
class TrainingArgs(RunArgs):
    """Settings shared by embedder and reranker fine-tuning (FlagEmbedding's names where it has them)."""

    train_group_size: int = 8
    distill: bool | None = None

    def check(self) -> None:
        super().check()
        check_positive_int(self.train_group_size, "train_group_size", allow_none=False)


@dataclass
class EmbedderTrainingArgs(TrainingArgs):
    """Embedder training: the BGE defaults. ``negatives_cross_device`` scores each query against the passages
    of every process (FlagEmbedding's name), not only its own process's. Lengths beyond what the model
    accepts are cut to its limit (with one warning line each). ``query_instruction`` None: no instruction (as in
    FlagEmbedding's fine-tuning; the registry's instruction is an inference default)."""

    # the arguments that are embedder settings under FlagEmbedding's fine-tuning names (argument -> setting of
    # EmbedderSettings): each is read and checked by that setting's field, its one validation. The lengths are not
    # here: a training length is never None (a setting's None means "the model's") and keeps FlagEmbedding's
    # fine-tuning defaults (32 and 128), and it refuses "32" or 32.0, which a setting reads as 32
    embedder_settings: ClassVar[dict[str, str]] = {
        "query_instruction": "query_instruction_for_retrieval", "query_instruction_format": "query_instruction_format",
        "pooling": "pooling_method", "normalize": "normalize_embeddings",
    }

    temperature: float = 0.02
    in_batch_negatives: bool = True
    negatives_cross_device: bool = False
    query_max_length: int = 32
    passage_max_length: int = 128
    query_instruction: str | None = None
    query_instruction_format: str = DEFAULT_INSTRUCTION_FORMAT
    pooling: str | None = _EMBEDDER.pooling_method
    normalize: bool = _EMBEDDER.normalize_embeddings

    def check(self) -> None:
        super().check()
        check_number(self.temperature, "temperature", 0, above=True)
        for name in ("query_max_length", "passage_max_length"):
            check_positive_int(getattr(self, name), name, allow_none=False)
        for name, setting in self.embedder_settings.items():
            setattr(self, name, EmbedderSettings.check_setting(setting, getattr(self, name), name))
        if self.negatives_cross_device and not self.in_batch_negatives:
            raise ValueError("negatives_cross_device shares in-batch negatives across processes: it needs "
                             "in_batch_negatives=True")


@dataclass
class RerankerTrainingArgs(TrainingArgs):
    """Reranker training: listwise over groups. ``max_length`` beyond what the model accepts is cut to its
    limit (with one warning line)."""

    learning_rate: float = 2e-5
    max_length: int = DEFAULT_MAX_LENGTH
    query_max_length: int | None = None

    def check(self) -> None:
        super().check()
        check_positive_int(self.max_length, "max_length", allow_none=False)
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens (a query, a passage and the special tokens), "
                             f"got {self.max_length}")
        check_positive_int(self.query_max_length, "query_max_length")
        if self.query_max_length is not None and self.query_max_length >= self.max_length:
            raise ValueError(f"query_max_length ({self.query_max_length}) must be below max_length "
                             f"({self.max_length}): the passage needs room too")


@dataclass
class TrainResult:
    """Where the model went and how training went."""

    output_dir: str
    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)  # every logged entry (losses by part, lr, ...)

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def last_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan

    @property
    def mean_loss(self) -> float:
        """The Trainer's mean loss over the steps this run took (logged even when no step reached
        ``logging_steps``; after a resume, over the resumed steps)."""
        means = [entry["train_loss"] for entry in self.history if "train_loss" in entry]
        return float(means[-1]) if means else math.nan


# data --------------------------------------------------------------------------------------------


class GroupDataset(torch.utils.data.Dataset):
    """Each item: a query, one positive and ``group_size - 1`` negatives (sampled, repeated when too few),
    and their teacher scores when distilling. Sampling is seeded per item and per visit."""

    def __init__(self, examples: Sequence[TrainExample], group_size: int, seed: int, distill: bool) -> None:
        if group_size < 1:
            raise ValueError(f"train_group_size must be at least 1, got {group_size}")
        for i, ex in enumerate(examples):
            if group_size > 1 and not ex.neg:
                raise ValueError(f"example {i} (query {ex.query[:60]!r}) has no negatives; mine some or use "
                                 "train_group_size=1 with in-batch negatives")
            if distill and (ex.pos_scores is None or (ex.neg and ex.neg_scores is None)):
                raise ValueError(f"example {i} has no teacher scores; distillation needs pos_scores and neg_scores")
        self.examples = list(examples)
        self.group_size = group_size
        self.seed = seed
        self.distill = distill
        self._visits = [0] * len(self.examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.examples[i]
        rng = random.Random(f"{self.seed}:{i}:{self._visits[i]}")
        self._visits[i] += 1
        p = rng.randrange(len(ex.pos))
        need = self.group_size - 1
        if need:
            pool = list(range(len(ex.neg))) * math.ceil(need / len(ex.neg))
            negatives = rng.sample(pool, need)
        else:
            negatives = []
        item: dict[str, Any] = {
            "query": ex.query,
            "passages": [ex.pos[p], *(ex.neg[n] for n in negatives)],
        }
        if self.distill:
            assert ex.pos_scores is not None
            item["teacher"] = [ex.pos_scores[p], *((ex.neg_scores or [])[n] for n in negatives)]
        return item


def _teacher(features: list[dict[str, Any]]) -> torch.Tensor | None:
    if "teacher" not in features[0]:
        return None
    return torch.tensor([f["teacher"] for f in features], dtype=torch.float32)


class EmbedderCollator:
    """Tokenizes queries (with the instruction) and passages at their own maximum lengths."""

    def __init__(self, tokenizer: Any, args: EmbedderTrainingArgs) -> None:
        self.tokenizer = tokenizer
        self.args = args

    def _tokens(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"))

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        queries = apply_instruction(
            [f["query"] for f in features], self.args.query_instruction, self.args.query_instruction_format
        )
        passages = [p for f in features for p in f["passages"]]
        batch: dict[str, Any] = {
            "query": self._tokens(queries, self.args.query_max_length),
            "passage": self._tokens(passages, self.args.passage_max_length),
        }
        teacher = _teacher(features)
        if teacher is not None:
            batch["teacher"] = teacher
        return batch


class RerankerCollator:
    """Builds (query, passage) pairs exactly as flag_core's reranker runtime does at inference."""

    def __init__(self, tokenizer: Any, args: RerankerTrainingArgs) -> None:
        self.tokenizer = tokenizer
        self.layout = PairLayout.of(tokenizer)
        self.max_length = args.max_length
        self.query_max_length = args.query_max_length or args.max_length * 3 // 4
        self.token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        queries = [f["query"] for f in features for _ in f["passages"]]
        passages = [p for f in features for p in f["passages"]]
        query_ids, _ = tokenize_plain(self.tokenizer, queries, self.query_max_length)
        passage_ids, _ = tokenize_plain(self.tokenizer, passages, self.max_length)
        ids, types = [], []
        for q, p in zip(query_ids, passage_ids, strict=True):
            p, _ = cut_second(q, p, self.max_length - self.layout.total)
            pair, pair_types = self.layout.join(q, p)
            ids.append(pair)
            types.append(pair_types)
        batch: dict[str, Any] = {
            "pairs": pad_batch(ids, pad_token_id(self.tokenizer), self.tokenizer.padding_side, torch.device("cpu"),
                               token_types=types if self.token_types else False),
            "group_size": len(features[0]["passages"]),
        }
        teacher = _teacher(features)
        if teacher is not None:
            batch["teacher"] = teacher
        return batch


# losses ------------------------------------------------------------------------------------------


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)) per group, averaged over groups."""
    return F.kl_div(F.log_softmax(student, dim=-1), F.softmax(teacher.to(student.device), dim=-1),
                    reduction="batchmean")


def embedder_loss(
    query: torch.Tensor, passages: torch.Tensor, temperature: float, in_batch: bool, teacher: torch.Tensor | None,
    cross_device: bool = False,
) -> torch.Tensor:
    """InfoNCE: each query against its group (and, with ``in_batch``, every passage in the batch; with
    ``cross_device`` too, every passage of every process)."""
    batch, group = query.shape[0], passages.shape[0] // query.shape[0]
    grouped = torch.einsum("bd,bgd->bg", query, passages.view(batch, group, -1)) / temperature
    if in_batch:
        if cross_device:
            query, passages = gather_with_grad(query), gather_with_grad(passages)
        scores = query @ passages.T / temperature
        target = torch.arange(query.shape[0], device=query.device) * group
    else:
        scores, target = grouped, torch.zeros(batch, dtype=torch.long, device=query.device)
    loss = F.cross_entropy(scores, target)
    if teacher is not None:
        loss = loss + distillation_loss(grouped, teacher)
    return loss


def reranker_loss(logits: torch.Tensor, group: int, teacher: torch.Tensor | None) -> torch.Tensor:
    """Listwise cross-entropy with the positive first in each group."""
    grouped = logits.view(-1, group)
    loss = F.cross_entropy(grouped, torch.zeros(grouped.shape[0], dtype=torch.long, device=grouped.device))
    if teacher is not None:
        loss = loss + distillation_loss(grouped, teacher)
    return loss


# objectives: what one training step computes, and what a save adds ----------------------------------


class Objective:
    """What a training run computes. The hooks' defaults suit a transformers model that the Trainer saves
    itself; pretraining overrides them (its model is an encoder plus a decoder that is not kept). ``kind`` names
    the manifest of the final folder; checkpoints' manifests are ``kind + "-checkpoint"``."""

    kind: ClassVar[str] = "training"

    @property
    def checkpoint_kind(self) -> str:
        return f"{self.kind}-checkpoint"

    def loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def save_weights(self, model: Any, folder: str, final: bool) -> bool:
        """Write the weights into ``folder`` (a checkpoint, or the ``final`` folder) and return True, or return
        False to let the Trainer write them."""
        return False

    def load_weights(self, model: Any, folder: str) -> bool:
        """Read the weights of a checkpoint folder into ``model`` and return True, or return False."""
        return False

    def on_save(self, model: Any, folder: str) -> None:
        """Extra files for every saved folder."""

    def take_logs(self) -> dict[str, float]:
        """Figures gathered since the last log (averaged over processes), added to the Trainer's log."""
        return {}


class EmbedderObjective(Objective):
    """InfoNCE over query/passage vectors pooled and normalised as at inference; every save also writes the
    sentence-transformers files, so checkpoints load with the pooling they trained with."""

    kind: ClassVar[str] = "embedder-training"

    def __init__(self, args: EmbedderTrainingArgs, pooling: str) -> None:
        self.args = args
        self.pooling = pooling

    def _embed(self, model: Any, features: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = model(**features, return_dict=True).last_hidden_state
        vectors = pool(hidden.float(), features["attention_mask"], self.pooling)
        return F.normalize(vectors, dim=-1) if self.args.normalize else vectors

    def loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        return embedder_loss(self._embed(model, inputs["query"]), self._embed(model, inputs["passage"]),
                             self.args.temperature, self.args.in_batch_negatives, inputs.get("teacher"),
                             cross_device=self.args.negatives_cross_device)

    def on_save(self, model: Any, folder: str) -> None:
        write_sentence_transformers_config(folder, self.pooling, self.args.normalize, self.args.passage_max_length,
                                           int(model.config.hidden_size))


class RerankerObjective(Objective):
    """Listwise cross-entropy over each group's logits (positive first)."""

    kind: ClassVar[str] = "reranker-training"

    def loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        logits = model(**inputs["pairs"], return_dict=True).logits.float().view(-1)
        return reranker_loss(logits, inputs["group_size"], inputs.get("teacher"))


# the trainer -------------------------------------------------------------------------------------

STAGING = ".staging"  # inside the run folder: folders are written here, then renamed into place
_NOT_FINAL = ("runs", STAGING)  # with the checkpoint-N folders: what the final folder's manifest leaves out


def _stop_if_not_finite(loss: torch.Tensor, step: int) -> None:
    """Raise when the loss (on any process) is NaN or infinite: a run that goes on writes a broken model."""
    value = float(loss.detach().float().sum())
    if any_process(not math.isfinite(value), loss.device):
        shown = value if not math.isfinite(value) else "not finite on another process"
        raise ValueError(f"training stopped at step {step}: the loss is {shown}, so the weights would be garbage; "
                         "no model was written. Try a lower learning_rate, fp32 instead of fp16, or check the "
                         "settings (e.g. the temperature) and the data")


def _move_into(source: Path, target: Path) -> None:
    """Move every entry of ``source`` into ``target`` (each by one rename, replacing what is there)."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        destination = target / entry.name
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        os.replace(entry, destination)


def _checkpoint_names(folder: Path) -> list[str]:
    """The ``checkpoint-N`` folders directly in ``folder`` that carry a flagstack manifest."""
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in folder.iterdir()
                  if entry.name.startswith("checkpoint-") and (entry / MANIFEST_FILE).is_file())


def write_final_manifest(folder: Path, kind: str) -> None:
    """The manifest of a run folder's final model: every file but the checkpoints (which carry their own),
    ``runs/`` and the staging folder."""
    excluded = [entry.name for entry in folder.iterdir() if entry.name.startswith("checkpoint-")]
    write_manifest(folder, kind, exclude=[*excluded, *_NOT_FINAL])


@dataclass
class OutputPlan:
    """Where a run writes: ``work`` is the run folder (``output`` itself, or, when an earlier output is to be
    replaced, a staging folder beside it, renamed over ``output`` once the run succeeds); ``resume`` is the
    verified checkpoint to resume from."""

    output: Path
    inputs: list[Path]
    replace: bool
    created: bool
    resume: Path | None
    kind: str


def plan_output(args: RunArgs, inputs: Sequence[str | os.PathLike[str]], kind: str) -> OutputPlan:
    """Check, before any work, that the run may write to ``args.output_dir`` (fileio.check_replaceable: a
    new or empty folder; an earlier flagstack output with ``overwrite``; or the folder of the checkpoint it
    resumes from), never a folder that is or holds an input; and verify the checkpoint to resume from
    against its manifest (an ArtefactError naming a damaged file)."""
    output = Path(args.output_dir).expanduser()
    sources = [Path(item).expanduser() for item in inputs]
    resume = _resume_checkpoint(args.resume_from_checkpoint, output, f"{kind}-checkpoint")
    created = not output.exists()
    if resume is not None and resume.resolve().is_relative_to(output.resolve()):
        # resuming in the run's own folder: train on in it (it must still not hold an input)
        top = resume.resolve().relative_to(output.resolve()).parts[0]
        check_replaceable(output, sources, overwrite=True, markers=(top,), what="training output", kinds=(kind,))
        return OutputPlan(output, sources, False, False, resume, kind)
    if output.is_dir() and not output.is_symlink() and not any(output.iterdir()):
        return OutputPlan(output, sources, False, False, resume, kind)
    exists = check_replaceable(output, sources, args.overwrite, markers=_checkpoint_names(output),
                               what="training output", kinds=(kind,))
    return OutputPlan(output, sources, exists, created, resume, kind)


def _resume_checkpoint(asked: str | bool | os.PathLike[str] | None, output: Path, kind: str) -> Path | None:
    """The checkpoint folder to resume from (True: the last one in ``output``), verified whole."""
    from transformers.trainer_utils import get_last_checkpoint

    if asked is None or asked is False:
        return None
    if asked is True:
        last = get_last_checkpoint(str(output)) if output.is_dir() else None
        if last is None:
            raise ValueError(f"resume_from_checkpoint=True but {output} holds no checkpoint-N folder")
        folder = Path(last)
    else:
        folder = Path(asked).expanduser()
    if not folder.is_dir():
        raise ValueError(f"no checkpoint to resume from at {folder}: give a checkpoint-N folder of an earlier run")
    try:
        verify_folder(folder, kinds=[kind])
    except ArtefactError as exc:
        raise ArtefactError(f"cannot resume from {folder}: {exc}") from None
    return folder


def _trainer_class() -> Any:
    from transformers import Trainer
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

    class BGETrainer(Trainer):  # type: ignore[misc]
        """transformers' Trainer with an objective's loss and files. Checkpoints are written by rank 0 (and each
        rank's RNG state) into a staging folder, given a manifest and renamed into place once complete, so
        ``checkpoint-N`` is either whole or absent. A loss that is NaN or infinite stops the run."""

        objective: Objective

        def __init__(self, *args: Any, objective: Objective, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.objective = objective
            self.final_save = False  # set for the final folder, which may differ from a checkpoint

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            loss = self.objective.loss(model, inputs)
            _stop_if_not_finite(loss, self.state.global_step + 1)
            return (loss, None) if return_outputs else loss

        def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
            folder = str(output_dir or self.args.output_dir)
            with quiet_transformers():  # no "Writing model shards" bar on every checkpoint
                if not self.args.should_save or not self.objective.save_weights(self.model, folder, self.final_save):
                    super()._save(folder, state_dict)
                elif self.processing_class is not None:
                    self.processing_class.save_pretrained(folder)
            if self.args.should_save:
                self.objective.on_save(self.model, folder)

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            if not self.objective.load_weights(model if model is not None else self.model, resume_from_checkpoint):
                super()._load_from_checkpoint(resume_from_checkpoint, model)

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            root = Path(str(self.args.output_dir))
            name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            staged = root / STAGING / name
            if self.args.should_save and staged.exists():
                shutil.rmtree(staged)  # left by a run that died while saving
            barrier()
            self.args.output_dir = str(root / STAGING)
            try:
                super()._save_checkpoint(model, trial)  # every rank adds its RNG state
            finally:
                self.args.output_dir = str(root)
            barrier()
            if self.args.should_save:
                write_manifest(staged, self.objective.checkpoint_kind)
                if (root / name).exists():
                    shutil.rmtree(root / name)
                os.replace(staged, root / name)
                rotate_checkpoints(output_dir=str(root), save_total_limit=self.args.save_total_limit,
                                   best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
            barrier()

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:
                logs.update(self.objective.take_logs())
            super().log(logs, start_time)

    return BGETrainer


def _device_precision(args: RunArgs) -> dict[str, Any]:
    accelerated = torch.cuda.is_available()
    if (args.fp16 or args.bf16) and not accelerated:
        logger.warning("fp16/bf16 training needs a GPU; training in fp32 on the CPU")
    return {"fp16": args.fp16 and accelerated, "bf16": args.bf16 and accelerated, "use_cpu": not accelerated}


def training_arguments(args: RunArgs, output_dir: str | os.PathLike[str] | None = None) -> Any:
    """transformers' ``TrainingArguments`` for ``args`` (writing to ``output_dir``, default ``args.output_dir``);
    under ``torchrun`` making them starts the process group, with ``args.ddp_timeout``."""
    from transformers import TrainingArguments

    known = inspect.signature(TrainingArguments.__init__).parameters
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in known else "gradient_checkpointing"
    extra_args: dict[str, Any] = {checkpointing: args.gradient_checkpointing, **_device_precision(args)}
    return TrainingArguments(
        output_dir=str(output_dir or args.output_dir),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        warmup_steps=args.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=args.weight_decay,
        optim=args.optim,
        max_grad_norm=args.max_grad_norm,
        logging_steps=args.logging_steps,
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        seed=args.seed,
        ddp_timeout=args.ddp_timeout,
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=not args.show_progress,
        dataloader_num_workers=0,
        **extra_args,
    )


def run_training(objective: Objective, model: Any, tokenizer: Any, dataset: Any, collator: Any, args: RunArgs,
                 plan: OutputPlan | None = None) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``objective`` under transformers' Trainer (one process, or each
    process of a ``torchrun`` launch), then write the final folder with its manifest (rank 0). ``plan`` (from
    :func:`plan_output`, made here when not given) says where: in ``output_dir``, or, replacing an earlier
    output, in a staging folder renamed over it at the end. A failed run leaves an earlier output as it was and
    removes what it wrote but its checkpoints (a new folder holding nothing else is removed too)."""
    from transformers import set_seed

    args.check()
    plan = plan or plan_output(args, (), objective.kind)
    set_seed(args.seed)
    training_args = training_arguments(args)
    _ = training_args.world_size  # under torchrun: starts the process group (rank 0 names the staging folder)
    work = plan.output
    if plan.replace:
        work = Path(broadcast_object(str(new_staging_folder(plan.output)) if rank() == 0 else None))
        training_args.output_dir = str(work)
    try:
        trainer = _trainer_class()(
            model=model, args=training_args, train_dataset=dataset, data_collator=collator,
            processing_class=tokenizer, objective=objective,
        )
        started = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=str(plan.resume) if plan.resume else None)
        final = work / STAGING / "final"
        if training_args.should_save and final.exists():
            shutil.rmtree(final)
        barrier()
        trainer.final_save = True
        trainer.save_model(str(final))
        barrier()
        if training_args.should_save:
            _move_into(final, work)
            shutil.rmtree(work / STAGING, ignore_errors=True)
            write_final_manifest(work, plan.kind)
            if plan.replace:  # the earlier output goes only now, and only if it may still be replaced
                check_replaceable(plan.output, plan.inputs, overwrite=True, markers=_checkpoint_names(plan.output),
                                  what="training output", kinds=(plan.kind,))
                publish_folder(work, plan.output, replace=True)
        barrier()
    except BaseException:
        if rank() == 0:
            _clean_failed_run(plan, work)
        raise
    history = [dict(entry) for entry in trainer.state.log_history]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    return TrainResult(str(plan.output), int(output.global_step), losses, time.perf_counter() - started, history)


def _clean_failed_run(plan: OutputPlan, work: Path) -> None:
    """After a failed run: a staging run folder goes; in ``output_dir`` the staging area goes, and a folder the
    run created is removed when it holds nothing (checkpoints written before the failure are kept)."""
    if plan.replace:
        shutil.rmtree(work, ignore_errors=True)
        return
    shutil.rmtree(work / STAGING, ignore_errors=True)
    if plan.created and work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    elif _checkpoint_names(work):
        logger.warning("the run failed; the checkpoints it wrote before are kept in %s", work)


def _examples(data: str | os.PathLike[str] | Sequence[TrainExample]) -> list[TrainExample]:
    return read_examples(data) if isinstance(data, (str, os.PathLike)) else list(data)


def _distill(examples: Sequence[TrainExample], asked: bool | None) -> bool:
    scored = all(ex.pos_scores is not None and (not ex.neg or ex.neg_scores is not None) for ex in examples)
    return scored if asked is None else asked


def _inputs(path: Path, data: str | os.PathLike[str] | Sequence[Any]) -> list[Path]:
    """What a run reads and its output must never replace: the model folder and the data file."""
    return [path, Path(data)] if isinstance(data, (str, os.PathLike)) else [path]


def train_embedder(
    model_name_or_path: str, data: str | os.PathLike[str] | Sequence[TrainExample], args: EmbedderTrainingArgs
) -> TrainResult:
    """Fine-tune an embedding model on FlagEmbedding-format data; the result is written to ``output_dir``
    (see :class:`RunArgs` for when an existing one is replaced). Query and passage lengths beyond the model's
    limit are cut to it, with one warning line each."""
    from transformers import AutoModel

    args.check()
    path = resolve_model_path(model_name_or_path)
    examples = _examples(data)
    plan = plan_output(args, _inputs(path, data), EmbedderObjective.kind)
    pooling = resolve_pooling(model_name_or_path, path, args.pooling)
    tokenizer = load_tokenizer(path)
    with quiet_transformers():
        model = AutoModel.from_pretrained(path)
    limit = length_limit(model.config, tokenizer)
    args = replace(args, pooling=pooling,  # the caller's args stay as given
                   query_max_length=clamp_length(args.query_max_length, limit, "query_max_length"),
                   passage_max_length=clamp_length(args.passage_max_length, limit, "passage_max_length"))
    dataset = GroupDataset(examples, args.train_group_size, args.seed, _distill(examples, args.distill))
    return run_training(EmbedderObjective(args, pooling), model, tokenizer, dataset, EmbedderCollator(tokenizer, args),
                        args, plan)


def train_reranker(
    model_name_or_path: str, data: str | os.PathLike[str] | Sequence[TrainExample], args: RerankerTrainingArgs
) -> TrainResult:
    """Fine-tune (or start from an encoder) a cross-encoder reranker with listwise loss; the result is written
    to ``output_dir`` (see :class:`RunArgs`). A ``max_length`` beyond the model's limit is cut to it, with one
    warning line."""
    from transformers import AutoModelForSequenceClassification, set_seed

    args.check()
    path = resolve_model_path(model_name_or_path)
    examples = _examples(data)
    plan = plan_output(args, _inputs(path, data), RerankerObjective.kind)
    tokenizer = load_tokenizer(path)
    set_seed(args.seed)  # a new classifier head is initialised here: seed it
    with quiet_transformers(errors_only=True):  # a fresh classifier head is expected when starting from an encoder
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    max_length = clamp_length(args.max_length, length_limit(model.config, tokenizer), "max_length")
    query_max_length = args.query_max_length
    if query_max_length is not None and query_max_length >= max_length:
        query_max_length = clamp_length(query_max_length, max_length - 1, "query_max_length")
    args = replace(args, max_length=max_length, query_max_length=query_max_length)  # the caller's args stay
    dataset = GroupDataset(examples, args.train_group_size, args.seed, _distill(examples, args.distill))
    return run_training(RerankerObjective(), model, tokenizer, dataset, RerankerCollator(tokenizer, args), args, plan)
