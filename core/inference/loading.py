"""Loading models: every caller that asks for the same folder, head, device and dtype gets the same
:class:`LoadedModel` (weights in memory once), together with the lock that serialises its use.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..fileio import ArtefactError, folder_fingerprint
from .backends import backend_model, check_backend, is_quantized_folder
from .devices import check_available
from .kinds import Head
from .model_files import load_tokenizer, quiet_transformers, readable_weights

logger = logging.getLogger(__name__)

# Encoders whose transformers code takes a ready 4-D attention mask as is (see LoadedModel.inputs): the BGE
# family's architectures (BERT: bge-*-en/zh, e5, gte-base; XLM-RoBERTa: bge-m3, bge-reranker-*).
ROW_MASK_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta"})


@dataclass(eq=False)
class LoadedModel:
    """A model, its tokenizer, where it runs, and the lock that serialises its use."""

    model: Any  # a transformers model, or a backend's model (OnnxModel, OpenVinoModel)
    tokenizer: Any
    path: Path
    device: torch.device
    dtype: torch.dtype
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def config(self) -> Any:
        return self.model.config

    @functools.cached_property
    def row_mask(self) -> bool:
        """Whether padded batches reach the model as one additive mask row per sequence (see ``inputs``)."""
        config = getattr(self.model, "config", None)
        return (
            isinstance(self.model, torch.nn.Module)
            and self.device.type == "cpu"
            and getattr(config, "model_type", None) in ROW_MASK_MODEL_TYPES
            and getattr(config, "_attn_implementation", None) == "sdpa"
            and not getattr(config, "is_decoder", False)
        )

    def inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for a padded ``batch`` (``pad_batch``'s output).

        For the bidirectional encoders in ``ROW_MASK_MODEL_TYPES`` on the CPU, a padded batch's mask is given
        as a (batch, 1, 1, length) additive float mask (0 or -inf). transformers would otherwise expand the
        2-D mask to (batch, 1, length, length) booleans, which PyTorch's CPU SDPA kernel converts to floats
        for every layer; each query row of that mask is the same key-padding row, so the scores are the
        same and only the mask work goes. Batches without padding, other models and devices are unchanged.
        """
        mask = batch["attention_mask"]
        if not self.row_mask or bool(mask.all()):
            return batch
        keep = mask.bool()[:, None, None, :]
        additive = torch.zeros(keep.shape, dtype=self.dtype, device=mask.device).masked_fill(~keep, float("-inf"))
        return {**batch, "attention_mask": additive}


_CACHE: weakref.WeakValueDictionary[tuple[Any, ...], LoadedModel] = weakref.WeakValueDictionary()
_CACHE_LOCK = threading.Lock()
# (folder, head, backend, weights' fingerprint) whose backend failed and now run in torch (under _CACHE_LOCK)
_FELL_BACK: set[tuple[str, str, str, str]] = set()


def load_model(
    path: Path,
    head: Head,
    device: str,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    padding_side: str | None = None,
    backend: str = "torch",
) -> LoadedModel:
    """Load (or reuse) the model in ``path`` with ``head`` on ``device`` in ``dtype``, with its tokenizer.
    Weights come from safetensors when the folder has them. ``backend="onnx"`` / ``"openvino"`` run the forward
    pass in ONNX Runtime / OpenVINO (see :mod:`flag_core.inference.backends`)."""
    head = Head(head)
    check_backend(backend, device, dtype, head)
    check_available(device)
    key = (str(path.resolve()), head, device, str(dtype), trust_remote_code, padding_side, backend)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        loaded = _load_uncached(path, head, device, dtype, trust_remote_code, padding_side, backend)
        _CACHE[key] = loaded
        return loaded


def _load_uncached(
    path: Path,
    head: Head,
    device: str,
    dtype: torch.dtype,
    trust_remote_code: bool,
    padding_side: str | None,
    backend: str,
) -> LoadedModel:
    import transformers

    tokenizer = load_tokenizer(path, trust_remote_code)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    fallback_key = (str(path.resolve()), head.value, backend, folder_fingerprint(path) if backend != "torch" else "")
    if backend != "torch" and fallback_key not in _FELL_BACK:
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        try:
            model = backend_model(path, head, backend, dtype, trust_remote_code, config)
            return LoadedModel(model=model, tokenizer=tokenizer, path=path, device=torch.device("cpu"), dtype=dtype)
        except (ImportError, ValueError):
            raise  # a missing package, a wrong setting or a damaged flagstack file (ArtefactError): the user must act
        except Exception as exc:
            if is_quantized_folder(path):  # its int8 model is all it holds: nothing to fall back to
                raise ArtefactError(f"{path}: its quantized model could not be loaded with backend={backend!r} "
                                    f"({type(exc).__name__}: {exc})") from exc
            # the conversion failed (an architecture the exporter cannot trace, ...): run the same model in torch,
            # said once per model and backend in this process (later loads go straight to torch)
            _FELL_BACK.add(fallback_key)
            logger.warning("could not run %s with backend=%r (%s: %s); running it with backend='torch' instead (for "
                           "the rest of this process)", path, backend, type(exc).__name__, exc)
    if is_quantized_folder(path):
        raise ValueError(f"{path} holds a quantized model written by flagstack quantize: load it with the backend "
                         "it was made for (its flagstack_quantization.json says which)")
    auto_class = head.auto_class()
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "trust_remote_code": trust_remote_code,
        "use_safetensors": True if any(path.glob("*.safetensors")) else None,
    }
    with quiet_transformers(), readable_weights(path):
        try:
            model = auto_class.from_pretrained(path, attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError, NotImplementedError):
            # this architecture has no SDPA attention: use its default one
            model = auto_class.from_pretrained(path, **kwargs)
    model.eval()
    torch_device = torch.device(device)
    model.to(torch_device)
    return LoadedModel(model=model, tokenizer=tokenizer, path=path, device=torch_device, dtype=dtype)


def length_limit(config: Any, tokenizer: Any) -> int | None:
    """The longest input a model accepts: the smaller of its tokenizer's ``model_max_length`` and its position
    embeddings (RoBERTa-style models keep two positions for padding); None when neither says."""
    limits = []
    told = getattr(tokenizer, "model_max_length", None)
    if isinstance(told, int) and 0 < told < 1_000_000:
        limits.append(told)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        offset = 2 if getattr(config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"} else 0
        limits.append(positions - offset)
    return min(limits) if limits else None


def model_max_length(loaded: LoadedModel) -> int | None:
    """The longest input a loaded model accepts (:func:`length_limit`)."""
    return length_limit(loaded.config, loaded.tokenizer)


