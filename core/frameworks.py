"""What the framework adapters (langchain_flag, llamaindex_flag) share that is not model logic: a public module.

- :class:`RebuildsModel`: copies and pickles carry the settings, never the model (built again, shared).
- :class:`HybridIndexHolder`: the search settings, the index and its file of both BGE-M3 hybrid retrievers.
- :func:`search_options`: per-call ``k`` / ``mode`` of a retriever (None: the retriever's own), checked once.
- :func:`expand_settings`: a dict of settings (e.g. LlamaIndex's ``m3_settings={...}``) as keyword arguments.
- :func:`run_async`: a blocking flag_core call awaited without blocking the event loop, its model calls gathered
  with other callers' (the adapters' async methods).
- :class:`M3Adapter`: the BGE-M3 adapters' ``client`` and ``one_pass``; :func:`require_lexical_weights`: their
  Milvus shapes' check that a text has lexical weights.
- :func:`one_pass_model`: the shared BGE-M3 model of a dense, sparse or ColBERT adapter, registered with its
  :class:`~flag_core.inference.one_pass.OnePass` so that a hybrid store's separate asks share one encoding.
- :func:`qdrant_m3_query`: Qdrant ``query_points`` arguments that rank BGE-M3's three vectors as
  ``HybridIndex.search`` does (the Qdrant stores of both adapters).
- :func:`absolute_path`: an index path kept absolute, so a serialized retriever finds its file from anywhere.
- Checks and types the adapters' fields use: :data:`ModelName`, :func:`as_model_name`, :func:`check_positive_int`,
  :func:`as_item_list` (a list of texts, documents or nodes, naming the first bad item).
"""

from __future__ import annotations

import copy
import numbers
import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, PrivateAttr, field_validator

from .inference.fusion import canonical_mode
from .inference.gather import run_async
from .inference.inputs import ModelName, as_item_list, as_model_name, check_positive_int
from .inference.m3 import BGEM3FlagModel
from .inference.one_pass import OnePass, Output
from .inference.settings import settings_class
from .inference.shared import build_m3
from .retrieval.dense import PayloadFormat
from .retrieval.hybrid import (
    DEFAULT_CANDIDATES,
    DEFAULT_COLBERT_STORAGE,
    DEFAULT_WEIGHTS,
    HybridIndex,
    check_colbert_storage,
    check_weights,
)

__all__ = [
    "ColbertStorage",
    "HybridIndexHolder",
    "M3Adapter",
    "Mode",
    "ModelName",
    "OnePass",
    "RebuildsModel",
    "absolute_path",
    "as_item_list",
    "as_model_name",
    "check_mode",
    "check_positive_int",
    "check_weights",
    "expand_settings",
    "one_pass_model",
    "overrides",
    "qdrant_m3_query",
    "require_lexical_weights",
    "run_async",
    "search_options",
]

Mode = Literal["dense", "sparse", "colbert", "sparse+dense", "hybrid"]
"""A hybrid retriever's ``mode`` field: what ranks (the names of :data:`flag_core.retrieval.MODES`; a test holds
them equal)."""

ColbertStorage = Literal["float16", "float32", "int8", "int4", "binary"]
"""A hybrid retriever's ``colbert_storage`` field: how the index keeps ColBERT rows (the names of
:data:`flag_core.retrieval.COLBERT_STORAGE`; a test holds them equal)."""


class RebuildsModel:
    """For adapter classes that hold a model in a private attribute: copies and pickles carry the settings, not
    the model. ``copy.deepcopy`` and unpickling build the model again through flag_core's shared instances
    (``build_embedder`` / ``build_reranker``), so a copy holds the same weights without copying them."""

    # a setting assigned to a built adapter builds its model again (shared, as at construction), so a field never
    # reads back one value while the model runs with another; a class whose build holds more than the model (an
    # index) refuses the assignment instead
    rebuild_on_assignment: ClassVar[bool] = True

    def __setattr__(self, name: str, value: Any) -> None:
        private = getattr(self, "__pydantic_private__", None)
        if name.startswith("_") or not private or not _is_model_setting(type(self), name):
            super().__setattr__(name, value)
            return
        if not type(self).rebuild_on_assignment:
            raise AttributeError(f"{name} decides the model of this {type(self).__name__}; build another one with "
                                 f"{name}={value!r}")
        before = getattr(self, name)
        super().__setattr__(name, value)
        try:
            self.model_post_init(None)  # type: ignore[attr-defined]
        except BaseException:
            super().__setattr__(name, before)
            raise

    def __getstate__(self) -> dict[str, Any]:
        state = dict(BaseModel.__getstate__(self))  # type: ignore[arg-type]
        state["__pydantic_private__"] = {}  # the model: rebuilt, never copied or pickled
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        BaseModel.__setstate__(self, state)  # type: ignore[arg-type]
        self.model_post_init(None)  # type: ignore[attr-defined]

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        clone = type(self).__new__(type(self))
        clone.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return clone


