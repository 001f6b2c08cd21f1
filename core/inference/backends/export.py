"""What the exporters trace (the transformers model in eager attention with plain tensor inputs and one output),
and the cache entries they write: checksummed folders, verified on every load, rebuilt when damaged."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...fileio import (
    ArtefactError,
    file_lock,
    folder_fingerprint,
    new_staging_folder,
    publish_folder,
    verify_folder,
    write_manifest,
)
from ..kinds import Head
from ..model_files import load_tokenizer, quiet_transformers, readable_weights

TWO_GB = 2 * 1024**3

logger = logging.getLogger(__name__)


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


def _check_entry(target: Path, kind: str, required: Collection[str]) -> None:
    """Verify a cache entry against its manifest (every file's size and SHA-256) and that it holds ``required``."""
    manifest = verify_folder(target, kinds=(kind,))
    for name in required:
        if name not in manifest["files"]:
            raise ArtefactError(f"{target / name} is missing (not in {target}'s manifest)")


def cached_folder(target: Path, kind: str, build: Callable[[Path], None], required: Collection[str] = ()) -> Path:
    """The cache entry ``target`` (a folder with a manifest of ``kind`` holding the files ``required``), built by
    ``build(staging folder)`` when it is absent, and rebuilt (with a warning naming the entry and the damage)
    when it fails verification. Writers of one entry take turns (a lock between processes and threads): a
    second one waits and then uses the first one's entry; an entry that a writer without the lock put in place
    meanwhile is verified and used."""
    with file_lock(target.with_name(f".{target.name}.lock")):
        replace = False
        if target.exists() or target.is_symlink():
            try:
                _check_entry(target, kind, required)
                return target
            except ArtefactError as exc:
                logger.warning("the cached %s %s is damaged (%s); rebuilding it", kind, target, exc)
                replace = True
        staging = new_staging_folder(target)
        try:
            build(staging)
            write_manifest(staging, kind)
            publish_folder(staging, target, replace)
        except FileExistsError:
            if not target.exists():
                raise
            _check_entry(target, kind, required)  # another writer's entry arrived first: use it when whole
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
