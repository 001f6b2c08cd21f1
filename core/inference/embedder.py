"""Drop-in replacements for FlagEmbedding's embedders: FlagModel, LLMEmbedder and FlagAutoModel."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Any, Literal, TypedDict, overload

import numpy as np
import torch
from typing_extensions import Unpack

from .devices import resolve_devices
from .inputs import as_text_list, check_positive_int
from .instructions import apply_instruction, llm_embedder_instruction
from .kinds import ModelKind
from .m3 import BGEM3FlagModel
from .model_files import resolve_model_path
from .progress import progress_bar
from .registry import ModelEntry, checkpoint_kind, clamp_length, resolve_embedder
from .runtime import EmbedderSettings, EmbeddingRuntime
from .streaming import DEFAULT_CHUNK_SIZE, NpyStream, encode_chunks, write_npy

OutputFormat = Literal["numpy", "torch", "list"]
Side = Literal["query", "passage"]
Embeddings = np.ndarray | torch.Tensor | list[float] | list[list[float]]


class EncodeOptions(TypedDict, total=False):
    """The keyword options of ``encode``, ``encode_queries`` and ``encode_corpus`` besides ``output``."""

    batch_size: int | None
    max_length: int | None
    convert_to_numpy: bool | None
    instruction: str | None
    instruction_format: str | None
    show_progress_bar: bool | None


class FlagModel:
    """An embedding model with FlagEmbedding's ``FlagModel`` interface, on flagstack's runtime.

    Settings left as None are decided by :func:`~.registry.resolve_embedder` (``self.resolved``), as for every
    other entry point: a BGE-M3 checkpoint (by its head files or its name) is CLS pooled with 512-token
    lengths; other folders take their sentence-transformers files (pooling, max_seq_length), then the
    registry of known models, then FlagEmbedding's defaults (cls pooling, 512 tokens). Instructions are used
    only when given, as in FlagEmbedding (``FlagAutoModel`` fills them from the registry). fp16 is used on
    accelerators only; bf16 when asked, also on CPUs.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        normalize_embeddings: bool = True,
        use_fp16: bool = True,
        query_instruction_for_retrieval: str | None = None,
        query_instruction_format: str = "{}{}",
        devices: str | int | Sequence[str | int] | None = None,
        pooling_method: str | None = None,
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        batch_size: int = 256,
        query_max_length: int | None = None,
        passage_max_length: int | None = None,
        convert_to_numpy: bool = True,
        truncate_dim: int | None = None,
        passage_instruction_for_retrieval: str | None = None,
        passage_instruction_format: str = "{}{}",
        use_bf16: bool = False,
        max_tokens_per_batch: int | None = None,
        show_progress_bar: bool = False,
        padding_side: Literal["left", "right"] | None = None,
        backend: Literal["torch", "onnx", "openvino"] = "torch",
    ) -> None:
        path = resolve_model_path(model_name_or_path, cache_dir)
        self.model_name_or_path = str(model_name_or_path)
        self.resolved = resolve_embedder(self.model_name_or_path, path, pooling=pooling_method,
                                         query_max_length=query_max_length, passage_max_length=passage_max_length)
        self.entry: ModelEntry | None = self.resolved.entry
        self.pooling_method = self.resolved.pooling
        self.normalize_embeddings = bool(normalize_embeddings)
        self.use_fp16 = bool(use_fp16)
        self.use_bf16 = bool(use_bf16)
        self.query_instruction_for_retrieval = query_instruction_for_retrieval
        self.query_instruction_format = query_instruction_format
        self.passage_instruction_for_retrieval = passage_instruction_for_retrieval
        self.passage_instruction_format = passage_instruction_format
        self.batch_size = check_positive_int(batch_size, "batch_size", allow_none=False) or 256
        self.convert_to_numpy = bool(convert_to_numpy)
        self.truncate_dim = check_positive_int(truncate_dim, "truncate_dim")
        self.show_progress_bar = bool(show_progress_bar)
        self.target_devices = resolve_devices(devices)
        check_positive_int(max_tokens_per_batch, "max_tokens_per_batch")
        self.runtime = EmbeddingRuntime(
            EmbedderSettings(
                path=str(path),
                pooling=self.pooling_method,
                use_fp16=self.use_fp16,
                use_bf16=self.use_bf16,
                trust_remote_code=bool(trust_remote_code),
                padding_side=padding_side,
                max_tokens_per_batch=max_tokens_per_batch,
                backend=backend,
            ),
            self.target_devices,
        )
        self.query_max_length, self.passage_max_length = self.resolved.lengths(self.runtime.max_length)

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
        vectors = self.runtime.embed(
            texts,
            max_length=length,
            batch_size=check_positive_int(batch_size, "batch_size") or self.batch_size,
            normalize=self.normalize_embeddings,
            truncate_dim=self.truncate_dim,
            show_progress=self.show_progress_bar if show_progress_bar is None else show_progress_bar,
        )
        if single:
            vectors = vectors[0]
        if fmt == "torch":
            return vectors
        array = vectors.numpy()
        return array.tolist() if fmt == "list" else array

    def encode_as(self, side: Side, texts: str | Sequence[str], **options: Any) -> Embeddings:
        """``encode_queries`` for side "query", ``encode_corpus`` for side "passage"."""
        if side == "query":
            return self.encode_queries(texts, **options)
        if side == "passage":
            return self.encode_corpus(texts, **options)
        raise ValueError(f"side must be 'query' or 'passage', got {side!r}")

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

    def stop_self_pool(self) -> None:
        """Stop worker processes (several devices); FlagEmbedding's name for it."""
        self.runtime.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.model_name_or_path!r}, pooling_method={self.pooling_method!r}, "
            f"devices={self.target_devices}, query_max_length={self.query_max_length}, "
            f"passage_max_length={self.passage_max_length})"
        )