class M3Adapter(RebuildsModel):
    """The BGE-M3 adapters (dense, sparse, ColBERT; both frameworks): a :class:`RebuildsModel` whose ``_model`` (a
    private attribute the class declares) is built by :func:`one_pass_model`."""

    @property
    def client(self) -> BGEM3FlagModel:
        """The flag_core model doing the work."""
        return self._model  # type: ignore[attr-defined, no-any-return]

    @property
    def one_pass(self) -> OnePass:
        """The model's shared encodings (:class:`flag_core.frameworks.OnePass`)."""
        return self.client.one_pass


def overrides(instance: Any, base: type, name: str) -> bool:
    """Whether ``instance``'s class (``base`` or a subclass) takes method ``name`` from anywhere but ``base`` (its
    own, or a mixin's). Read from the classes' namespaces, not by comparing the attributes: LlamaIndex wraps its
    classes' methods (wrapt), and each lookup of a wrapped method gives a new object."""
    return next((cls for cls in type(instance).__mro__ if name in vars(cls)), None) is not base


def require_lexical_weights(texts: Sequence[str], weights: list[Any], name: str) -> list[Any]:
    """``weights``, or a ValueError naming the first text BGE-M3 gives no lexical weight for: Milvus refuses an
    empty sparse vector, and would fail a whole insert without saying which text (the adapters' Milvus shapes)."""
    for position, (text, row) in enumerate(zip(texts, weights, strict=True)):
        if not row:
            where = name if name == "the query" else f"{name}[{position}]"
            raise ValueError(f"{where} ({text[:60]!r}) has no BGE-M3 lexical weight (no token outweighs zero), and "
                             "Milvus cannot store or search an empty sparse vector: leave such texts out of the "
                             "sparse field")
    return weights


def _is_model_setting(owner: type, name: str) -> bool:
    """Whether assigning ``name`` changes what ``owner``'s model is built from: the model's name or path, or a
    field of the settings class behind ``owner`` that is not a per-call option."""
    if name in ("model_name", "model") and name in getattr(owner, "model_fields", {}):
        return True
    try:
        cls = settings_class(owner)
    except TypeError:  # a class that holds no flag_core settings
        return False
    return name in cls.model_fields and name not in getattr(owner, "per_call", ())


def one_pass_model(adapter: Any, output: Output) -> BGEM3FlagModel:
    """The BGE-M3 model for ``adapter``'s settings (``adapter.model_name``, ``adapter.model_settings()``; shared with
    every adapter of equal settings), with ``output`` registered on its :class:`OnePass` for as long as ``adapter``
    lives: the dense, sparse and ColBERT adapters of one model then share one encoding of each text."""
    model = build_m3(adapter.model_name, adapter.model_settings())
    one_pass = model.one_pass
    one_pass.register(output)
    weakref.finalize(adapter, one_pass.unregister, output)
    return model


