"""One model object per model and settings, shared by every caller that asks for the same thing.

The framework adapters build their models here, so two LangChain or LlamaIndex objects with equal
settings hold the same embedder (and so the same weights) instead of loading it twice.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .embedder import FlagModel, dense_embedder
from .m3 import BGEM3FlagModel
from .reranker import FlagAutoReranker, FlagReranker

_INSTANCES: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


def _shared(kind: str, factory: Callable[..., Any], model_name_or_path: str, settings: dict[str, Any]) -> Any:
    key = json.dumps([kind, {"model": model_name_or_path, **settings}], sort_keys=True, default=repr)
    with _LOCK:
        model = _INSTANCES.get(key)
        if model is None:
            model = factory(model_name_or_path, **settings)
            _INSTANCES[key] = model
        return model


def build_embedder(model_name_or_path: str, **settings: Any) -> FlagModel:
    """:func:`~.embedder.dense_embedder` (``FlagAutoModel.from_finetuned`` with the settings every entry point
    resolves alike), shared while anyone holds it. For a BGE-M3 checkpoint (by its head files or its name) it is
    the dense embedder (CLS pooling): framework embeddings are one vector per text; M3's sparse and ColBERT outputs
    come from :class:`flag_core.BGEM3FlagModel`."""
    return _shared("embedder", dense_embedder, model_name_or_path, settings)  # type: ignore[no-any-return]


def build_m3(model_name_or_path: str, **settings: Any) -> BGEM3FlagModel:
    """``BGEM3FlagModel(model_name_or_path, **settings)``, shared while anyone holds it."""
    return _shared("m3", BGEM3FlagModel, model_name_or_path, settings)  # type: ignore[no-any-return]


def build_reranker(model_name_or_path: str, **settings: Any) -> FlagReranker:
    """``FlagAutoReranker.from_finetuned(model_name_or_path, **settings)``, shared while anyone holds it."""
    return _shared("reranker", FlagAutoReranker.from_finetuned, model_name_or_path, settings)  # type: ignore[no-any-return]
