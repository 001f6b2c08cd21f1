"""An opt-in ONNX Runtime backend (``backend="onnx"``) for encoder embedders and cross-encoder rerankers.

The model is exported once per model folder and head (transformers' eager attention, traced by torch's
ONNX exporter), BERT-family graphs get ONNX Runtime's transformer fusions (attention, skip-layer-norm,
bias-GELU), and the file is kept under ``$FLAGSTACK_CACHE/onnx`` (default ~/.cache/flagstack/onnx), written
atomically. It runs in fp32 on the CPU, so outputs stay within float rounding of the torch backend (the
tests and ``benchmarks/embed_throughput.py`` check the agreement). Tokenisation, batching, pooling and
normalisation stay in flag_core's runtime: only the forward pass changes.
"""

from __future__ import annotations

import hashlib
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

from ...fileio import cache_folder, folder_fingerprint
from ..kinds import Head
from ..model_files import load_tokenizer, quiet_transformers, readable_weights

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
ONNX_HEADS = (Head.BASE, Head.SEQUENCE_CLASSIFICATION)
_FORMAT = "flagstack-onnx-2"
# model types whose graphs ONNX Runtime's BERT optimizer knows how to fuse
_BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie"}
_EXPORT_LOCK = threading.Lock()
_TWO_GB = 2 * 1024**3


def check_backend(backend: str, device: str, dtype: torch.dtype, head: Head) -> None:
    """Refuse combinations the ONNX backend does not run, naming what to change."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    if backend == "torch":
        return
    if head not in ONNX_HEADS:
        raise ValueError("backend='onnx' runs encoder embedders and cross-encoder rerankers only; use backend='torch'")
    if torch.device(device).type != "cpu":
        raise ValueError(f"backend='onnx' runs on the CPU only, not on {device!r}; use backend='torch' there")
    if dtype != torch.float32:
        raise ValueError("backend='onnx' runs in fp32: drop use_bf16 (fp16 is already ignored on the CPU)")


def cache_root() -> Path:
    """Where exported models are kept: ``$FLAGSTACK_CACHE/onnx`` or ~/.cache/flagstack/onnx."""
    return cache_folder("onnx")


def _export_key(path: Path, head: Head) -> str:
    text = "\n".join([_FORMAT, str(path.resolve()), folder_fingerprint(path), head.value, torch.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class _Traceable(torch.nn.Module):
    """The model with plain tensor inputs and one tensor output, for the exporter."""

    def __init__(self, model: torch.nn.Module, output: str) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
                ) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return getattr(out, self.output)  # type: ignore[no-any-return]


def export_onnx(path: Path, head: Head, trust_remote_code: bool = False) -> Path:
    """The ONNX file for the model in ``path`` with ``head``, exported (and fused) on first use."""
    target = cache_root() / _export_key(path, head) / "model.onnx"
    with _EXPORT_LOCK:
        if target.is_file():
            return target

        with quiet_transformers(), readable_weights(path):
            model = head.auto_class().from_pretrained(
                path, attn_implementation="eager", dtype=torch.float32, trust_remote_code=trust_remote_code,
                use_safetensors=True if any(path.glob("*.safetensors")) else None,
            ).eval()
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        if size >= _TWO_GB:
            raise ValueError(f"{path} holds {size / 1e9:.1f} GB of weights: too large for one ONNX file; "
                             "use backend='torch'")
        tokenizer = load_tokenizer(path, trust_remote_code)
        names = ["input_ids", "attention_mask"]
        if "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
            names.append("token_type_ids")
        # a padded sample, so the traced graph keeps the attention mask (an all-ones mask may be skipped)
        mask = torch.ones((2, 8), dtype=torch.long)
        mask[1, 5:] = 0
        sample = (torch.ones((2, 8), dtype=torch.long), mask, torch.zeros((2, 8), dtype=torch.long))[: len(names)]
        output = "last_hidden_state" if head is Head.BASE else "logits"
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
                    _Traceable(model, output), sample, str(raw), input_names=names, output_names=[output],
                    dynamic_axes=axes, opset_version=17, dynamo=False,
                )
            final = Path(tmp) / "model.onnx"
            _fuse(raw, final, model.config)
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
