"""What the exporters trace: the transformers model in eager attention with plain tensor inputs and one output."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...fileio import folder_fingerprint
from ..kinds import Head
from ..model_files import load_tokenizer, quiet_transformers, readable_weights

TWO_GB = 2 * 1024**3


def export_key(kind: str, path: Path, head: Head) -> str:
    """The cache key of an export: its format, the folder and its weights' fingerprint, the head, torch."""
    text = "\n".join([kind, str(path.resolve()), folder_fingerprint(path), head.value, torch.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Traceable(torch.nn.Module):
    """The model with plain tensor inputs and one tensor output, for an exporter."""

    def __init__(self, model: torch.nn.Module, output: str) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
                ) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return getattr(out, self.output)  # type: ignore[no-any-return]


@dataclass
class Traced:
    """The module to trace, its input names and a padded sample batch, its output's name, the model config."""

    module: Traceable
    names: list[str]
    sample: tuple[torch.Tensor, ...]
    output: str
    config: Any


def traceable(path: Path, head: Head, trust_remote_code: bool = False, max_bytes: int | None = None) -> Traced:
    """The model in ``path`` ready to trace: fp32, eager attention, with a padded sample (an all-ones mask could be
    traced away)."""
    with quiet_transformers(errors_only=True), readable_weights(path):  # a new head's warnings are expected
        model = head.auto_class().from_pretrained(
            path, attn_implementation="eager", dtype=torch.float32, trust_remote_code=trust_remote_code,
            use_safetensors=True if any(path.glob("*.safetensors")) else None,
        ).eval()
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if max_bytes is not None and size >= max_bytes:
        raise ValueError(f"{path} holds {size / 1e9:.1f} GB of weights: too large for one exported file; "
                         "use backend='torch'")
    tokenizer = load_tokenizer(path, trust_remote_code)
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
        names.append("token_type_ids")
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 5:] = 0
    sample = (torch.ones((2, 8), dtype=torch.long), mask, torch.zeros((2, 8), dtype=torch.long))[: len(names)]
    output = "last_hidden_state" if head is Head.BASE else "logits"
    return Traced(Traceable(model, output), names, sample, output, model.config)
