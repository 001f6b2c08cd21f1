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
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ...fileio import cache_folder
from ..kinds import Head
from .export import TWO_GB, cached_folder, export_key, traceable

logger = logging.getLogger(__name__)

_FORMAT = "flagstack-onnx-3"  # 3: a folder with a manifest, verified on load
# model types whose graphs ONNX Runtime's BERT optimizer knows how to fuse
_BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie"}


def cache_root() -> Path:
    """Where exported models are kept: ``$FLAGSTACK_CACHE/onnx`` or ~/.cache/flagstack/onnx."""
    return cache_folder("onnx")


def export_onnx(path: Path, head: Head, trust_remote_code: bool = False) -> Path:
    """The ONNX file for the model in ``path`` with ``head``, exported (and fused) on first use into a cache folder
    with a manifest; a damaged entry is rebuilt (see :func:`~flag_core.inference.backends.export.cached_folder`)."""
    target = cache_root() / export_key(_FORMAT, path, head)

    def build(staging: Path) -> None:
        traced = traceable(path, head, trust_remote_code, TWO_GB)
        names, output = traced.names, traced.output
        axes = {name: {0: "batch", 1: "sequence"} for name in names}
        axes[output] = {0: "batch", 1: "sequence"} if head is Head.BASE else {0: "batch"}
        logger.info("exporting %s to ONNX (once; kept in %s)", path, target)
        final = staging / "model.onnx"
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

    return cached_folder(target, _FORMAT, build, required=["model.onnx"]) / "model.onnx"


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
