"""Training: FlagEmbedding's fine-tuning and pretraining data (``data``), hard-negative mining (``mining``),
fine-tuning of embedders and rerankers with the BGE recipe on transformers' Trainer (``trainer``), RetroMAE
pretraining (``pretrain``), and what several processes share (``distributed``)."""

from .data import TrainExample, parse_example, read_examples, read_texts, write_examples
from .mining import MiningReport, add_teacher_scores, mine_hard_negatives
from .pretrain import PretrainArgs, mlm_losses, pretrain
from .trainer import (
    EmbedderTrainingArgs,
    RerankerTrainingArgs,
    RunArgs,
    TrainingArgs,
    TrainResult,
    train_embedder,
    train_reranker,
)

__all__ = [
    "EmbedderTrainingArgs",
    "MiningReport",
    "PretrainArgs",
    "RerankerTrainingArgs",
    "RunArgs",
    "TrainExample",
    "TrainResult",
    "TrainingArgs",
    "add_teacher_scores",
    "mine_hard_negatives",
    "mlm_losses",
    "parse_example",
    "pretrain",
    "read_examples",
    "read_texts",
    "train_embedder",
    "train_reranker",
    "write_examples",
]
