"""The settings of each model kind, declared once: name, type, default, bound and description.

One immutable object per model kind (:class:`EmbedderSettings`, :class:`RerankerSettings`, :class:`M3Settings`,
on the base :class:`ModelSettings` for what they share), validated when it is made and then carried whole: the
FlagEmbedding-compatible constructors build it from their keywords, the shared-instance cache keys on it, the
runtime, its worker processes and the backends read it, the command line's options and the LangChain / LlamaIndex
fields are made from its fields (:mod:`flag_core.settings`), and saved indexes record it.

A setting left as None is decided by flag_core: the registry's instruction for the model, the model's own
pooling and length (:func:`~.registry.resolve_embedder`), every accelerator, the reranker class's instructions.
"""

from __future__ import annotations

import numbers
import os
import re
import types
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo

from .backends import BACKENDS
from .devices import resolve_devices
from .inputs import check_positive_int
from .instructions import DEFAULT_INSTRUCTION_FORMAT
from .kinds import DEFAULT_MAX_LENGTH, POOLING_METHODS, check_pooling

CPU_TOKEN_BUDGET = 2048  # tokens in one padded batch on a CPU (cache-friendly)

Devices = str | int | Sequence[str | int] | None
# the backend names as a static type, for the FlagEmbedding-compatible signatures (the names themselves are
# backends.BACKENDS, read from its registry; tests/flag_core/test_settings.py holds the two equal)
BackendName = Literal["torch", "onnx", "openvino"]

SettingsT = TypeVar("SettingsT", bound="ModelSettings")


def kind_default(owner: type[BaseModel], name: str, default: Any) -> Any:
    """``owner``'s field ``name`` (its type bound and description) with another default, for a model kind whose
    default differs (an embedder's fp16 is on, a reranker's off)."""
    info: FieldInfo = owner.model_fields[name]
    bounds = {key: getattr(meta, key) for meta in info.metadata for key in ("gt", "ge") if hasattr(meta, key)}
    return Field(default=default, description=info.description, gt=bounds.get("gt"), ge=bounds.get("ge"),
                 json_schema_extra=info.json_schema_extra)


def setting_defaults(cls: type[BaseModel]) -> Any:
    """Each setting's declared default as an attribute (``setting_defaults(EmbedderSettings).batch_size``), read
    from the fields when called: the FlagEmbedding-compatible constructors spell their parameters out (for type
    checkers and ``inspect.signature``) and take each default from here when their module is imported, so a default
    is written once, in its field. Typed Any: each parameter's own annotation says its type."""
    return types.SimpleNamespace(**{name: info.get_default(call_default_factory=True)
                                    for name, info in cls.model_fields.items()})


def _flag(value: Any, name: str) -> bool:
    """A yes/no setting: a bool (None, 0 and 1 read as bool() reads them, as FlagEmbedding's constructors did);
    anything else, a str above all ("no" would read as True), is a TypeError naming it."""
    if value is None or isinstance(value, bool | np.bool_) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} ({value!r:.60})")


# marks a setting that decides how the model is loaded: fixed for a loaded model (assigning it is an error)
LOAD: dict[str, Any] = {"load": True}


def load_settings(cls: type[BaseModel]) -> frozenset[str]:
    """The settings of ``cls`` that decide how the model is loaded (marked with :data:`LOAD`)."""
    return frozenset(name for name, info in cls.model_fields.items()
                     if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("load"))


