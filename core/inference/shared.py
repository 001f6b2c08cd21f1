"""One model object per model and settings object, shared by every caller that asks for the same thing.

The framework adapters build their models here, so two LangChain or LlamaIndex objects with equal settings hold
the same model object (and so the same weights) instead of loading it twice. The cache keys on the model name
and the whole settings object (:meth:`~.settings.ModelSettings.key`).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from .embedder import FlagModel, dense_embedder
from .m3 import BGEM3FlagModel
from .reranker import FlagReranker, auto_reranker
from .settings import EmbedderSettings, M3Settings, ModelSettings, RerankerSettings

_INSTANCES: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()

SettingsT = TypeVar("SettingsT", bound=ModelSettings)
ModelT = TypeVar("ModelT")


def _shared(factory: Callable[[str, SettingsT], ModelT], model_name_or_path: str | os.PathLike[str],
            settings: SettingsT) -> ModelT:
    name = os.fspath(model_name_or_path)
    key = f"{factory.__module__}.{factory.__qualname__}|{name}|{settings.key()}"
    with _LOCK:
        model = _INSTANCES.get(key)
        if model is None:
            model = factory(name, settings)
            _INSTANCES[key] = model
        return model  # type: ignore[no-any-return]


def _settings(cls: type[SettingsT], settings: SettingsT | None, keywords: dict[str, Any]) -> SettingsT:
    if settings is None:
        return cls(**keywords)
    if keywords:
        raise TypeError(f"give a {cls.__name__} or keywords, not both ({sorted(keywords)})")
    if not isinstance(settings, cls):
        raise TypeError(f"settings must be a {cls.__name__}, got {type(settings).__name__}")
    return settings


def build_embedder(model_name_or_path: str | os.PathLike[str], settings: EmbedderSettings | None = None,
                   **keywords: Any) -> FlagModel:
    """:func:`~.embedder.dense_embedder` for a settings object (or its keywords), shared while anyone holds it. For
    a BGE-M3 checkpoint (by its head files or its name) it is the dense embedder (CLS pooling): framework embeddings
    are one vector per text; M3's sparse and ColBERT outputs come from :func:`build_m3`."""
    return _shared(dense_embedder, model_name_or_path, _settings(EmbedderSettings, settings, keywords))


def build_m3(model_name_or_path: str | os.PathLike[str], settings: M3Settings | None = None,
             **keywords: Any) -> BGEM3FlagModel:
    """``BGEM3FlagModel`` for a settings object (or its keywords), shared while anyone holds it."""
    return _shared(BGEM3FlagModel.from_settings, model_name_or_path, _settings(M3Settings, settings, keywords))


def build_reranker(model_name_or_path: str | os.PathLike[str], settings: RerankerSettings | None = None,
                   **keywords: Any) -> FlagReranker:
    """The reranker for a settings object (or its keywords; the class from ``model_class``, the registry or the
    folder's config), shared while anyone holds it."""
    return _shared(auto_reranker, model_name_or_path, _settings(RerankerSettings, settings, keywords))
