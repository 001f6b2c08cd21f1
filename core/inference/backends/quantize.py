"""Int8 models for the CPU backends, written once into a folder that loads like any model folder.

- ``backend="openvino", mode="static"``: NNCF post-training quantization (SmoothQuant and bias correction for
  transformers) calibrated on the user's own texts;
- ``backend="onnx", mode="static"``: ONNX Runtime's static quantization (QDQ, per-channel weights) calibrated on
  the user's texts;
- ``backend="onnx", mode="dynamic"``: ONNX Runtime's dynamic int8 (no calibration; weights int8, activations
  quantized on the fly). Its vectors can drift further from fp32: judge it by task metrics.

The folder holds the source's config, tokenizer and sentence-transformers files, the int8 model,
``flagstack_quantization.json`` (backend, mode, source and its fingerprint, calibration digest) and a checksummed
``flagstack_manifest.json`` covering all of them; it is built in a staging folder beside the target and renamed
into place (a killed run's staging folder is removed by the next one). ``FlagModel(folder, backend=...)`` (or
``FlagReranker``) verifies it and runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...fileio import cache_folder, check_replaceable, folder_fingerprint, staged_folder, texts_digest
from ..kinds import Head
from ..model_files import copy_support_files, load_tokenizer, resolve_model_path
from . import QUANTIZATION_FILE, QUANTIZE_KIND, REGISTRY, is_quantized_folder
from .export import cached_folder, export_key

MODES = {name: backend.quantize_modes for name, backend in REGISTRY.items()}  # what each backend quantizes in
FILES = {name: backend.quantized_file for name, backend in REGISTRY.items()}  # its int8 model's file
CALIBRATION_BATCH = 8
_FORMAT = "quantized-2"  # 2: a folder with a manifest, verified on load

Calibration = Sequence[str] | Sequence[tuple[str, str]]


def calibration_batches(tokenizer: Any, samples: Calibration, max_length: int) -> list[dict[str, np.ndarray]]:
    """Padded int64 input batches of the calibration texts (or (query, passage) pairs for cross-encoders)."""
    batches = []
    for start in range(0, len(samples), CALIBRATION_BATCH):
        chunk = list(samples[start : start + CALIBRATION_BATCH])
        if all(isinstance(item, str) for item in chunk):
            encoded = tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        else:
            encoded = tokenizer([q for q, _ in chunk], [p for _, p in chunk], truncation="only_second",
                                max_length=max_length, padding=True, return_tensors="np")
        batches.append({name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()})
    return batches


def _digest(samples: Calibration) -> str:
    return texts_digest([item if isinstance(item, str) else f"{item[0]}\x00{item[1]}" for item in samples])


def quantize_model(
    model_name_or_path: str | os.PathLike[str],
    backend: str,
    mode: str = "static",
    calibration: Calibration = (),
    output: str | os.PathLike[str] | None = None,
    cross_encoder: bool = False,
    max_length: int = 512,
    trust_remote_code: bool = False,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write an int8 model of ``model_name_or_path`` for ``backend`` (see the module docstring) and return its
    folder: ``output``, or one under flagstack's cache keyed by the source, backend, mode and calibration (reused
    when it verifies, rebuilt with a warning when damaged). An existing ``output`` is replaced only with
    ``overwrite``, and only when it is an earlier quantize output (or empty) holding neither the source model nor
    any of ``inputs`` (the files this run reads, e.g. calibration and check data): checked before any work."""
    if backend not in MODES:
        raise ValueError(f"backend must be one of {', '.join(MODES)}, got {backend!r}")
    if mode not in MODES[backend]:
        raise ValueError(f"backend={backend!r} quantizes in mode {' or '.join(MODES[backend])}, not {mode!r}")
    samples: list[Any] = list(calibration)
    if mode == "static" and not samples:
        raise ValueError("static quantization calibrates on texts: give a few hundred texts like the ones you will "
                         "encode (or pairs, for a cross-encoder)")
    path = resolve_model_path(model_name_or_path)
    if is_quantized_folder(path):
        raise ValueError(f"{path} is already a quantized folder; quantize its source model")
    head = Head.SEQUENCE_CLASSIFICATION if cross_encoder else Head.BASE

    def build(staging: Path) -> None:
        copy_support_files(path, staging)
        batches = calibration_batches(load_tokenizer(path, trust_remote_code), samples, max_length) if samples else []
        REGISTRY[backend].quantize(path, head, mode, batches, staging / FILES[backend], trust_remote_code)
        (staging / QUANTIZATION_FILE).write_text(json.dumps({
            "backend": backend, "mode": f"int8-{mode}", "file": FILES[backend], "head": head.value,
            "source": str(model_name_or_path), "source_fingerprint": folder_fingerprint(path),
            "calibration": {"samples": len(samples), "sha256": _digest(samples), "max_length": max_length},
        }, indent=2), encoding="utf-8")

    if output is None:
        key = hashlib.sha256(f"{export_key(f'{_FORMAT}-{backend}-{mode}', path, head)}\n{_digest(samples)}\n"
                             f"{max_length}".encode()).hexdigest()[:32]
        return cached_folder(cache_folder("quantized") / key, QUANTIZE_KIND, build,
                             required=[FILES[backend], QUANTIZATION_FILE])
    target = Path(output).expanduser()
    exists = check_replaceable(target, [path, *inputs], overwrite, markers=(QUANTIZATION_FILE,),
                               what="quantize output", kinds=(QUANTIZE_KIND,))
    with staged_folder(target, QUANTIZE_KIND, replace=exists) as staging:
        build(staging)
    return target
