"""What every forward-pass backend other than PyTorch is: a :class:`Backend` (checks what it runs, exports a model
folder once into flagstack's verified cache, loads the exported or quantized file, quantizes) and the
:class:`BackendModel` it loads, which answers like the transformers model it was made from. A backend supplies only
its own steps: the export's build, the loading, the int8 quantization and the model's "run these int64 arrays"."""

from __future__ import annotations

import functools
import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from ...fileio import cache_folder
from ..kinds import Head
from .export import cached_folder, export_key

EXPORT_HEADS = (Head.BASE, Head.SEQUENCE_CLASSIFICATION)

_Model = TypeVar("_Model", bound="BackendModel")


class Backend(ABC):
    """One backend: its name (``backend=...``), the library it needs and its pip extra, the dtypes it runs, its
    export cache format and files, and its quantization modes and file."""

    name: ClassVar[str]  # backend=name; also its cache folder under $FLAGSTACK_CACHE and its pip extra
    library: ClassVar[str]  # the library's name, in words
    module: ClassVar[str]  # the module to import
    dtypes: ClassVar[tuple[torch.dtype, ...]]  # what it runs in
    dtype_error: ClassVar[str]  # the message for another dtype
    format: ClassVar[str]  # the cache entry's format (part of its key and its manifest kind)
    files: ClassVar[tuple[str, ...]]  # the files an entry must hold, the model file first
    quantize_modes: ClassVar[tuple[str, ...]]
    quantized_file: ClassVar[str]  # the int8 model's file name in a quantize output

    def runtime(self) -> Any:
        """The backend's library, imported; an ImportError naming the pip extra when it is not installed."""
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise ImportError(f"backend={self.name!r} needs {self.library}: pip install "
                              f"'flagstack[{self.name}]'") from exc

    def check(self, device: str, dtype: torch.dtype, head: Head) -> None:
        """Refuse combinations this backend does not run, naming what to change."""
        if head not in EXPORT_HEADS:
            raise ValueError(f"backend={self.name!r} runs encoder embedders and cross-encoder rerankers only; use "
                             "backend='torch'")
        if torch.device(device).type != "cpu":
            raise ValueError(f"backend={self.name!r} runs on the CPU only, not on {device!r}; use backend='torch' "
                             "there")
        if dtype not in self.dtypes:
            raise ValueError(self.dtype_error)

    def cache_root(self) -> Path:
        """Where exported models are kept: ``$FLAGSTACK_CACHE/<name>`` or ~/.cache/flagstack/<name>."""
        return cache_folder(self.name)

    def export(self, path: Path, head: Head, trust_remote_code: bool = False) -> Path:
        """The model file for the model in ``path`` with ``head``, exported on first use into a cache folder with a
        manifest, verified on every load; a damaged entry is rebuilt (see
        :func:`~flag_core.inference.backends.export.cached_folder`)."""
        target = self.cache_root() / export_key(self.format, path, head)
        build = functools.partial(self.build, path=path, head=head, trust_remote_code=trust_remote_code,
                                  target=target)
        return cached_folder(target, self.format, build, required=self.files) / self.files[0]

    @abstractmethod
    def build(self, staging: Path, *, path: Path, head: Head, trust_remote_code: bool, target: Path) -> None:
        """Write :attr:`files` for the model in ``path`` with ``head`` into ``staging`` (the cache entry
        ``target`` to be)."""

    @abstractmethod
    def load(self, file: Path, config: Any, head: Head, dtype: torch.dtype) -> BackendModel:
        """The model object that runs ``file`` (an exported or quantized model) in ``dtype``."""

    @abstractmethod
    def quantize(self, path: Path, head: Head, mode: str, batches: list[dict[str, np.ndarray]], file: Path,
                 trust_remote_code: bool) -> None:
        """Write the int8 model of ``path`` with ``head`` to ``file``, calibrated on ``batches`` (static modes)."""


class BackendModel(ABC):
    """A backend's model that answers like the transformers model it was made from (``model(**batch)
    .last_hidden_state`` or ``.logits``, as float32 torch tensors on the CPU). A backend supplies :meth:`run`."""

    inputs: list[str]  # the model's input names, in the order it takes them

    def __init__(self, file: Path, config: Any, head: Head) -> None:
        self.config = config
        self.file = file
        self.output = "last_hidden_state" if head is Head.BASE else "logits"
        self.dtype = torch.float32

    @abstractmethod
    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The output for the int64 input arrays named by :attr:`inputs`."""

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> SimpleNamespace:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        arrays = {}
        for name in self.inputs:
            value = feed[name]
            if value is None:  # a single-segment input
                value = torch.zeros_like(input_ids)
            arrays[name] = np.ascontiguousarray(value.cpu().numpy(), dtype=np.int64)
        return SimpleNamespace(**{self.output: torch.from_numpy(self.run(arrays))})

    def __call__(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        kwargs.pop("return_dict", None)
        return self.forward(*args, **kwargs)

    def eval(self: _Model) -> _Model:
        return self
