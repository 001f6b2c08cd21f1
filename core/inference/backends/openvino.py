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
from typing import Any

import numpy as np
import torch

from ..kinds import Head
from .base import Backend, BackendModel
from .export import traceable

logger = logging.getLogger(__name__)


class OpenVinoBackend(Backend):
    """OpenVINO on the CPU, in fp32 or bf16; int8 by NNCF's post-training quantization."""

    name = "openvino"
    library = "OpenVINO"
    module = "openvino"
    dtypes = (torch.float32, torch.bfloat16)
    dtype_error = "backend='openvino' runs in fp32, or bf16 with use_bf16=True"
    format = "flagstack-openvino-2"  # 2: a folder with a manifest, verified on load
    files = ("model.xml", "model.bin")
    quantize_modes = ("static",)
    quantized_file = "openvino_model.xml"

    def build(self, staging: Path, *, path: Path, head: Head, trust_remote_code: bool, target: Path) -> None:
        """The OpenVINO IR (``model.xml`` + ``model.bin``), converted from the traced model."""
        model = convert(path, head, trust_remote_code)
        logger.info("converting %s to OpenVINO (once; kept in %s)", path, target)
        self.runtime().save_model(model, str(staging / self.files[0]), compress_to_fp16=False)

    def load(self, file: Path, config: Any, head: Head, dtype: torch.dtype) -> OpenVinoModel:
        return OpenVinoModel(file, config, head, bf16=dtype == torch.bfloat16)

    def quantize(self, path: Path, head: Head, mode: str, batches: list[dict[str, np.ndarray]], file: Path,
                 trust_remote_code: bool) -> None:
        """NNCF's post-training quantization (SmoothQuant and bias correction for transformers), calibrated on
        ``batches``."""
        import nncf
        import openvino

        model = convert(path, head, trust_remote_code)
        names = [port.get_any_name() for port in model.inputs]
        dataset = nncf.Dataset([{name: batch[name] for name in names if name in batch} for batch in batches])
        quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches))
        openvino.save_model(quantized, str(file), compress_to_fp16=False)


def convert(path: Path, head: Head, trust_remote_code: bool = False) -> Any:
    """The model in ``path`` as an in-memory OpenVINO model (dynamic batch and length)."""
    ov = OPENVINO.runtime()
    traced = traceable(path, head, trust_remote_code)
    inputs = [(name, [-1, -1], ov.Type.i64) for name in traced.names]
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns about Python control flow in transformers' code
        model = ov.convert_model(traced.module, example_input=traced.sample, input=inputs)
    model.outputs[0].get_tensor().set_names({traced.output})
    return model


# kernels OpenVINO keeps per input shape (its default, 5000, let a server's resident memory grow by 381 MB in 60 s of
# overload with int8 + bf16; 1000: 158 MB, at the same throughput; benchmarks/serve_load.py)
SHAPE_CACHE_ENTRIES = 1000


class OpenVinoModel(BackendModel):
    """A compiled OpenVINO model that answers like the transformers model it was converted from
    (``model(**batch).last_hidden_state`` or ``.logits``, as float32 torch tensors on the CPU)."""

    def __init__(self, file: Path, config: Any, head: Head, bf16: bool = False) -> None:
        ov = OPENVINO.runtime()
        super().__init__(file, config, head)
        properties = {
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "CPU_RUNTIME_CACHE_CAPACITY": SHAPE_CACHE_ENTRIES,
        }
        self.properties = properties  # what it was compiled with
        self.compiled = ov.Core().compile_model(str(file), "CPU", properties)
        self.inputs = [port.get_any_name() for port in self.compiled.inputs]
        self._lock = threading.Lock()
        self._request = self.compiled.create_infer_request()

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            result = self._request.infer(arrays)
            return np.array(result[self.compiled.outputs[0]], dtype=np.float32, copy=True)


OPENVINO = OpenVinoBackend()

# the names this module had before the backends became objects
export_openvino = OPENVINO.export