class ModelSettings(BaseModel):
    """What every model kind takes: where it runs, in which precision, with which backend, in what batches."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    kind_name: ClassVar[str] = "model"

    devices: Devices = Field(
        default=None,
        description="cpu, cuda, cuda:1, mps, or a list (one worker process per device); None: every accelerator, "
        "else the CPU", json_schema_extra=LOAD,
    )
    use_fp16: bool = Field(default=True, description="fp16 on accelerators (ignored on CPUs)", json_schema_extra=LOAD)
    use_bf16: bool = Field(default=False, description="bf16 (fast on CPUs with AVX512-BF16/AMX, slow without)",
                           json_schema_extra=LOAD)
    batch_size: int = Field(default=256, gt=0, description="most inputs in one forward pass")
    max_tokens_per_batch: int | None = Field(
        default=None, gt=0,
        description=f"most tokens in one padded batch (None: {CPU_TOKEN_BUDGET} on a CPU, more on accelerators)",
        json_schema_extra=LOAD,
    )
    backend: str = Field(
        default="torch",
        description="torch, onnx (ONNX Runtime) or openvino (OpenVINO): the CPU backends run encoders and "
        "cross-encoders, fp32 or a flagstack quantize folder (needs the onnx / openvino extra)",
        json_schema_extra={"choices": list(BACKENDS), **LOAD},
    )
    trust_remote_code: bool = Field(default=False, description="run code shipped with a hub model",
                                    json_schema_extra=LOAD)
    cache_dir: str | None = Field(default=None, description="where hub downloads are kept", json_schema_extra=LOAD)
    show_progress_bar: bool = Field(default=False, description="show a progress bar while running")
    gather_window_ms: float = Field(
        default=0.0, ge=0, le=10_000,
        description="how long a call waits for other callers' inputs to share its batches (0: calls that arrive "
        "while the model is busy are gathered, a lone call runs at once)",
    )
    gather_max_inputs: int = Field(default=4096, gt=0,
                                   description="most inputs (of all callers) gathered into one model call")
    queue_limit: int | None = Field(
        default=None, gt=0,
        description="most calls waiting for the model; past it a call fails at once with QueueFull (None: no limit)",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _value(cls, value: Any, info: Any) -> Any:
        # the one check of each value's kind, with the messages flag_core's constructors always gave
        name = info.field_name
        field = cls.model_fields[name]
        if field.annotation is bool:
            return _flag(value, name)
        if any(getattr(meta, "gt", None) == 0 for meta in field.metadata):  # a count
            if isinstance(value, numbers.Integral | np.bool_) or (value is None and field.default is not None):
                return check_positive_int(value, name, allow_none=False)
            return value  # None where allowed; "8" or 8.0 from a config: pydantic reads them as ints, or refuses
        if name == "cache_dir" and isinstance(value, os.PathLike):
            return os.fspath(value)
        if name == "devices" and not isinstance(value, str | int | list | type(None)):
            value = list(value) if isinstance(value, Iterable) else value  # a tuple or a set of devices
        if name == "devices":
            resolve_devices(value)  # names a bad device here, once
        return value

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r}; use one of {BACKENDS}")
        return value

    @classmethod
    def checked(cls: type[SettingsT], values: dict[str, Any]) -> SettingsT:
        """``cls(**values)``, a bad value being a ValueError (or TypeError) that names the setting in one line, not
        pydantic's report (a constructor's or the command line's error)."""
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc']))}: {str(error['msg']).removeprefix('Value error, ')}"
                for error in exc.errors())
            raise ValueError(problems) from None

    @classmethod
    def check_setting(cls, name: str, value: Any, called: str | None = None) -> Any:
        """``value`` read and checked as setting ``name`` is (its type, bound and validators: the one validation of
        that setting), for an argument elsewhere that holds this setting under its own name ``called`` (a training
        argument); the error starts with ``called``."""
        try:
            return getattr(cls.checked({name: value}), name)
        except (TypeError, ValueError) as exc:
            if called is None or called == name:
                raise
            raise type(exc)(re.sub(rf"^{re.escape(name)}\b", called, str(exc))) from None

    def key(self) -> str:
        """A stable text of every setting (the shared-instance cache's key)."""
        return f"{type(self).__module__}.{type(self).__qualname__}:{self.model_dump_json()}"