class LLMEmbedder(FlagModel):
    """BAAI/llm-embedder: one model, six tasks, each with its own query and key instruction."""

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        normalize_embeddings: bool = True,
        use_fp16: bool = True,
        devices: str | int | Sequence[str | int] | None = None,
        pooling_method: str | None = "cls",
        task: str = "qa",
        **kwargs: Any,
    ) -> None:
        kwargs.pop("query_instruction_for_retrieval", None)  # the task decides the instruction
        llm_embedder_instruction(task, "query")  # an unknown task fails here, not at the first call
        self.task = task
        super().__init__(
            model_name_or_path,
            normalize_embeddings=normalize_embeddings,
            use_fp16=use_fp16,
            devices=devices,
            pooling_method=pooling_method,
            **kwargs,
        )

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
        normalize_embeddings: bool = True,
        use_fp16: bool = True,
        query_instruction_for_retrieval: str | None = None,
        devices: str | int | Sequence[str | int] | None = None,
        pooling_method: str | None = None,
        trust_remote_code: bool = False,
        query_instruction_format: str | None = None,
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
        if resolved.kind is ModelKind.M3:
            return BGEM3FlagModel(
                model_name_or_path,
                normalize_embeddings=normalize_embeddings,
                use_fp16=use_fp16,
                query_instruction_for_retrieval=resolved.query_instruction,
                query_instruction_format=resolved.query_instruction_format,
                passage_instruction_for_retrieval=resolved.passage_instruction,
                devices=devices,
                pooling_method=resolved.pooling,
                trust_remote_code=bool(trust_remote_code),
                **{key: value for key, value in kwargs.items() if value is not None},  # None: M3's own defaults
            )
        if resolved.kind is ModelKind.LLM_EMBEDDER:
            return LLMEmbedder(
                model_name_or_path,
                normalize_embeddings=normalize_embeddings,
                use_fp16=use_fp16,
                devices=devices,
                pooling_method=resolved.pooling,
                trust_remote_code=bool(trust_remote_code),
                passage_instruction_for_retrieval=resolved.passage_instruction,
                **kwargs,
            )
        return FlagModel(
            model_name_or_path,
            normalize_embeddings=normalize_embeddings,
            use_fp16=use_fp16,
            query_instruction_for_retrieval=resolved.query_instruction,
            query_instruction_format=resolved.query_instruction_format,
            passage_instruction_for_retrieval=resolved.passage_instruction,
            devices=devices,
            pooling_method=resolved.pooling,
            trust_remote_code=bool(trust_remote_code),
            **kwargs,
        )


def dense_embedder(model_name_or_path: str | os.PathLike[str], **settings: Any) -> FlagModel:
    """``FlagAutoModel.from_finetuned(model_name_or_path, **settings)`` where one dense vector per text is wanted
    (the framework embeddings, STS): a BGE-M3 checkpoint gives its dense output (CLS pooled, the vectors
    BGEM3FlagModel gives) as a :class:`FlagModel`."""
    if "model_class" not in settings:
        path = resolve_model_path(model_name_or_path, settings.get("cache_dir"))
        if checkpoint_kind(os.fspath(model_name_or_path), path) is ModelKind.M3:
            settings = {"model_class": "encoder-only-base", **settings}
    model = FlagAutoModel.from_finetuned(model_name_or_path, **settings)
    if not isinstance(model, FlagModel):
        raise TypeError(f"{model_name_or_path} with {settings} is not a dense embedder")
    return model
