"""Drop-in replacements for FlagEmbedding's embedders: FlagModel, LLMEmbedder and FlagAutoModel."""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypedDict, overload

import numpy as np
import torch
from typing_extensions import Unpack

from .front import ModelFront
from .gather import run_async
from .inputs import as_text_list, check_positive_int
from .instructions import (
    DEFAULT_INSTRUCTION_FORMAT,
    LLM_EMBEDDER_DEFAULT_TASK,
    apply_instruction,
    llm_embedder_instruction,
)
from .kinds import ModelKind
from .m3 import BGEM3FlagModel
from .model_files import resolve_model_path
from .progress import progress_bar
from .registry import ModelEntry, checkpoint_kind, clamp_length, resolve_embedder
from .runtime import EmbeddingRuntime, EmbedOptions
from .settings import BackendName, Devices, EmbedderSettings, setting_defaults
from .streaming import DEFAULT_CHUNK_SIZE, NpyStream, encode_chunks, write_npy

OutputFormat = Literal["numpy", "torch", "list"]
Side = Literal["query", "passage"]
Embeddings = np.ndarray | torch.Tensor | list[float] | list[list[float]]

# the declared default of each setting: the FlagEmbedding-compatible signatures below spell their parameters out
# and read each default from its one declaration, in the settings class (a constructor whose default differs reads
# it from its class's none_means, a named constant; tests/flag_core/test_settings.py holds both)
_E = setting_defaults(EmbedderSettings)
# texts up to which FlagModel.aencode_as waits in the queue on the event loop; above, it runs in a waiting thread
ASYNC_INLINE_TEXTS = 256


@dataclass(frozen=True)
class _Plan:
    """What one encode call runs (its texts, instructions applied, and options) and how it answers."""

    texts: list[str]
    options: EmbedOptions
    single: bool
    fmt: str

    def finish(self, vectors: torch.Tensor) -> Embeddings:
        if self.single:
            vectors = vectors[0]
        if self.fmt == "torch":
            return vectors
        array = vectors.numpy()
        return array.tolist() if self.fmt == "list" else array  # type: ignore[no-any-return]


class _Planned(BaseException):  # not an error (no `except Exception` takes it): how encode() hands aencode_as its plan
    def __init__(self, plan: _Plan) -> None:
        super().__init__("planned")
        self.plan = plan


# the model whose aencode_as is planning a call (its encode() then raises _Planned instead of running)
_PLANNING: contextvars.ContextVar[object] = contextvars.ContextVar("flagstack_planning", default=None)
_PLANNED_METHODS = ("encode", "encode_as", "encode_queries", "encode_corpus", "encode_keys")


class EncodeOptions(TypedDict, total=False):
    """The keyword options of ``encode``, ``encode_queries`` and ``encode_corpus`` besides ``output``."""

    batch_size: int | None
    max_length: int | None
    convert_to_numpy: bool | None
    instruction: str | None
    instruction_format: str | None
    show_progress_bar: bool | None


