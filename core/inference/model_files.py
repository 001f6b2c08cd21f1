"""Model folders: finding them (local folders first, the Hugging Face hub only when online), reading and
writing their sentence-transformers files, and keeping transformers quiet while it loads them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fileio import MANIFEST_FILE, ArtefactError, clean_stale_staging, verify_folder

logger = logging.getLogger(__name__)

HUB_TIMEOUT_ENV = "FLAGSTACK_HUB_TIMEOUT"
DEFAULT_HUB_TIMEOUT = 60.0

# BGE-M3's sparse and ColBERT heads (small torch files beside the encoder's weights)
M3_HEAD_FILES = {"colbert": "colbert_linear.pt", "sparse": "sparse_linear.pt"}

# files only flagstack's merge and quantize write into a model folder: such a folder must carry its manifest
MERGE_CONFIG_FILE = "merge_config.json"
QUANTIZATION_FILE = "flagstack_quantization.json"
WRITTEN_BY_FLAGSTACK = (MERGE_CONFIG_FILE, QUANTIZATION_FILE)

_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "1_Pooling/*", "*.py",
                    *M3_HEAD_FILES.values()]


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
    if not local.exists():
        clean_stale_staging(local)  # a replacement killed between its two renames: put the earlier folder back
    if local.is_dir():
        if (local / MANIFEST_FILE).is_file():  # written by flagstack (merge, train, quantize, ...): check it whole
            verify_folder(local)
        else:
            marker = next((name for name in WRITTEN_BY_FLAGSTACK if (local / name).is_file()), None)
            if marker is not None:
                raise ArtefactError(f"{local} holds {marker} but no {MANIFEST_FILE}: a flagstack output that is "
                                    "incomplete or was changed, or written by an older flagstack (before manifests), "
                                    "so its weights cannot be checked; write it again")
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(
                f"{local} is a folder but holds no config.json: point at the folder that holds the model's "
                "config.json and weights (a Hugging Face save_pretrained folder)"
            )
        read_json(local / "config.json", dict)
        return local
    if local.exists() or model_name_or_path.startswith((".", "/", "~")) or model_name_or_path.count("/") > 1:
        raise ModelNotFoundError(f"model folder {model_name_or_path!r} does not exist")
    offline = hub_offline()
    try:
        folder = _fetch(model_name_or_path, cache_dir, _WEIGHT_PATTERNS, offline)
        if not any(Path(folder).glob("*.safetensors")):
            # an older checkpoint without safetensors: its .bin weights load with weights_only=True
            folder = _fetch(model_name_or_path, cache_dir, ["*.bin"], offline)
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
    read_json(path / "config.json", dict)
    return path


def has_m3_heads(folder: Path) -> bool:
    """Whether a model folder holds a BGE-M3 head file (``colbert_linear.pt`` or ``sparse_linear.pt``): such a
    folder is a BGE-M3 checkpoint whatever it is named."""
    return any((folder / name).is_file() for name in M3_HEAD_FILES.values())


def hub_timeout() -> float:
    """Seconds a hub download may go without receiving anything (``$FLAGSTACK_HUB_TIMEOUT``, default 60)."""
    text = os.environ.get(HUB_TIMEOUT_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_HUB_TIMEOUT
    except ValueError:
        raise ValueError(f"{HUB_TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{HUB_TIMEOUT_ENV} must be positive, got {text}")
    return value


def _fetch(repo_id: str, cache_dir: str | None, patterns: list[str], offline: bool) -> str:
    """``snapshot_download`` of ``repo_id``, given up with a TimeoutError when the hub sends nothing for
    :func:`hub_timeout` seconds (the hub client waits forever on a server that accepts and never answers;
    a download that keeps receiving is never cut short)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.file_download import repo_folder_name

    def download() -> str:
        return str(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=patterns, local_files_only=offline))

    if offline:
        return download()
    timeout = hub_timeout()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["folder"] = download()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=work, name=f"flagstack-hub-{repo_id}", daemon=True)
    thread.start()
    folder = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    received, quiet_since = _bytes_under(folder), time.monotonic()
    while thread.is_alive():
        thread.join(0.5)
        now = _bytes_under(folder)
        if now != received:
            received, quiet_since = now, time.monotonic()
        elif thread.is_alive() and time.monotonic() - quiet_since >= timeout:
            raise TimeoutError(
                f"the hub sent nothing for {timeout:g} s (set {HUB_TIMEOUT_ENV} to wait longer, or HF_HUB_OFFLINE=1 "
                "to use only local files)"
            )
    if "error" in outcome:
        raise outcome["error"]
    return str(outcome["folder"])


