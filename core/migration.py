"""Moving from the Hugging Face classes: their constructor arguments, translated into flagstack's settings.

LangChain's ``HuggingFaceEmbeddings`` / ``HuggingFaceBgeEmbeddings`` / ``HuggingFaceCrossEncoder`` and LlamaIndex's
``HuggingFaceEmbedding`` pass ``model_kwargs`` to a sentence-transformers model and ``encode_kwargs`` to its
``encode``. The keys that mean something in flagstack become its settings (``device`` -> ``devices``,
``normalize_embeddings``, ``batch_size``, ``prompt`` -> an instruction, a half-precision ``torch_dtype`` -> ``use_fp16``
/ ``use_bf16``, ...); keys that change nothing about the vectors (``convert_to_numpy``) are accepted; every other
key is a ValueError that names it and what to use instead, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .inference.backends import BACKENDS

# keys that are accepted and change nothing: the adapters return Python lists whatever the array type asked for
_NO_EFFECT = {"convert_to_numpy", "convert_to_tensor"}

_HINTS = {
    "revision": "download that revision into a local folder and pass its path",
    "token": "log in with `hf auth login` (or HF_TOKEN) before loading",
    "use_auth_token": "log in with `hf auth login` (or HF_TOKEN) before loading",
    "local_files_only": "set HF_HUB_OFFLINE=1",
    "precision": "flagstack returns float32 vectors; quantize them after encoding",
    "output_value": "flagstack returns sentence embeddings only",
    "similarity_fn_name": "flagstack vectors are compared by inner product (cosine when normalised)",
    "activation_fn": "use normalize=True for sigmoid scores",
    "num_labels": "a reranker has one relevance logit",
    "pool": "use devices=[...] (one worker process per device)",
}


class MigrationError(ValueError):
    """An argument of a Hugging Face class that flagstack has no equivalent for."""


def _reject(where: str, key: str, value: Any) -> MigrationError:
    hint = _HINTS.get(key, "see flag_core.settings.EmbedderFields / RerankerFields for flagstack's settings")
    return MigrationError(f"{where}[{key!r}] = {value!r} has no flagstack equivalent; {hint}")


def _dtype(value: Any, where: str) -> dict[str, Any]:
    name = str(value).removeprefix("torch.")
    if name in ("float16", "half"):
        return {"use_fp16": True}
    if name in ("bfloat16",):
        return {"use_bf16": True}
    if name in ("float32", "float", "auto"):
        return {}
    raise MigrationError(f"{where}[torch_dtype] = {value!r}: flagstack computes in float32, fp16 or bf16")


def transformers_kwargs(kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Settings from the ``model_kwargs`` that sentence-transformers passes on to transformers' ``from_pretrained``."""
    settings: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in ("torch_dtype", "dtype"):
            settings.update(_dtype(value, where))
        elif key == "attn_implementation" and value in ("sdpa", None):
            continue  # flagstack runs SDPA attention where the architecture has it
        elif key == "trust_remote_code":
            settings["trust_remote_code"] = bool(value)
        else:
            raise _reject(where, key, value)
    return settings


def sentence_transformer_kwargs(kwargs: Mapping[str, Any], where: str = "model_kwargs") -> dict[str, Any]:
    """Settings from the keyword arguments of ``SentenceTransformer(...)`` / ``CrossEncoder(...)``. ``prompts``
    and ``default_prompt_name`` come back under those names, for :func:`prompt_text`."""
    settings: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "device":
            if value is not None:
                settings["devices"] = value
        elif key in ("trust_remote_code", "truncate_dim", "max_length"):
            settings[key] = value
        elif key == "cache_folder":
            settings["cache_dir"] = value
        elif key == "backend":
            if value not in BACKENDS:
                names = ", ".join(map(repr, BACKENDS[:-1])) + f" or {BACKENDS[-1]!r}"
                raise MigrationError(f"{where}['backend'] = {value!r}: flagstack runs backend={names}")
            settings["backend"] = value
        elif key == "model_kwargs":
            settings.update(transformers_kwargs(value or {}, f"{where}['model_kwargs']"))
        elif key in ("prompts", "default_prompt_name"):
            settings[key] = value
        else:
            raise _reject(where, key, value)
    return settings


def encode_kwargs(kwargs: Mapping[str, Any], where: str = "encode_kwargs") -> dict[str, Any]:
    """Settings from the keyword arguments of ``SentenceTransformer.encode``; a ``prompt`` comes back as
    ``instruction`` and a ``prompt_name`` under that name, for :func:`prompt_text`."""
    settings: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _NO_EFFECT:
            continue
        if key in ("batch_size", "normalize_embeddings", "truncate_dim", "show_progress_bar"):
            settings[key] = value
        elif key == "device":
            if value is not None:
                settings["devices"] = value
        elif key == "prompt":
            settings["instruction"] = value
        elif key == "prompt_name":
            settings["prompt_name"] = value
        elif (key, value) in (("precision", "float32"), ("output_value", "sentence_embedding"), ("output_value", None)):
            continue
        else:
            raise _reject(where, key, value)
    return settings


def prompt_text(name: str, prompts: Mapping[str, str] | None, folder: Path | None, where: str) -> str:
    """The text of sentence-transformers prompt ``name``: from ``prompts`` given to the model, else from the
    model folder's config_sentence_transformers.json."""
    from .inference.model_files import read_json

    known = dict(prompts or {})
    config = folder / "config_sentence_transformers.json" if folder is not None else None
    if config is not None and config.is_file():
        known = {**(read_json(config, dict).get("prompts") or {}), **known}
    if name not in known:
        raise MigrationError(f"{where}: prompt_name {name!r} is not one of the model's prompts ({sorted(known)})")
    return str(known[name])