class TextSettings(ModelSettings):
    """What the embedders (dense and BGE-M3) share: instructions, lengths, normalisation, truncation."""

    query_instruction_for_retrieval: str | None = Field(
        default=None, description="instruction put before each query (None: the registry's for the model; '': none)"
    )
    query_instruction_format: str | None = Field(
        default=DEFAULT_INSTRUCTION_FORMAT, description="how instruction and query join, e.g. "
        f"{DEFAULT_INSTRUCTION_FORMAT!r} (None: the registry's, else {DEFAULT_INSTRUCTION_FORMAT!r})"
    )
    passage_instruction_for_retrieval: str | None = Field(
        default=None, description="instruction put before each passage (None: the registry's, usually none)"
    )
    passage_instruction_format: str | None = Field(default=DEFAULT_INSTRUCTION_FORMAT,
                                                   description="how instruction and passage join")
    normalize_embeddings: bool = Field(default=True, description="unit-length vectors")
    query_max_length: int | None = Field(
        default=None, gt=0, description=f"longest query in tokens (None: {DEFAULT_MAX_LENGTH} for BGE-M3, else the "
        f"model's max_seq_length, else {DEFAULT_MAX_LENGTH}; at most what the model accepts)"
    )
    passage_max_length: int | None = Field(
        default=None, gt=0, description=f"longest passage in tokens (None: {DEFAULT_MAX_LENGTH} for BGE-M3, else the "
        f"model's max_seq_length, else {DEFAULT_MAX_LENGTH}; at most what the model accepts)"
    )
    truncate_dim: int | None = Field(default=None, gt=0, description="keep the first n dimensions (Matryoshka)")


class EmbedderSettings(TextSettings):
    """A dense embedder's settings (FlagModel's names)."""

    kind_name: ClassVar[str] = "embedder"

    query_instruction_format: str | None = kind_default(TextSettings, "query_instruction_format", None)
    task: str | None = Field(default=None, description="LLM-Embedder task: qa, convsearch, chat, lrlm, icl or tool")
    pooling_method: str | None = Field(
        default=None, description="cls, mean or last_token (None: cls for BGE-M3 and LLM-Embedder, else the model's "
        "sentence-transformers config, the registry's, else cls)",
        json_schema_extra={"choices": list(POOLING_METHODS), **LOAD},
    )

    @field_validator("pooling_method")
    @classmethod
    def _pooling(cls, value: str | None) -> str | None:
        return None if value is None else check_pooling(value)


class M3Settings(TextSettings):
    """BGE-M3's settings (BGEM3FlagModel's names): dense, sparse and ColBERT outputs of one encoder pass."""

    kind_name: ClassVar[str] = "m3"

    colbert_dim: int = Field(default=-1, description="ColBERT vector size (-1: the checkpoint's)",
                             json_schema_extra=LOAD)


class RerankerSettings(ModelSettings):
    """A reranker's settings (FlagReranker's names)."""

    kind_name: ClassVar[str] = "reranker"

    use_fp16: bool = kind_default(ModelSettings, "use_fp16", False)
    batch_size: int = kind_default(ModelSettings, "batch_size", 128)
    normalize: bool = Field(default=False, description="map scores through a sigmoid to (0, 1)")
    model_class: str | None = Field(
        default=None, description="encoder, llm or layerwise (None: the registry's, else read from the config)",
        json_schema_extra=LOAD,
    )
    max_length: int = Field(default=DEFAULT_MAX_LENGTH, gt=0, description="longest (query, passage) pair in tokens")
    query_max_length: int | None = Field(
        default=None, gt=0, description="longest query in tokens (None: 3/4 of max_length)"
    )
    prompt: str | None = Field(
        default=None, description="LLM rerankers: the prompt after query and passage (None: FlagEmbedding's)"
    )
    query_instruction_for_rerank: str | None = Field(
        default=None, description="instruction put before each query (None: the class's, 'A: ' for LLM rerankers)"
    )
    query_instruction_format: str | None = Field(default=DEFAULT_INSTRUCTION_FORMAT,
                                                 description="how instruction and query join")
    passage_instruction_for_rerank: str | None = Field(
        default=None, description="instruction put before each passage (None: the class's, 'B: ' for LLM rerankers)"
    )
    passage_instruction_format: str | None = Field(default=DEFAULT_INSTRUCTION_FORMAT,
                                                   description="how instruction and passage join")


def settings_class(owner: type) -> type[ModelSettings]:
    """The immutable settings class behind ``owner`` (an adapter class or a fields view): the first class in its
    method resolution order that is a frozen :class:`ModelSettings`."""
    for cls in owner.__mro__:
        if isinstance(cls, type) and issubclass(cls, ModelSettings) and cls.__dict__.get("model_config", {}).get(
                "frozen") is True:
            return cls
    raise TypeError(f"{owner.__name__} holds no flag_core settings")
