"""One model object per model and settings object, shared by every caller that asks for the same thing.

The framework adapters build their models here, so two LangChain or LlamaIndex objects with equal settings hold
the same model object (and so the same weights) instead of loading it twice. The cache keys on the model name
and the whole settings object (:meth:`~.settings.ModelSettings.key`).
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from .embedder import FlagModel, dense_embedder
from .m3 import BGEM3FlagModel
from .reranker import FlagAutoReranker, FlagReranker, auto_reranker
from .settings import EmbedderSettings, M3Settings, ModelSettings, RerankerSettings

_INSTANCES: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()

ModelT = TypeVar("ModelT")


def _shared(kind: str, factory: Callable[..., ModelT], model_name_or_path: str | os.PathLike[str],
            settings: ModelSettings | None, keywords: dict[str, Any]) -> ModelT:
    """The one object for (kind, model, settings): a settings object is the key, and is handed to ``factory``
    whole; keywords (the factory's own, as flag_core's FlagEmbedding-compatible classes take them) are keyed by
    their JSON text and passed on as they are."""
    name = os.fspath(model_name_or_path)
    args: tuple[ModelSettings, ...]
    if settings is not None:
        if keywords:
            raise TypeError(f"give a {type(settings).__name__} or keywords, not both ({sorted(keywords)})")
        key, args = f"{kind}|{name}|{settings.key()}", (settings,)
    else:
        key, args = json.dumps([kind, {"model": name, **keywords}], sort_keys=True, default=repr), ()
    with _LOCK:
        model = _INSTANCES.get(key)
        if model is None:
            model = factory(name, *args, **keywords)
            _INSTANCES[key] = model
        return model  # type: ignore[no-any-return]


def _check(cls: type[ModelSettings], settings: ModelSettings | None) -> None:
    if settings is not None and not isinstance(settings, cls):
        raise TypeError(f"settings must be a {cls.__name__}, got {type(settings).__name__}")


def build_embedder(model_name_or_path: str | os.PathLike[str], settings: EmbedderSettings | None = None,
                   **keywords: Any) -> FlagModel:
    """:func:`~.embedder.dense_embedder` for a settings object (or ``FlagAutoModel.from_finetuned``'s keywords),
    shared while anyone holds it. For a BGE-M3 checkpoint (by its head files or its name) it is the dense embedder
    (CLS pooling): framework embeddings are one vector per text; M3's sparse and ColBERT outputs come from
    :func:`build_m3`."""
    _check(EmbedderSettings, settings)
    return _shared("embedder", dense_embedder, model_name_or_path, settings, keywords)


def build_m3(model_name_or_path: str | os.PathLike[str], settings: M3Settings | None = None,
             **keywords: Any) -> BGEM3FlagModel:
    """``BGEM3FlagModel`` for a settings object (or ``BGEM3FlagModel``'s keywords), shared while anyone holds it."""
    _check(M3Settings, settings)
    factory = BGEM3FlagModel if settings is None else BGEM3FlagModel.from_settings
    return _shared("m3", factory, model_name_or_path, settings, keywords)


def build_reranker(model_name_or_path: str | os.PathLike[str], settings: RerankerSettings | None = None,
                   **keywords: Any) -> FlagReranker:
    """The reranker for a settings object (``model_class``, the registry or the folder's config picks the class; a
    None instruction means the class's own), or ``FlagAutoReranker.from_finetuned``'s keywords, shared while anyone
    holds it."""
    _check(RerankerSettings, settings)
    factory = FlagAutoReranker.from_finetuned if settings is None else auto_reranker
    return _shared("reranker", factory, model_name_or_path, settings, keywords)