def merge_setting(settings: dict[str, Any], key: str, value: Any, where: str) -> None:
    """Put ``key`` into ``settings``, or raise when it is already there with another value."""
    if key in settings and settings[key] != value:
        raise MigrationError(f"{where} sets {key}={value!r}, but {key}={settings[key]!r} is given too: give it once")
    settings[key] = value


def _folder(values: Mapping[str, Any], model_field: str) -> Path | None:
    from .inference.inputs import as_model_name
    from .inference.model_files import resolve_model_path

    name = as_model_name(values.get(model_field))  # a pathlib.Path is a folder name too
    return resolve_model_path(name, values.get("cache_dir")) if isinstance(name, str) else None


def _instructions(
    settings: dict[str, Any], model: dict[str, Any], sides: dict[str, dict[str, Any]], values: Mapping[str, Any],
    model_field: str, where: str,
) -> None:
    """Turn ``prompt`` / ``prompt_name`` / ``default_prompt_name`` of each side ("query", "passage") into the
    instruction settings."""
    prompts, default = model.pop("prompts", None), model.pop("default_prompt_name", None)
    folder: list[Path | None] = []

    def text(name: str) -> str:
        if not folder:
            folder.append(_folder({**values, **settings}, model_field))
        return prompt_text(name, prompts, folder[0], where)

    for side, field in (("query", "query_instruction_for_retrieval"), ("passage", "passage_instruction_for_retrieval")):
        options = sides[side]
        if "instruction" in options:
            instruction = options.pop("instruction")
        elif "prompt_name" in options:
            instruction = text(options.pop("prompt_name"))
        elif default is not None:
            instruction = text(default)
        else:
            continue
        options.pop("prompt_name", None)
        merge_setting(settings, field, instruction, where)


def langchain_embeddings_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """``HuggingFaceEmbeddings`` (langchain-huggingface) and ``HuggingFaceBgeEmbeddings`` (langchain-community)
    arguments among ``values``, translated into flagstack's settings; the other values are kept."""
    settings = dict(values)
    where = "HuggingFaceEmbeddings arguments"
    if "cache_folder" in settings:
        merge_setting(settings, "cache_dir", settings.pop("cache_folder"), where)
    model = sentence_transformer_kwargs(settings.pop("model_kwargs", None) or {})
    documents = encode_kwargs(settings.pop("encode_kwargs", None) or {})
    query_given = settings.pop("query_encode_kwargs", None) or {}
    # HuggingFaceEmbeddings encodes queries with encode_kwargs when query_encode_kwargs is empty
    queries = encode_kwargs(query_given, "query_encode_kwargs") if query_given else dict(documents)
    if "query_instruction" in settings:  # HuggingFaceBgeEmbeddings
        queries["instruction"] = settings.pop("query_instruction")
    if "embed_instruction" in settings:
        documents["instruction"] = settings.pop("embed_instruction")
    if "max_length" in model:
        raise _reject("model_kwargs", "max_length", model["max_length"])
    _instructions(settings, model, {"query": queries, "passage": documents}, values, "model_name", where)
    for options, side in ((model, "model_kwargs"), (documents, "encode_kwargs")):
        for key, value in options.items():
            merge_setting(settings, key, value, f"{where} ({side})")
    for key, value in queries.items():
        if settings.get(key, value) != value:
            raise MigrationError(f"query_encode_kwargs sets {key}={value!r} but the documents use {settings[key]!r}: "
                                 "flagstack encodes queries and documents with one setting")
        settings.setdefault(key, value)
    if settings.pop("multi_process", False):
        settings.setdefault("devices", None)  # every accelerator, one worker process each (flagstack's default)
    if "show_progress" in settings:
        merge_setting(settings, "show_progress_bar", settings.pop("show_progress"), where)
    return settings


def llamaindex_embedding_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """``HuggingFaceEmbedding`` (llama-index-embeddings-huggingface) arguments among ``values``, translated
    into flagstack's settings; the other values are kept."""
    settings = dict(values)
    where = "HuggingFaceEmbedding arguments"
    renames = {
        "cache_folder": "cache_dir",
        "query_instruction": "query_instruction_for_retrieval",
        "text_instruction": "passage_instruction_for_retrieval",
        "normalize": "normalize_embeddings",
        "device": "devices",
    }
    for old, new in renames.items():
        if old in settings:
            value = settings.pop(old)
            if value is not None:
                merge_setting(settings, new, value, where)
    if "max_length" in settings:
        length = settings.pop("max_length")
        if length is not None:
            merge_setting(settings, "query_max_length", length, where)
            merge_setting(settings, "passage_max_length", length, where)
    if "model_kwargs" in settings:
        for key, value in transformers_kwargs(settings.pop("model_kwargs") or {}, "model_kwargs").items():
            merge_setting(settings, key, value, where)
    parallel, targets = settings.pop("parallel_process", False), settings.pop("target_devices", None)
    if targets is not None and not parallel:
        raise MigrationError("target_devices is used only with parallel_process=True (or pass devices=[...])")
    if parallel:
        merge_setting(settings, "devices", targets, where)  # None: every accelerator
    return settings


def cross_encoder_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """``HuggingFaceCrossEncoder`` (langchain-community) arguments among ``values`` (its ``model_kwargs`` go to
    sentence-transformers' ``CrossEncoder``), translated into flagstack's reranker settings."""
    settings = dict(values)
    model = sentence_transformer_kwargs(settings.pop("model_kwargs", None) or {})
    for key in ("prompts", "default_prompt_name", "truncate_dim"):
        if key in model:
            raise _reject("model_kwargs", key, model[key])
    for key, value in model.items():
        merge_setting(settings, key, value, "HuggingFaceCrossEncoder arguments (model_kwargs)")
    return settings