class FlagModel(ModelFront[EmbedderSettings]):
    """An embedding model with FlagEmbedding's ``FlagModel`` interface, on flagstack's runtime.

    Settings left as None are decided by :func:`~.registry.resolve_embedder` (``self.resolved``), as for every
    other entry point: a BGE-M3 checkpoint (by its head files or its name) is CLS pooled with 512-token
    lengths; other folders take their sentence-transformers files (pooling, max_seq_length), then the
    registry of known models, then FlagEmbedding's defaults (cls pooling, 512 tokens). Instructions are used
    only when given, as in FlagEmbedding (``FlagAutoModel`` fills them from the registry). fp16 is used on
    accelerators only; bf16 when asked, also on CPUs. The settings (:class:`EmbedderSettings`, resolved) read as
    attributes (``model.pooling_method``, ``model.passage_max_length``).
    """

    settings_class = EmbedderSettings
    options: ClassVar[dict[str, Any]] = {"convert_to_numpy": True, "padding_side": None}
    not_in_constructor: ClassVar[tuple[str, ...]] = ("task",)
    setting_reasons: ClassVar[dict[str, str]] = {"task": "an LLM-Embedder setting, not one"}
    none_means: ClassVar[dict[str, Any]] = {"query_instruction_format": DEFAULT_INSTRUCTION_FORMAT}
    runtime: EmbeddingRuntime

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        normalize_embeddings: bool = _E.normalize_embeddings,
        use_fp16: bool = _E.use_fp16,
        query_instruction_for_retrieval: str | None = _E.query_instruction_for_retrieval,
        query_instruction_format: str = none_means["query_instruction_format"],
        devices: Devices = _E.devices,
        pooling_method: str | None = _E.pooling_method,
        trust_remote_code: bool = _E.trust_remote_code,
        cache_dir: str | None = _E.cache_dir,
        batch_size: int = _E.batch_size,
        query_max_length: int | None = _E.query_max_length,
        passage_max_length: int | None = _E.passage_max_length,
        convert_to_numpy: bool = options["convert_to_numpy"],
        truncate_dim: int | None = _E.truncate_dim,
        passage_instruction_for_retrieval: str | None = _E.passage_instruction_for_retrieval,
        passage_instruction_format: str = _E.passage_instruction_format,
        use_bf16: bool = _E.use_bf16,
        max_tokens_per_batch: int | None = _E.max_tokens_per_batch,
        show_progress_bar: bool = _E.show_progress_bar,
        padding_side: Literal["left", "right"] | None = options["padding_side"],
        backend: BackendName = _E.backend,
    ) -> None:
        self._start(model_name_or_path, locals())
        self._setup()

    def _setup(self) -> None:
        settings = self.settings
        self.resolved = resolve_embedder(self.model_name_or_path, self.path, pooling=settings.pooling_method,
                                         query_max_length=settings.query_max_length,
                                         passage_max_length=settings.passage_max_length)
        self.entry: ModelEntry | None = self.resolved.entry
        settings = settings.model_copy(update={"pooling_method": self.resolved.pooling})
        self.runtime = EmbeddingRuntime(str(self.path), settings, self.target_devices, self.padding_side)
        query_length, passage_length = self.resolved.lengths(self.runtime.max_length)
        self.runtime.settings = settings.model_copy(
            update={"query_max_length": query_length, "passage_max_length": passage_length})
        self.__dict__["settings"] = self.runtime.settings

    def _length(self, explicit: int, name: str) -> int:
        """A per-call length, at most what the model accepts (with the one warning line when it is cut)."""
        value = check_positive_int(explicit, name, allow_none=False) or 0
        return clamp_length(value, self.runtime.max_length, name, given=True)

    @property
    def dimension(self) -> int:
        """Length of the vectors this model returns."""
        dim = self.runtime.dimension
        return dim if self.truncate_dim is None else min(dim, self.truncate_dim)

    @overload
    def encode_queries(  # type: ignore[overload-overlap]  # a str is also a Sequence[str]: the str overload comes first
        self, queries: str, *, output: Literal["list"], **options: Unpack[EncodeOptions]
    ) -> list[float]: ...
    @overload
    def encode_queries(
        self, queries: Sequence[str], *, output: Literal["list"], **options: Unpack[EncodeOptions]
    ) -> list[list[float]]: ...
    @overload
    def encode_queries(
        self, queries: str | Sequence[str], *, output: Literal["numpy"], **options: Unpack[EncodeOptions]
    ) -> np.ndarray: ...
    @overload
    def encode_queries(
        self, queries: str | Sequence[str], *, output: Literal["torch"], **options: Unpack[EncodeOptions]
    ) -> torch.Tensor: ...
    @overload
    def encode_queries(
        self,
        queries: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        instruction: str | None = None,
        instruction_format: str | None = None,
        output: OutputFormat | None = None,
        show_progress_bar: bool | None = None,
    ) -> Embeddings: ...

    def encode_queries(
        self,
        queries: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        instruction: str | None = None,
        instruction_format: str | None = None,
        output: OutputFormat | None = None,
        show_progress_bar: bool | None = None,
    ) -> Embeddings:
        """Encode queries with the query instruction (or ``instruction``) and ``query_max_length``."""
        return self.encode(
            queries,
            batch_size=batch_size,
            max_length=self.query_max_length if max_length is None else max_length,
            convert_to_numpy=convert_to_numpy,
            instruction=instruction if instruction is not None else self.query_instruction_for_retrieval,
            instruction_format=instruction_format or self.query_instruction_format,
            output=output,
            show_progress_bar=show_progress_bar,
        )

    @overload
    def encode_corpus(  # type: ignore[overload-overlap]  # a str is also a Sequence[str]: the str overload comes first
        self, corpus: str, *, output: Literal["list"], **options: Unpack[EncodeOptions]
    ) -> list[float]: ...
    @overload
    def encode_corpus(
        self, corpus: Sequence[str], *, output: Literal["list"], **options: Unpack[EncodeOptions]
    ) -> list[list[float]]: ...
    @overload
    def encode_corpus(
        self, corpus: str | Sequence[str], *, output: Literal["numpy"], **options: Unpack[EncodeOptions]
    ) -> np.ndarray: ...
    @overload
    def encode_corpus(
        self, corpus: str | Sequence[str], *, output: Literal["torch"], **options: Unpack[EncodeOptions]
    ) -> torch.Tensor: ...
    @overload
    def encode_corpus(
        self,
        corpus: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        instruction: str | None = None,
        instruction_format: str | None = None,
        output: OutputFormat | None = None,
        show_progress_bar: bool | None = None,
    ) -> Embeddings: ...

    def encode_corpus(
        self,
        corpus: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        instruction: str | None = None,
        instruction_format: str | None = None,
        output: OutputFormat | None = None,
        show_progress_bar: bool | None = None,
    ) -> Embeddings:
        """Encode passages with the passage instruction (if any) and ``passage_max_length``."""
        return self.encode(
            corpus,
            batch_size=batch_size,
            max_length=self.passage_max_length if max_length is None else max_length,
            convert_to_numpy=convert_to_numpy,
            instruction=instruction if instruction is not None else self.passage_instruction_for_retrieval,
            instruction_format=instruction_format or self.passage_instruction_format,
            output=output,
            show_progress_bar=show_progress_bar,
        )

    @overload
    def encode(  # type: ignore[overload-overlap]  # a str is also a Sequence[str]: the str overload comes first
        self, sentences: str, *, output: Literal["list"], **options: Unpack[EncodeOptions]
    ) -> list[float]: ...
    @overload
    def encode(
        self, sentences: Sequence[str], *, output: Literal["list"], **options: Unpack[EncodeOptions]
    ) -> list[list[float]]: ...
    @overload
    def encode(
        self, sentences: str | Sequence[str], *, output: Literal["numpy"], **options: Unpack[EncodeOptions]
    ) -> np.ndarray: ...
    @overload
    def encode(
        self, sentences: str | Sequence[str], *, output: Literal["torch"], **options: Unpack[EncodeOptions]
    ) -> torch.Tensor: ...
    @overload
    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        instruction: str | None = None,
        instruction_format: str | None = None,
        output: OutputFormat | None = None,
        show_progress_bar: bool | None = None,
    ) -> Embeddings: ...

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        instruction: str | None = None,
        instruction_format: str | None = None,
        output: OutputFormat | None = None,
        show_progress_bar: bool | None = None,
    ) -> Embeddings:
        """Encode texts as they are (plus ``instruction`` when given).

        One str gives one 1-D vector; a list gives a (n, dim) matrix, float32, in input order. The
        result is numpy by default, a torch tensor with ``convert_to_numpy=False`` or
        ``output="torch"``, and Python lists with ``output="list"``.
        """
        texts, single = as_text_list(sentences, "sentences")
        texts = apply_instruction(texts, instruction, instruction_format)
        to_numpy = self.convert_to_numpy if convert_to_numpy is None else convert_to_numpy
        fmt = output or ("numpy" if to_numpy else "torch")
        if fmt not in ("numpy", "torch", "list"):
            raise ValueError(f"output must be 'numpy', 'torch' or 'list', got {output!r}")
        length = self.passage_max_length if max_length is None else self._length(max_length, "max_length")
        plan = _Plan(texts, EmbedOptions(
            max_length=length,
            batch_size=check_positive_int(batch_size, "batch_size") or self.batch_size,
            normalize=self.normalize_embeddings,
            truncate_dim=self.truncate_dim,
            show_progress=self.show_progress_bar if show_progress_bar is None else show_progress_bar,
        ), single, fmt)
        if _PLANNING.get() is self:  # aencode_as asks what would run, to run it itself
            raise _Planned(plan)
        return plan.finish(self.runtime.run(plan.texts, plan.options))

    def encode_as(self, side: Side, texts: str | Sequence[str], **options: Any) -> Embeddings:
        """``encode_queries`` for side "query", ``encode_corpus`` for side "passage"."""
        if side == "query":
            return self.encode_queries(texts, **options)
        if side == "passage":
            return self.encode_corpus(texts, **options)
        raise ValueError(f"side must be 'query' or 'passage', got {side!r}")

    async def aencode_as(self, side: Side, texts: str | Sequence[str], **options: Any) -> Embeddings:
        """:meth:`encode_as` for asyncio callers: the same vectors, gathered with every other caller's, without
        blocking the event loop. A call of up to ``ASYNC_INLINE_TEXTS`` texts waits in the model's queue without a
        thread of its own; a larger one, or one on a subclass that overrides an ``encode`` method, runs
        :meth:`encode_as` in a waiting thread."""
        small = isinstance(texts, str) or (isinstance(texts, Sized) and len(texts) <= ASYNC_INLINE_TEXTS)
        if small and self._plans_its_calls():
            token = _PLANNING.set(self)
            try:
                answer = self.encode_as(side, texts, **options)
            except _Planned as planned:
                plan = planned.plan
            else:
                return answer  # (never: encode() of this class plans when asked)
            finally:
                _PLANNING.reset(token)  # before any await: the context is this call's own until then
            return plan.finish(await self.runtime.arun(plan.texts, plan.options))
        return await run_async(self.encode_as, side, texts, **options)

    def _plans_its_calls(self) -> bool:
        """Whether this class's encode methods are flag_core's own (each ends in :meth:`encode`, which then gives
        its plan): a subclass's override may post-process, cache or encode another way, so it runs as written."""
        return all(getattr(getattr(type(self), name, None), "__module__", __name__) == __name__
                   for name in _PLANNED_METHODS)

    def iter_encode(
        self,
        texts: Iterable[str],
        side: Side = "passage",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        show_progress_bar: bool | None = None,
    ) -> Iterator[np.ndarray]:
        """Vectors of ``texts`` chunk by chunk (float32 arrays, in input order), for collections whose
        vectors do not fit in memory at once; ``texts`` may be any iterable (read once)."""
        if side not in ("query", "passage"):
            raise ValueError(f"side must be 'query' or 'passage', got {side!r}")
        show = self.show_progress_bar if show_progress_bar is None else show_progress_bar
        total = len(texts) if isinstance(texts, Sized) else None
        with progress_bar(total=total, desc="Encoding", unit="text", disable=not show) as bar:

            def encode(chunk: list[str]) -> Any:
                vectors = self.encode_as(side, chunk, output="numpy", show_progress_bar=False)
                bar.update(len(chunk))
                return vectors

            yield from encode_chunks(encode, texts, chunk_size)

    def encode_to_file(
        self,
        texts: Iterable[str],
        path: str | os.PathLike[str],
        side: Side = "passage",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        show_progress_bar: bool | None = None,
    ) -> NpyStream:
        """Encode ``texts`` into a ``.npy`` file chunk by chunk (memory stays at one chunk), written
        atomically; ``np.load(path, mmap_mode="r")`` reads it back. Returns the stream (rows, dim)."""
        return write_npy(path, self.iter_encode(texts, side, chunk_size, show_progress_bar), self.dimension)

    def signature(self) -> dict[str, Any]:
        """The settings that decide what a vector means (an index built with one signature can only be
        searched with vectors of the same signature)."""
        return {
            "model": os.path.basename(self.model_name_or_path.rstrip("/\\")),
            "dimension": self.dimension,
            "pooling_method": self.pooling_method,
            "normalize_embeddings": self.normalize_embeddings,
            "query_instruction": self.query_instruction_for_retrieval,
            "query_instruction_format": self.query_instruction_format,
            "passage_instruction": self.passage_instruction_for_retrieval,
            "passage_instruction_format": self.passage_instruction_format,
            "query_max_length": self.query_max_length,
            "passage_max_length": self.passage_max_length,
            "task": getattr(self, "task", None),
        }

    @classmethod
    def auto_keywords(cls, resolved: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """The keywords ``FlagAutoModel.from_finetuned`` passes to this class: the ``resolved`` ones and the
        caller's other keywords (``given``)."""
        return {**resolved, **given}

    @classmethod
    def adopt(cls, settings: EmbedderSettings) -> EmbedderSettings:
        """``settings`` (with the registry's defaults filled in) as this class takes them."""
        return settings

    def describe(self) -> dict[str, Any]:
        return {"pooling_method": self.pooling_method, "devices": self.target_devices,
                "query_max_length": self.query_max_length, "passage_max_length": self.passage_max_length}


class LLMEmbedder(FlagModel):
    """BAAI/llm-embedder: one model, six tasks, each with its own query and key instruction."""

    none_means: ClassVar[dict[str, Any]] = {**FlagModel.none_means, "task": LLM_EMBEDDER_DEFAULT_TASK,
                                            "pooling_method": ModelKind.LLM_EMBEDDER.own_pooling}
    task_decides: ClassVar[tuple[str, ...]] = ("query_instruction_for_retrieval", "query_instruction_format")
    not_in_constructor: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        normalize_embeddings: bool = _E.normalize_embeddings,
        use_fp16: bool = _E.use_fp16,
        devices: Devices = _E.devices,
        pooling_method: str | None = none_means["pooling_method"],
        task: str = none_means["task"],
        **kwargs: Any,
    ) -> None:
        kwargs.pop("query_instruction_for_retrieval", None)  # the task decides the instruction
        self._start(model_name_or_path, locals())
        self._setup()

    @classmethod
    def auto_keywords(cls, resolved: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        keep = {name: value for name, value in resolved.items() if name not in cls.task_decides}
        return {**keep, **given}

    @classmethod
    def adopt(cls, settings: EmbedderSettings) -> EmbedderSettings:
        return settings.model_copy(update=dict.fromkeys(cls.task_decides))

    def _setup(self) -> None:
        llm_embedder_instruction(self.task, "query")  # an unknown task fails here, not at the first call
        super()._setup()

    def encode_queries(  # type: ignore[override]
        self,
        queries: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        task: str | None = None,
        **kwargs: Any,
    ) -> Embeddings:
        """Encode queries with the query instruction of ``task`` (qa, convsearch, chat, lrlm, icl, tool;
        default: the task given at construction)."""
        return self.encode(
            queries,
            batch_size=batch_size,
            max_length=self.query_max_length if max_length is None else max_length,
            convert_to_numpy=convert_to_numpy,
            instruction=llm_embedder_instruction(task or self.task, "query"),
            **kwargs,
        )

    def encode_keys(
        self,
        keys: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        task: str | None = None,
        **kwargs: Any,
    ) -> Embeddings:
        """Encode keys (documents) with the key instruction of ``task``."""
        return self.encode(
            keys,
            batch_size=batch_size,
            max_length=self.passage_max_length if max_length is None else max_length,
            convert_to_numpy=convert_to_numpy,
            instruction=llm_embedder_instruction(task or self.task, "key"),
            **kwargs,
        )

    def encode_corpus(  # type: ignore[override]
        self,
        corpus: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        task: str | None = None,
        **kwargs: Any,
    ) -> Embeddings:
        """Same as :meth:`encode_keys`."""
        return self.encode_keys(corpus, batch_size, max_length, convert_to_numpy, task=task, **kwargs)


class FlagAutoModel:
    """Builds the right embedder for a model name, with the registry's defaults filled in."""

    def __init__(self) -> None:
        raise OSError("FlagAutoModel is not meant to be instantiated; use FlagAutoModel.from_finetuned(...)")

    @classmethod
    def from_finetuned(
        cls,
        model_name_or_path: str | os.PathLike[str],
        model_class: str | None = None,
        normalize_embeddings: bool = _E.normalize_embeddings,
        use_fp16: bool = _E.use_fp16,
        query_instruction_for_retrieval: str | None = _E.query_instruction_for_retrieval,
        devices: Devices = _E.devices,
        pooling_method: str | None = _E.pooling_method,
        trust_remote_code: bool = _E.trust_remote_code,
        query_instruction_format: str | None = _E.query_instruction_format,
        **kwargs: Any,
    ) -> FlagModel | BGEM3FlagModel:
        """An embedder for ``model_name_or_path``, its settings decided by :func:`~.registry.resolve_embedder` (the
        precedence every entry point shares): known names (hub ids, local or fine-tuned folders named after them)
        get their query instruction from the registry; explicit arguments win; an instruction of "" means none
        (None means the registry's default). A BGE-M3 checkpoint (its folder holds ``colbert_linear.pt`` /
        ``sparse_linear.pt``, or its name is bge-m3, or ``model_class="encoder-only-m3"``) gives a
        :class:`~.m3.BGEM3FlagModel`; ``model_class="encoder-only-base"`` gives its dense output as a FlagModel."""
        path = resolve_model_path(model_name_or_path, kwargs.get("cache_dir"))
        resolved = resolve_embedder(
            str(model_name_or_path), path, model_class=model_class, pooling=pooling_method,
            query_instruction=query_instruction_for_retrieval, query_instruction_format=query_instruction_format,
            passage_instruction=kwargs.pop("passage_instruction_for_retrieval", None), registry_instructions=True,
        )
        chosen = _AUTO_CLASSES.get(resolved.kind, FlagModel)
        keywords = {
            "normalize_embeddings": normalize_embeddings,
            "use_fp16": use_fp16,
            "query_instruction_for_retrieval": resolved.query_instruction,
            "query_instruction_format": resolved.query_instruction_format,
            "passage_instruction_for_retrieval": resolved.passage_instruction,
            "devices": devices,
            "pooling_method": resolved.pooling,
            "trust_remote_code": bool(trust_remote_code),
        }
        return chosen(model_name_or_path, **chosen.auto_keywords(keywords, kwargs))


_AUTO_CLASSES: dict[ModelKind, type[FlagModel | BGEM3FlagModel]] = {
    ModelKind.M3: BGEM3FlagModel,
    ModelKind.LLM_EMBEDDER: LLMEmbedder,
}


def dense_embedder(model_name_or_path: str | os.PathLike[str], settings: EmbedderSettings | None = None,
                   **keywords: Any) -> FlagModel:
    """The embedder for ``model_name_or_path`` where one dense vector per text is wanted (the framework embeddings,
    STS), from a settings object (None in it: the registry's instruction, the model's pooling and lengths) or from
    ``FlagAutoModel.from_finetuned``'s keywords: a BGE-M3 checkpoint gives its dense output (CLS pooled, the
    vectors BGEM3FlagModel gives) as a :class:`FlagModel`, LLM-Embedder an :class:`LLMEmbedder`."""
    if settings is None:  # FlagAutoModel.from_finetuned's keywords (any it takes), read by it
        if "model_class" not in keywords:
            path = resolve_model_path(model_name_or_path, keywords.get("cache_dir"))
            if checkpoint_kind(os.fspath(model_name_or_path), path) is ModelKind.M3:
                keywords = {"model_class": "encoder-only-base", **keywords}
        model = FlagAutoModel.from_finetuned(model_name_or_path, **keywords)
        if not isinstance(model, FlagModel):
            raise TypeError(f"{model_name_or_path} with {keywords} is not a dense embedder")
        return model
    if keywords:
        raise TypeError(f"give a settings object or keywords, not both ({sorted(keywords)})")
    model_class = None
    path = resolve_model_path(model_name_or_path, settings.cache_dir)
    name = os.fspath(model_name_or_path)
    if model_class is None and checkpoint_kind(name, path) is ModelKind.M3:
        model_class = "encoder-only-base"
    resolved = resolve_embedder(
        name, path, model_class=model_class, pooling=settings.pooling_method,
        query_instruction=settings.query_instruction_for_retrieval,
        query_instruction_format=settings.query_instruction_format,
        passage_instruction=settings.passage_instruction_for_retrieval, registry_instructions=True,
    )
    chosen = _AUTO_CLASSES.get(resolved.kind, FlagModel)
    if not issubclass(chosen, FlagModel):
        raise TypeError(f"{model_name_or_path} is not a dense embedder (it is {resolved.kind})")
    filled = {"query_instruction_for_retrieval": resolved.query_instruction,
              "query_instruction_format": resolved.query_instruction_format,
              "passage_instruction_for_retrieval": resolved.passage_instruction, "pooling_method": resolved.pooling}
    return chosen.from_settings(model_name_or_path, chosen.adopt(settings.model_copy(update=filled)))
