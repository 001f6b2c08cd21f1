"""An opt-in ONNX Runtime backend (``backend="onnx"``) for encoder embedders and cross-encoder rerankers.

The model is exported once per model folder and head (transformers' eager attention, traced by torch's
ONNX exporter), BERT-family graphs get ONNX Runtime's transformer fusions (attention, skip-layer-norm,
bias-GELU), and the file is kept under ``$FLAGSTACK_CACHE/onnx`` (default ~/.cache/flagstack/onnx) in a folder
written atomically with a checksummed manifest, verified on every load (a damaged entry is rebuilt). It runs
in fp32 on the CPU, so outputs stay within float rounding of the torch backend (the tests and
``benchmarks/embed_throughput.py`` check the agreement). Tokenisation, batching, pooling and normalisation stay in
flag_core's runtime: only the forward pass changes.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..kinds import Head
from .base import Backend, BackendModel
from .export import TWO_GB, traceable

logger = logging.getLogger(__name__)

# model types whose graphs ONNX Runtime's BERT optimizer knows how to fuse
_BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie"}


class OnnxBackend(Backend):
    """ONNX Runtime on the CPU, in fp32; int8 by ONNX Runtime's static (QDQ) or dynamic quantization."""

    name = "onnx"
    library = "ONNX Runtime"
    module = "onnxruntime"
    dtypes = (torch.float32,)
    dtype_error = "backend='onnx' runs in fp32: drop use_bf16 (fp16 is already ignored on the CPU)"
    format = "flagstack-onnx-3"  # 3: a folder with a manifest, verified on load
    files = ("model.onnx",)
    quantize_modes = ("static", "dynamic")
    quantized_file = "model.onnx"

    def build(self, staging: Path, *, path: Path, head: Head, trust_remote_code: bool, target: Path) -> None:
        """Trace the model with torch's ONNX exporter, then fuse a BERT-like graph (see :func:`_fusable`)."""
        traced = traceable(path, head, trust_remote_code, TWO_GB)
        names, output = traced.names, traced.output
        axes = {name: {0: "batch", 1: "sequence"} for name in names}
        axes[output] = {0: "batch", 1: "sequence"} if head is Head.BASE else {0: "batch"}
        logger.info("exporting %s to ONNX (once; kept in %s)", path, target)
        final = staging / self.files[0]
        fuse = _fusable(traced.config)
        with tempfile.TemporaryDirectory(dir=staging) as tmp:
            raw = Path(tmp) / "raw.onnx" if fuse else final  # external data files, if any, land beside it
            # the tracer warns about Python control flow in transformers' code; the tests check the graph
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    traced.module, traced.sample, str(raw), input_names=names, output_names=[output],
                    dynamic_axes=axes, opset_version=17, dynamo=False,
                )
            if fuse:
                _fuse(raw, final, traced.config)

    def load(self, file: Path, config: Any, head: Head, dtype: torch.dtype) -> OnnxModel:
        return OnnxModel(file, config, head)

    def quantize(self, path: Path, head: Head, mode: str, batches: list[dict[str, np.ndarray]], file: Path,
                 trust_remote_code: bool) -> None:
        """ONNX Runtime's dynamic int8, or its static QDQ quantization (per-channel weights) calibrated on
        ``batches``, of the exported (fused) fp32 model."""
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        source = str(self.export(path, head, trust_remote_code))
        # the fused graph holds ONNX Runtime's own ops, which shape inference cannot type: they are float
        options = {"DefaultTensorType": onnx.TensorProto.FLOAT}
        if mode == "dynamic":
            quantize_dynamic(source, str(file), weight_type=QuantType.QInt8, extra_options=options)
            return

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self) -> None:
                self.items = iter(batches)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.items, None)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(source, str(file), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            extra_options={**options, "QuantizeBias": False},  # biases stay float (small, and exact)
                            calibrate_method=CalibrationMethod.MinMax)


def _fusable(config: Any) -> bool:
    """Whether ONNX Runtime's BERT optimizer fuses this model's graph."""
    return (getattr(config, "model_type", "") in _BERT_LIKE and bool(getattr(config, "num_attention_heads", 0))
            and bool(getattr(config, "hidden_size", 0)))


def _fuse(raw: Path, final: Path, config: Any) -> None:
    """ONNX Runtime's transformer fusions for a BERT-like graph (see :func:`_fusable`)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size)
    optimized.save_model_to_file(str(final))


class OnnxModel(BackendModel):
    """An ONNX Runtime session that answers like the transformers model it was exported from
    (``model(**batch).last_hidden_state`` or ``.logits``, as float32 torch tensors on the CPU)."""

    def __init__(self, file: Path, config: Any, head: Head) -> None:
        ort = ONNX.runtime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        super().__init__(file, config, head)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        (result,) = self.session.run([self.output], arrays)
        return result  # type: ignore[no-any-return]


ONNX = OnnxBackend()

# the names this module had before the backends became objects
cache_root = ONNX.cache_root
export_onnx = ONNX.export
