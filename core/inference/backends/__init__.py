"""Forward-pass backends other than PyTorch (opt-in): ONNX Runtime and OpenVINO, in fp32 or as int8 models made
by ``flagstack quantize``. Tokenisation, batching and pooling stay flagstack's; only the forward pass changes.

A backend model is exported once per model folder and head (transformers' eager attention, traced) and kept in
flagstack's cache, in a checksummed folder verified on every load; a folder written by ``flagstack quantize``
carries its quantized model instead (``flagstack_quantization.json`` says which backend runs it; the folder's
manifest is verified before it is loaded).

Each backend is one :class:`~flag_core.inference.backends.base.Backend` object in :data:`REGISTRY` (what it runs,
its export, its loading, its quantization); :data:`BACKENDS` is every ``backend=...`` name, torch first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...fileio import MANIFEST_FILE, ArtefactError, verify_folder
from ..kinds import Head
from ..model_files import QUANTIZATION_FILE, read_json
from .base import EXPORT_HEADS, Backend, BackendModel
from .onnx import ONNX
from .openvino import OPENVINO

# the backends other than torch, by name, in the order they are offered
REGISTRY: dict[str, Backend] = {backend.name: backend for backend in (ONNX, OPENVINO)}
BACKENDS = ("torch", *REGISTRY)  # every backend=... name (torch runs the transformers model itself)
QUANTIZE_KIND = "quantize"  # the manifest kind of a flagstack quantize output

__all__ = ["BACKENDS", "EXPORT_HEADS", "QUANTIZATION_FILE", "QUANTIZE_KIND", "REGISTRY", "Backend", "BackendModel",
           "Quantized", "backend_model", "check_backend", "is_quantized_folder"]


def check_backend(backend: str, device: str, dtype: torch.dtype, head: Head) -> None:
    """Refuse combinations a backend does not run, naming what to change."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    if backend in REGISTRY:
        REGISTRY[backend].check(device, dtype, head)


@dataclass(frozen=True)
class Quantized:
    """What ``flagstack quantize`` wrote into a folder: which backend runs it, the file, how it was made."""

    backend: str
    file: Path
    mode: str
    source: str

    @classmethod
    def of(cls, folder: Path) -> Quantized | None:
        """What ``folder`` holds (None: not a quantize output), after verifying the whole folder against its
        manifest: a damaged, incomplete or manifest-less quantize output is an :class:`ArtefactError` naming the
        file."""
        meta = folder / QUANTIZATION_FILE
        if not meta.is_file():
            return None
        manifest = verify_folder(folder, kinds=(QUANTIZE_KIND,))
        data = read_json(meta, dict)
        backend, name = data.get("backend"), data.get("file")
        known = isinstance(backend, str) and backend in REGISTRY
        if not known or not isinstance(name, str) or name not in manifest["files"]:
            raise ArtefactError(f"{meta} names backend {backend!r} and model file {name!r}: expected "
                                f"{' or '.join(REGISTRY)} and a file listed in {folder / MANIFEST_FILE}; quantize the "
                                "source again")
        return cls(backend=backend, file=folder / name, mode=str(data.get("mode")), source=str(data.get("source")))


def backend_model(path: Path, head: Head, backend: str, dtype: torch.dtype, trust_remote_code: bool, config: Any
                  ) -> Any:
    """The model object that runs ``path``'s forward pass on ``backend`` (exported on first use, or the
    quantized model of a ``flagstack quantize`` folder, verified against its manifest first)."""
    quantized = Quantized.of(path)
    if quantized is not None and quantized.backend != backend:
        raise ValueError(f"{path} holds a {quantized.mode} {quantized.backend} model (from {quantized.source}); load "
                         f"it with backend={quantized.backend!r}, or load the source model for backend={backend!r}")
    runner = REGISTRY[backend]
    file = quantized.file if quantized else runner.export(path, head, trust_remote_code)
    return runner.load(file, config, head, dtype)


def is_quantized_folder(path: Path) -> bool:
    """Whether ``path`` was written by ``flagstack quantize`` (it holds no torch weights to run)."""
    return (path / QUANTIZATION_FILE).is_file()