def qdrant_m3_query(
    names: tuple[str, str, str],
    dense: list[float],
    sparse: Any,
    colbert: list[list[float]],
    k: int,
    mode: str = "colbert",
    candidates: int = DEFAULT_CANDIDATES,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    query_filter: Any = None,
) -> dict[str, Any]:
    """``query_points`` arguments (prefetch, query, using) that rank as ``HybridIndex.search(mode=mode)`` does:
    the ``max(candidates, k)`` best by the dense vector (``names[0]``) and by the sparse one (``names[1]``), their
    union ranked by ``mode`` (any of :data:`flag_core.retrieval.MODES`): MaxSim of the ColBERT vectors
    (``names[2]``) for "colbert"; else ``weights`` (dense, sparse, colbert) over the mode's scores, MaxSim divided
    by the query's tokens as FlagEmbedding divides it, and 0 for a candidate without a sparse score, as flagstack
    scores it. Needs qdrant-client (imported here, on use); ``sparse`` is a ``qdrant_client.models.SparseVector``."""
    from qdrant_client import models

    mode = canonical_mode(mode)
    dense_name, sparse_name, colbert_name = names
    depth = max(candidates, k)
    pool = [models.Prefetch(query=dense, using=dense_name, limit=depth, filter=query_filter),
            models.Prefetch(query=sparse, using=sparse_name, limit=depth, filter=query_filter)]
    single = {"dense": (dense, dense_name), "sparse": (sparse, sparse_name), "colbert": (colbert, colbert_name)}
    if mode in single:  # one score ranks the candidates (sparse: those sharing a token with the query, as flagstack)
        query, using = single[mode]
        return {"prefetch": pool, "query": query, "using": using}
    w_dense, w_sparse, w_colbert = check_weights(weights)
    mode_weights = {"sparse+dense": (w_dense, w_sparse, 0.0), "hybrid": (w_dense, w_sparse, w_colbert)}[mode]
    total = sum(mode_weights)
    routes = [(dense, dense_name), (sparse, sparse_name)] + ([(colbert, colbert_name)] if mode == "hybrid" else [])
    rescored = [models.Prefetch(prefetch=pool, query=query, using=name, limit=2 * depth) for query, name in routes]
    scale = (1.0, 1.0, 1.0 / max(len(colbert), 1))
    terms: list[Any] = [models.MultExpression(mult=[mode_weights[i] * scale[i] / total, f"$score[{i}]"])
                        for i in range(len(routes))]
    # every candidate is in the dense route; one that shares no token with the query has no sparse score: 0
    formula = models.FormulaQuery(formula=models.SumExpression(sum=terms), defaults={"$score[1]": 0.0})
    return {"prefetch": rescored, "query": formula}


def absolute_path(path: Any) -> Any:
    """An index path (str or os.PathLike) as an absolute str, so that a serialized retriever finds its file from
    any working directory; anything else as it is, for pydantic to refuse."""
    return os.path.abspath(os.fspath(path)) if isinstance(path, str | os.PathLike) else path


def check_mode(mode: Any) -> str:
    """``mode`` by its canonical name (one of :data:`flag_core.retrieval.MODES`; FlagEmbedding's
    "colbert+sparse+dense" is "hybrid"), else a ValueError naming the modes: the index's own rule."""
    return canonical_mode(mode)


def search_options(k: Any, mode: Any, default_k: int, default_mode: str) -> tuple[int, str]:
    """A retriever's per-call ``k`` and ``mode`` (None: its own, ``default_k`` / ``default_mode``), checked before
    anything is encoded: ``k`` a positive int (numpy integers too), ``mode`` one of the modes (:func:`check_mode`)."""
    k = default_k if k is None else check_positive_int(k, "k", allow_none=False)
    return k, check_mode(default_mode if mode is None else mode)


def expand_settings(
    kwargs: Mapping[str, Any], settings: Mapping[str, Any] | None, fields: Iterable[str], name: str
) -> dict[str, Any]:
    """``kwargs`` with a dict of settings (the argument ``name``, e.g. ``m3_settings={...}``) merged in as
    keyword arguments; a key that is not one of ``fields`` is a TypeError (as an unknown keyword is), one that
    ``kwargs`` gives too a ValueError, each naming it (never silently dropped or overridden)."""
    merged = dict(kwargs)
    if settings is None:
        return merged
    if not isinstance(settings, Mapping):
        try:
            settings = dict(settings)  # (key, value) pairs, as dict() reads them
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a dict of settings, got {type(settings).__name__}") from None
    known = set(fields)
    for key, value in settings.items():
        if key not in known:
            raise TypeError(f"{name} has {key!r}, which is not a setting; the settings are {', '.join(sorted(known))}")
        if key in merged:
            raise ValueError(f"{key} is given twice, as a keyword and in {name}: give it once")
        merged[key] = value
    return merged


