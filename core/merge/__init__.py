"""Model merging (LM-Cocktail): ``checkpoints`` averages checkpoints tensor by tensor; ``cocktail`` is
LM-Cocktail's interface (fixed weights, weights from examples, a weight sweep, cached merges and
``from_merge`` for framework classes)."""

from .checkpoints import Checkpoint, check_compatible, check_weights, merge_checkpoints
from .cocktail import (
    FromMerge,
    MergeResult,
    example_loss,
    merged_model,
    mix_models,
    mix_models_with_data,
    sweep_weights,
)

__all__ = [
    "Checkpoint",
    "FromMerge",
    "MergeResult",
    "check_compatible",
    "check_weights",
    "example_loss",
    "merge_checkpoints",
    "merged_model",
    "mix_models",
    "mix_models_with_data",
    "sweep_weights",
]