def _bytes_under(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def read_json(file: Path, kind: type[dict[str, Any]] | type[list[Any]]) -> Any:
    """A JSON file that must hold an object (``dict``) or an array (``list``), or a ValueError naming it."""
    try:
        value = json.loads(file.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{file} is not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    except ValueError as exc:
        raise ValueError(f"{file} is not valid JSON ({exc}); restore it from the original model") from None
    if not isinstance(value, kind):
        raise ValueError(
            f"{file} holds a JSON {type(value).__name__}, expected an {'object' if kind is dict else 'array'}; "
            "restore it from the original model"
        )
    return value


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
        modules = read_json(modules_file, list)
        normalize = False
        for i, module in enumerate(modules):
            if not isinstance(module, dict):
                raise ValueError(f"{modules_file}: entry {i} is not an object; restore it from the original model")
            kind = str(module.get("type", ""))
            if kind.endswith("Normalize"):
                normalize = True
            if kind.endswith("Pooling"):
                pooling_config = folder / str(module.get("path", "")) / "config.json"
                if pooling_config.is_file():
                    pooling = _pooling_from_config(read_json(pooling_config, dict))
    bert_config = folder / "sentence_bert_config.json"
    if bert_config.is_file():
        value = read_json(bert_config, dict).get("max_seq_length")
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


# files that hold a tokenizer's vocabulary (fast tokenizer, WordPiece/BPE vocab, SentencePiece, tiktoken)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "*.model", "*.tiktoken")
_SMALLEST_VOCABULARY = 100


def load_tokenizer(folder: Path, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer, or a ValueError naming the folder when it has none. (transformers would build
    a tokenizer with a handful of special tokens from the config alone, and every word would become [UNK].)"""
    import transformers

    if not any(any(folder.glob(pattern)) for pattern in _TOKENIZER_FILES):
        raise ValueError(
            f"{folder} holds no tokenizer files ({', '.join(_TOKENIZER_FILES)}): copy the tokenizer that the "
            "model was trained with into the folder (tokenizer.save_pretrained(folder))"
        )
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if len(tokenizer) < _SMALLEST_VOCABULARY:
        raise ValueError(
            f"the tokenizer in {folder} knows only {len(tokenizer)} tokens: its vocabulary file is missing or "
            "empty; copy the tokenizer that the model was trained with into the folder"
        )
    return tokenizer


@contextlib.contextmanager
def readable_weights(folder: Path) -> Iterator[None]:
    """Turn safetensors' error for a truncated or corrupt weights file into a ValueError naming the folder."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as exc:
        raise ValueError(
            f"the weights in {folder} cannot be read ({exc}): a .safetensors file is truncated or corrupt; "
            "download or save the model again"
        ) from None


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


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx", ".xml")


def copy_support_files(source: Path, target: Path) -> None:
    """A model folder's config, tokenizer and sentence-transformers files into ``target`` (weights, checkpoints
    and training runs left out, and the source's flagstack manifest): what a merged or quantized model keeps of its
    source."""
    for item in source.iterdir():
        if (item.name.startswith(".") or item.name.endswith(WEIGHT_SUFFIXES) or item.name.endswith(".index.json")
                or item.name == MANIFEST_FILE):
            continue
        if item.is_dir():
            if item.name.startswith(("checkpoint-", "runs")):
                continue
            shutil.copytree(item, target / item.name)
        else:
            shutil.copy2(item, target / item.name)
