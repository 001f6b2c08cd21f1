"""An opt-in OpenVINO backend (``backend="openvino"``) for encoder embedders and cross-encoder rerankers.

The model is converted once per folder and head straight from PyTorch (``openvino.convert_model`` on the traced
eager-attention model; no optimum, so it works with transformers 5), saved as OpenVINO IR under
``$FLAGSTACK_CACHE/openvino`` (a folder written atomically with a checksummed manifest, verified on every load; a
damaged entry is rebuilt), and compiled for the CPU with fp32 inference precision
(``use_bf16=True`` asks for bf16, fast on CPUs with AVX512-BF16/AMX). A folder written by ``flagstack quantize
--backend openvino`` runs its int8 IR instead. Tokenisation, batching and pooling stay flagstack's.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ...fileio import cache_folder
from ..kinds import Head
from .export import cached_folder, export_key, traceable

logger = logging.getLogger(__name__)

_FORMAT = "flagstack-openvino-2"  # 2: a folder with a manifest, verified on load


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise ImportError("backend='openvino' needs OpenVINO: pip install 'flagstack[openvino]'") from exc
    return openvino


def convert(path: Path, head: Head, trust_remote_code: bool = False) -> Any:
    """The model in ``path`` as an in-memory OpenVINO model (dynamic batch and length)."""
    ov = _openvino()
    traced = traceable(path, head, trust_remote_code)
    inputs = [(name, [-1, -1], ov.Type.i64) for name in traced.names]
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns about Python control flow in transformers' code
        model = ov.convert_model(traced.module, example_input=traced.sample, input=inputs)
    model.outputs[0].get_tensor().set_names({traced.output})
    return model


def export_openvino(path: Path, head: Head, trust_remote_code: bool = False) -> Path:
    """The OpenVINO IR (``model.xml`` + ``model.bin``) for ``path`` with ``head``, converted on first use into a
    cache folder with a manifest; a damaged entry is rebuilt (see
    :func:`~flag_core.inference.backends.export.cached_folder`)."""
    target = cache_folder("openvino") / export_key(_FORMAT, path, head)

    def build(staging: Path) -> None:
        model = convert(path, head, trust_remote_code)
        logger.info("converting %s to OpenVINO (once; kept in %s)", path, target)
        _openvino().save_model(model, str(staging / "model.xml"), compress_to_fp16=False)

    return cached_folder(target, _FORMAT, build, required=["model.xml", "model.bin"]) / "model.xml"


class OpenVinoModel:
    """A compiled OpenVINO model that answers like the transformers model it was converted from
    (``model(**batch).last_hidden_state`` or ``.logits``, as float32 torch tensors on the CPU)."""

    def __init__(self, file: Path, config: Any, head: Head, bf16: bool = False) -> None:
        ov = _openvino()
        self.config = config
        self.file = file
        self.output = "last_hidden_state" if head is Head.BASE else "logits"
        self.dtype = torch.float32
        properties = {
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        }
        self.compiled = ov.Core().compile_model(str(file), "CPU", properties)
        self.inputs = [port.get_any_name() for port in self.compiled.inputs]
        self._lock = threading.Lock()
        self._request = self.compiled.create_infer_request()

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
        with self._lock:
            result = self._request.infer(arrays)
            output = np.array(result[self.compiled.outputs[0]], dtype=np.float32, copy=True)
        return SimpleNamespace(**{self.output: torch.from_numpy(output)})

    def __call__(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        kwargs.pop("return_dict", None)
        return self.forward(*args, **kwargs)

    def eval(self) -> OpenVinoModel:
        return self
