"""Finding and loading checkpoints: local folders first, the Hugging Face hub only when online.

Loaded models are shared: every caller that asks for the same folder, head, device and dtype gets the
same :class:`LoadedModel` (weights in memory once), together with the lock that serialises its use.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "1_Pooling/*", "*.py"]


class ModelNotFoundError(OSError):
    """A model is neither a local folder nor available from the hub (offline, or an unknown id)."""


def hub_offline() -> bool:
    """True when the environment asks the Hugging Face libraries to stay offline."""
    return any(
        os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def resolve_model_path(model_name_or_path: str | os.PathLike[str], cache_dir: str | None = None) -> Path:
    """Return a local folder holding ``model_name_or_path``.

    A local folder is used as it is. Otherwise the name is taken as a hub id: it is read from the local
    cache, and downloaded only when the hub is reachable and not switched off (HF_HUB_OFFLINE).
    """
    if isinstance(model_name_or_path, os.PathLike):
        model_name_or_path = os.fspath(model_name_or_path)
    if not isinstance(model_name_or_path, str) or not model_name_or_path.strip():
        raise TypeError(f"model_name_or_path must be a non-empty str or path, got {model_name_or_path!r}")
    local = Path(model_name_or_path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(
                f"{local} is a folder but holds no config.json: point at the folder that holds the model's "
                "config.json and weights (a Hugging Face save_pretrained folder)"
            )
        return local
    if local.exists() or model_name_or_path.startswith((".", "/", "~")) or model_name_or_path.count("/") > 1:
        raise ModelNotFoundError(f"model folder {model_name_or_path!r} does not exist")
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    try:
        folder = snapshot_download(
            model_name_or_path, cache_dir=cache_dir, allow_patterns=_WEIGHT_PATTERNS, local_files_only=offline
        )
        if not any(Path(folder).glob("*.safetensors")):
            # an older checkpoint without safetensors: its .bin weights load with weights_only=True
            folder = snapshot_download(
                model_name_or_path, cache_dir=cache_dir, allow_patterns=["*.bin"], local_files_only=offline
            )
    except Exception as exc:  # the hub client raises many types; all mean "not available here"
        how = (
            "the hub is switched off (HF_HUB_OFFLINE=1) and it is not in the local cache"
            if offline
            else f"it could not be fetched from the hub ({type(exc).__name__}: {exc})"
        )
        raise ModelNotFoundError(
            f"model {model_name_or_path!r} is not a local folder and {how}; pass the path of a local folder "
            "that holds the model (config.json, weights, tokenizer), or download it once while online"
        ) from exc
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"model {model_name_or_path!r} was found at {path} but has no config.json")
    return path


@dataclass(frozen=True)
class SentenceTransformersConfig:
    """What a sentence-transformers folder says about pooling, normalisation and length."""

    pooling: str | None = None
    normalize: bool | None = None
    max_seq_length: int | None = None


def read_sentence_transformers_config(folder: Path) -> SentenceTransformersConfig:
    """Read modules.json, the Pooling module's config.json and sentence_bert_config.json if present."""
    pooling: str | None = None
    normalize: bool | None = None
    max_seq_length: int | None = None
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        try:
            modules = json.loads(modules_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{modules_file} is not valid JSON: {exc}") from exc
        normalize = False
        for module in modules:
            kind = str(module.get("type", ""))
            if kind.endswith("Normalize"):
                normalize = True
            if kind.endswith("Pooling"):
                pooling_config = folder / str(module.get("path", "")) / "config.json"
                if pooling_config.is_file():
                    pooling = _pooling_from_config(json.loads(pooling_config.read_text(encoding="utf-8")))
    bert_config = folder / "sentence_bert_config.json"
    if bert_config.is_file():
        value = json.loads(bert_config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            max_seq_length = value
    return SentenceTransformersConfig(pooling, normalize, max_seq_length)


def _pooling_from_config(config: dict[str, Any]) -> str | None:
    if config.get("pooling_mode") in {"cls", "mean", "lasttoken"}:
        return {"lasttoken": "last_token"}.get(config["pooling_mode"], config["pooling_mode"])
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_lasttoken"):
        return "last_token"
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    return None


@contextlib.contextmanager
def quiet_transformers(errors_only: bool = False) -> Iterator[None]:
    """Hide transformers' weight-loading progress bars (and, with ``errors_only``, its warnings)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    if errors_only:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(verbosity)


# Encoders whose transformers code takes a ready 4-D attention mask as is (see LoadedModel.inputs): the BGE
# family's architectures (BERT: bge-*-en/zh, e5, gte-base; XLM-RoBERTa: bge-m3, bge-reranker-*).
ROW_MASK_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta"})


@dataclass(eq=False)
class LoadedModel:
    """A model, its tokenizer, where it runs, and the lock that serialises its use."""

    model: Any  # a transformers model, or flag_core.onnx_backend.OnnxModel with backend="onnx"
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


def load_model(
    path: Path,
    head: str,
    device: str,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    padding_side: str | None = None,
    backend: str = "torch",
) -> LoadedModel:
    """Load (or reuse) the model in ``path`` with ``head`` ("base", "sequence_classification" or
    "causal_lm") on ``device`` in ``dtype``. Weights come from safetensors when the folder has them.
    ``backend="onnx"`` runs the forward pass in ONNX Runtime (see :mod:`flag_core.onnx_backend`)."""
    from .onnx_backend import check_backend

    check_backend(backend, device, dtype, head)
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
    head: str,
    device: str,
    dtype: torch.dtype,
    trust_remote_code: bool,
    padding_side: str | None,
    backend: str,
) -> LoadedModel:
    import transformers

    classes = {
        "base": transformers.AutoModel,
        "sequence_classification": transformers.AutoModelForSequenceClassification,
        "causal_lm": transformers.AutoModelForCausalLM,
    }
    if head not in classes:
        raise ValueError(f"unknown model head {head!r}; use one of {sorted(classes)}")
    use_safetensors = True if any(path.glob("*.safetensors")) else None
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "trust_remote_code": trust_remote_code,
        "use_safetensors": use_safetensors,
    }
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    if backend == "onnx":
        from .onnx_backend import OnnxModel, export_onnx

        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        session = OnnxModel(export_onnx(path, head, trust_remote_code), config, head)
        return LoadedModel(model=session, tokenizer=tokenizer, path=path, device=torch.device("cpu"), dtype=dtype)
    with quiet_transformers():
        try:
            model = classes[head].from_pretrained(path, attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError, NotImplementedError):
            # this architecture has no SDPA attention: use its default one
            model = classes[head].from_pretrained(path, **kwargs)
    model.eval()
    torch_device = torch.device(device)
    model.to(torch_device)
    return LoadedModel(model=model, tokenizer=tokenizer, path=path, device=torch_device, dtype=dtype)


def model_max_length(loaded: LoadedModel) -> int | None:
    """The longest input the model accepts, from its tokenizer or its position embeddings."""
    limit = getattr(loaded.tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    positions = getattr(loaded.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        offset = 2 if getattr(loaded.config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"} else 0
        return positions - offset
    return None


def write_sentence_transformers_config(
    folder: str | os.PathLike[str], pooling: str, normalize: bool, max_seq_length: int, dimension: int
) -> None:
    """Make a Hugging Face model folder a sentence-transformers model too (Transformer, Pooling with
    ``pooling``, and Normalize when ``normalize``), so it loads with the pooling it was trained with."""
    root = Path(folder)
    modes = {"cls": "cls", "mean": "mean", "last_token": "lasttoken"}
    if pooling not in modes:
        raise ValueError(f"unknown pooling {pooling!r}")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (root / "2_Normalize").mkdir(parents=True, exist_ok=True)
    (root / "1_Pooling").mkdir(parents=True, exist_ok=True)
    pooling_config = {
        "word_embedding_dimension": dimension,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": pooling == "last_token",
        "include_prompt": True,
    }
    files = {
        root / "modules.json": modules,
        root / "1_Pooling" / "config.json": pooling_config,
        root / "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
    }
    for path, content in files.items():
        path.write_text(json.dumps(content, indent=2), encoding="utf-8")