class HybridIndexHolder(RebuildsModel, BaseModel):
    """What LangChain's and LlamaIndex's ``FlagHybridRetriever`` share: the search settings (``mode``, ``weights``,
    ``candidates``), how ColBERT rows are stored (``colbert_storage``: None keeps a file's and stores a new index's
    as float16; a kind given converts a file's on reading), the :class:`~flag_core.retrieval.HybridIndex` built
    with the class's BGE-M3 settings (``model_name`` and :class:`flag_core.settings.M3Fields`, which the adapter
    class holds) and the file it was last saved to or read from (``index_path``, kept absolute; given at
    construction, it is read).

    Copies and pickles carry the settings and the documents, never the model (built again, shared). Two holders
    are equal when their settings and their documents (texts and payloads) are. A subclass sets
    :attr:`payloads`."""

    mode: Mode = Field(default="hybrid", description="what ranks: dense, sparse, colbert, sparse+dense or hybrid")
    weights: tuple[float, float, float] = Field(default=DEFAULT_WEIGHTS, description="dense, sparse, colbert")
    candidates: int = Field(default=DEFAULT_CANDIDATES, gt=0, description="dense and sparse candidates each")
    colbert_storage: ColbertStorage | None = Field(
        default=None,
        description="ColBERT rows as float16, float32, int8, int4 or binary (None: the file's, else float16)")
    index_path: str | None = Field(default=None, description="index file to read at construction (save sets it)")

    payloads: ClassVar[PayloadFormat]

    rebuild_on_assignment: ClassVar[bool] = False  # the index holds the model's vectors: build another retriever

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "colbert_storage" and getattr(self, "__pydantic_private__", None):
            raise AttributeError("colbert_storage decides how the built index keeps its ColBERT rows; save it and "
                                 f"load it with colbert_storage={value!r} to convert them")
        super().__setattr__(name, value)
    _index: HybridIndex = PrivateAttr()
    _saved_revision: int | None = PrivateAttr(default=None)  # the index's revision when last saved or read

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.index_path is not None:  # read after validation, so a bad file is an IndexFileError
            self._read_index(self.index_path)

    @field_validator("index_path", mode="before")
    @classmethod
    def _absolute(cls, value: Any) -> Any:
        return absolute_path(value)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        return check_mode(value) if isinstance(value, str) else value  # an alias as its canonical name

    @field_validator("candidates", "similarity_top_k", "k", mode="before", check_fields=False)
    @classmethod
    def _count(cls, value: Any, info: Any) -> Any:
        # a bool is not a count (pydantic would read True as 1); "3" from a config is read as 3 by pydantic
        return check_positive_int(value, info.field_name) if isinstance(value, numbers.Integral) else value

    @field_validator("colbert_storage", mode="before")
    @classmethod
    def _storage(cls, value: Any) -> Any:
        return value if value is None else check_colbert_storage(value)  # the index's rule and message

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        return check_weights(value)  # the one rule (numpy arrays and lists too), named "weights"

    def model_post_init(self, context: Any, /) -> None:
        model = build_m3(self.model_name, self.model_settings())  # type: ignore[attr-defined]
        self._index = HybridIndex(model, payload_format=self.payloads,
                                  colbert_storage=self.colbert_storage or DEFAULT_COLBERT_STORAGE)

    def __getstate__(self) -> dict[str, Any]:
        """Settings (the model is built again, shared: :class:`RebuildsModel`) and the index's documents."""
        return {**super().__getstate__(), "flagstack_index": self._index.detached(),
                "saved_revision": self._saved_revision}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        documents, saved_revision = state.pop("flagstack_index"), state.pop("saved_revision", None)
        super().__setstate__(state)
        self._index = HybridIndex.attached(self._index.model, documents)
        self._saved_revision = saved_revision

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, HybridIndexHolder)
        fields = type(self).model_fields
        return (
            all(getattr(self, name) == getattr(other, name) for name in fields if not fields[name].exclude)
            and len(self) == len(other)
            and self._index.dense.payloads == other._index.dense.payloads
        )

    __hash__ = None  # type: ignore[assignment]  # equal by value, and mutable

    def __len__(self) -> int:
        return len(self._index)

    def in_file(self) -> bool:
        """Whether everything the index holds is in the file at ``index_path`` (what serialization refers to)."""
        return (not len(self._index) and self.index_path is None) or (
            self.index_path is not None and self._index.revision == self._saved_revision)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index (all three outputs, texts, payloads, model settings) to one file, atomically; it
        becomes ``index_path``."""
        self._saved_revision = self._index.save(path)  # the revision written: later changes are not in the file
        self.index_path = absolute_path(path)

    def _read_index(self, path: str | os.PathLike[str]) -> None:
        self._index = HybridIndex.load(path, self._index.model, self.payloads, self.colbert_storage)
        self.index_path = absolute_path(path)
        self._saved_revision = self._index.revision
