"""Training: FlagEmbedding's fine-tuning data (``data``), hard-negative mining (``mining``) and fine-tuning of
embedders and rerankers with the BGE recipe on transformers' Trainer (``trainer``)."""

from .data import TrainExample, parse_example, read_examples, write_examples
from .mining import MiningReport, add_teacher_scores, mine_hard_negatives
from .trainer import (
    EmbedderTrainingArgs,
    RerankerTrainingArgs,
    TrainingArgs,
    TrainResult,
    train_embedder,
    train_reranker,
)

__all__ = [
    "EmbedderTrainingArgs",
    "MiningReport",
    "RerankerTrainingArgs",
    "TrainExample",
    "TrainResult",
    "TrainingArgs",
    "add_teacher_scores",
    "mine_hard_negatives",
    "parse_example",
    "read_examples",
    "train_embedder",
    "train_reranker",
    "write_examples",
]
