"""Merging checkpoints tensor by tensor: a weighted average of parameters read one tensor of one model at
a time from safetensors files and written shard by shard, so peak memory stays near one model. Everything
is checked (weights, architectures, every tensor's name, shape and dtype) before anything is written; the
output is built in a staging folder beside it, given a checksummed manifest and renamed into place at the end.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..fileio import check_replaceable, staged_folder
from ..inference.kinds import ModelKind, merge_type
from ..inference.model_files import (
    MERGE_CONFIG_FILE,
    copy_support_files,
    read_json,
    readable_weights,
    resolve_model_path,
    write_sentence_transformers_config,
)
from ..inference.pooling import resolve_pooling

_FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


def check_weights(weights: Sequence[float], count: int, allow_negative: bool = False) -> list[float]:
    """Weights must be finite numbers, one per model, summing to 1 within 1e-3, and not negative unless
    ``allow_negative`` (a negative weight subtracts a model: task arithmetic, not a cocktail)."""
    values = list(weights)
    if len(values) != count:
        raise ValueError(f"{len(values)} weights for {count} models: give one weight per model")
    for i, w in enumerate(values):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"weights[{i}] is {w!r}; weights must be finite numbers")
        if w < 0 and not allow_negative:
            raise ValueError(f"weights[{i}] is {w}: negative weights subtract a model; pass allow_negative=True "
                             "(--allow-negative-weights) if that is what you want")
    if abs(sum(values) - 1.0) > 1e-3:
        raise ValueError(f"weights must sum to 1 (within 1e-3), they sum to {sum(values):.6f}")
    return [float(w) for w in values]


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
            with readable_weights(folder), safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open handles are not mappings
                    piece = handle.get_slice(name)
                    self.tensors[name] = TensorInfo(file.name, tuple(piece.get_shape()), str(piece.get_dtype()))
        self.config = read_json(folder / "config.json", dict)

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor, read on its own (the file is opened and closed around it)."""
        from safetensors import safe_open

        file = self.folder / self.tensors[name].file
        with readable_weights(self.folder), safe_open(str(file), framework="pt") as handle:
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


MERGE_KIND = "merge"  # the manifest kind of a merged folder


def merge_checkpoints(
    paths: Sequence[str | os.PathLike[str]],
    weights: Sequence[float],
    output_path: str | os.PathLike[str],
    model_type: str = "encoder",
    overwrite: bool = False,
    allow_negative: bool = False,
) -> Path:
    """Write the weighted average of ``paths`` to ``output_path`` (see the module docstring), with a checksummed
    manifest (verified whenever the folder is loaded). ``overwrite`` replaces an empty folder or an earlier
    flagstack output there, never a folder that is or holds an input or other files (fileio.check_replaceable);
    the earlier folder stays until the new one is complete."""
    kind = merge_type(model_type)
    if not paths:
        raise ValueError("give at least one model to merge")
    weights = check_weights(weights, len(paths), allow_negative)
    output = Path(output_path)
    folders = [resolve_model_path(p) for p in paths]
    exists = check_replaceable(output, folders, overwrite, markers=(MERGE_CONFIG_FILE,), what="merge",
                               kinds=(MERGE_KIND,))
    checkpoints = [Checkpoint(f) for f in folders]
    check_compatible(checkpoints)
    config = {"models": [str(p) for p in paths], "weights": weights, "model_type": model_type}
    with staged_folder(output, MERGE_KIND, replace=exists) as staging:
        _write_average(checkpoints, weights, staging)
        copy_support_files(folders[0], staging)
        if kind is ModelKind.EMBEDDER and not (staging / "modules.json").exists():
            first = checkpoints[0].config
            write_sentence_transformers_config(
                staging, resolve_pooling(str(paths[0]), folders[0]), True,
                int(first.get("max_position_embeddings", 512)), int(first.get("hidden_size", 0)),
            )
        (staging / MERGE_CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
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
