"""An opt-in ONNX Runtime backend (``backend="onnx"``) for encoder embedders and cross-encoder rerankers.

The model is exported once per model folder and head (transformers' eager attention, traced by torch's
ONNX exporter), BERT-family graphs get ONNX Runtime's transformer fusions (attention, skip-layer-norm,
bias-GELU), and the file is kept under ``$FLAGSTACK_CACHE/onnx`` (default ~/.cache/flagstack/onnx), written
atomically. It runs in fp32 on the CPU, so outputs stay within float rounding of the torch backend (the
tests and ``benchmarks/embed_throughput.py`` check the agreement). Tokenisation, batching, pooling and
normalisation stay in flag_core's runtime: only the forward pass changes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ...fileio import cache_folder
from ..kinds import Head
from .export import TWO_GB, export_key, traceable

logger = logging.getLogger(__name__)

_FORMAT = "flagstack-onnx-2"
# model types whose graphs ONNX Runtime's BERT optimizer knows how to fuse
_BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie"}
_EXPORT_LOCK = threading.Lock()


def cache_root() -> Path:
    """Where exported models are kept: ``$FLAGSTACK_CACHE/onnx`` or ~/.cache/flagstack/onnx."""
    return cache_folder("onnx")


def export_onnx(path: Path, head: Head, trust_remote_code: bool = False) -> Path:
    """The ONNX file for the model in ``path`` with ``head``, exported (and fused) on first use."""
    target = cache_root() / export_key(_FORMAT, path, head) / "model.onnx"
    with _EXPORT_LOCK:
        if target.is_file():
            return target

        traced = traceable(path, head, trust_remote_code, TWO_GB)
        names, output = traced.names, traced.output
        axes = {name: {0: "batch", 1: "sequence"} for name in names}
        axes[output] = {0: "batch", 1: "sequence"} if head is Head.BASE else {0: "batch"}
        target.parent.mkdir(parents=True, exist_ok=True)
        logger.info("exporting %s to ONNX (once; kept in %s)", path, target.parent)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            raw = Path(tmp) / "raw.onnx"
            # the tracer warns about Python control flow in transformers' code; the tests check the graph
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    traced.module, traced.sample, str(raw), input_names=names, output_names=[output],
                    dynamic_axes=axes, opset_version=17, dynamo=False,
                )
            final = Path(tmp) / "model.onnx"
            _fuse(raw, final, traced.config)
            os.replace(final, target)
        return target


def _fuse(raw: Path, final: Path, config: Any) -> None:
    """ONNX Runtime's transformer fusions for BERT-like graphs; other graphs are kept as exported."""
    model_type = getattr(config, "model_type", "")
    heads, hidden = getattr(config, "num_attention_heads", 0), getattr(config, "hidden_size", 0)
    if model_type in _BERT_LIKE and heads and hidden:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden)
        optimized.save_model_to_file(str(final))
    else:
        os.replace(raw, final)


class OnnxModel:
    """An ONNX Runtime session that answers like the transformers model it was exported from
    (``model(**batch).last_hidden_state`` or ``.logits``, as float32 torch tensors on the CPU)."""

    def __init__(self, file: Path, config: Any, head: Head) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("backend='onnx' needs ONNX Runtime: pip install 'flagstack[onnx]'") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        self.config = config
        self.file = file
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = "last_hidden_state" if head is Head.BASE else "logits"
        self.dtype = torch.float32

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
        (result,) = self.session.run([self.output], arrays)
        return SimpleNamespace(**{self.output: torch.from_numpy(result)})

    def __call__(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        kwargs.pop("return_dict", None)
        return self.forward(*args, **kwargs)

    def eval(self) -> OnnxModel:
        return self
