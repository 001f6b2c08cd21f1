"""The settings of an embedder and of a reranker, described once: name, type, default and help text.

LangChain's and LlamaIndex's classes inherit these fields and the command line builds its options from
them, so a setting has one name, default and description everywhere. flag_core's constructors
(``FlagModel``, ``FlagAutoModel.from_finetuned``, ``FlagReranker``, ``FlagAutoReranker.from_finetuned``)
take the same names with the same defaults; ``tests/flag_core/test_settings.py`` holds them to it.

A setting left as None is not passed on: flag_core decides (the registry's instruction for the model, the
model's own pooling and length, every accelerator, the reranker class's own instructions). Embedder settings
are decided by one function for every entry point, :func:`flag_core.inference.registry.resolve_embedder`.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, Field

from .inference.runtime import CPU_TOKEN_BUDGET

Backend = Literal["torch", "onnx", "openvino"]
Pooling = Literal["cls", "mean", "last_token"]
Devices = str | list[str] | None

_BACKEND = ("torch, onnx (ONNX Runtime) or openvino (OpenVINO): the CPU backends run encoders and cross-encoders, "
            "fp32 or a flagstack quantize folder (needs the onnx / openvino extra)")
_DEVICES = "cpu, cuda, cuda:1, mps, or a list (one worker process per device); None: every accelerator, else the CPU"
_BUDGET = f"most tokens in one padded batch (None: {CPU_TOKEN_BUDGET} on a CPU, more on accelerators)"


class RebuildsModel:
    """For adapter classes that hold a model in a private attribute: copies and pickles carry the settings, not
    the model. ``copy.deepcopy`` and unpickling build the model again through flag_core's shared instances
    (``build_embedder`` / ``build_reranker``), so a copy holds the same weights without copying them."""

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


def given(settings: BaseModel, fields: type[BaseModel], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The values of ``fields``' settings held by ``settings`` (an adapter object) that are not None (None
    means "not given": flag_core decides)."""
    return {
        name: value
        for name in fields.model_fields
        if name not in exclude and (value := getattr(settings, name)) is not None
    }


class EmbedderFields(BaseModel):
    """Embedding settings (flag_core.FlagModel's names). Instructions left as None take the registry's
    default for the model; "" turns an instruction off."""

    query_instruction_for_retrieval: str | None = Field(
        default=None, description="instruction put before each query (None: the registry's for the model; '': none)"
    )
    query_instruction_format: str | None = Field(
        default=None, description="how instruction and query join, e.g. '{}{}' (None: the registry's, else '{}{}')"
    )
    passage_instruction_for_retrieval: str | None = Field(
        default=None, description="instruction put before each passage (None: the registry's, usually none)"
    )
    passage_instruction_format: str = Field(default="{}{}", description="how instruction and passage join")
    task: str | None = Field(default=None, description="LLM-Embedder task: qa, convsearch, chat, lrlm, icl or tool")
    pooling_method: Pooling | None = Field(
        default=None, description="cls, mean or last_token (None: cls for BGE-M3 and LLM-Embedder, else the model's "
        "sentence-transformers config, the registry's, else cls)"
    )
    normalize_embeddings: bool = Field(default=True, description="unit-length vectors")
    query_max_length: int | None = Field(
        default=None, gt=0, description="longest query in tokens (None: 512 for BGE-M3, else the model's "
        "max_seq_length, else 512; at most what the model accepts)"
    )
    passage_max_length: int | None = Field(
        default=None, gt=0, description="longest passage in tokens (None: 512 for BGE-M3, else the model's "
        "max_seq_length, else 512; at most what the model accepts)"
    )
    batch_size: int = Field(default=256, gt=0, description="most texts in one forward pass")
    max_tokens_per_batch: int | None = Field(default=None, gt=0, description=_BUDGET)
    devices: Devices = Field(default=None, description=_DEVICES)
    use_fp16: bool = Field(default=True, description="fp16 on accelerators (ignored on CPUs)")
    use_bf16: bool = Field(default=False, description="bf16 (fast on CPUs with AVX512-BF16/AMX, slow without)")
    truncate_dim: int | None = Field(default=None, gt=0, description="keep the first n dimensions (Matryoshka)")
    backend: Backend = Field(default="torch", description=_BACKEND)
    trust_remote_code: bool = Field(default=False, description="run code shipped with a hub model")
    cache_dir: str | None = Field(default=None, description="where hub downloads are kept")
    show_progress_bar: bool = Field(default=False, description="show a progress bar while encoding")

    def embedder_settings(self) -> dict[str, Any]:
        """The settings given, as keyword arguments for :func:`flag_core.build_embedder`."""
        return given(self, EmbedderFields)


class RerankerFields(BaseModel):
    """Reranking settings (flag_core.FlagReranker's names)."""

    normalize: bool = Field(default=False, description="map scores through a sigmoid to (0, 1)")
    model_class: str | None = Field(
        default=None, description="encoder, llm or layerwise (None: the registry's, else read from the config)"
    )
    use_fp16: bool = Field(default=False, description="fp16 on accelerators (ignored on CPUs)")
    use_bf16: bool = Field(default=False, description="bf16 (fast on CPUs with AVX512-BF16/AMX, slow without)")
    batch_size: int = Field(default=128, gt=0, description="most pairs in one forward pass")
    max_length: int = Field(default=512, gt=0, description="longest (query, passage) pair in tokens")
    query_max_length: int | None = Field(
        default=None, gt=0, description="longest query in tokens (None: 3/4 of max_length)"
    )
    max_tokens_per_batch: int | None = Field(default=None, gt=0, description=_BUDGET)
    devices: Devices = Field(default=None, description=_DEVICES)
    prompt: str | None = Field(
        default=None, description="LLM rerankers: the prompt after query and passage (None: FlagEmbedding's)"
    )
    query_instruction_for_rerank: str | None = Field(
        default=None, description="instruction put before each query (None: the class's, 'A: ' for LLM rerankers)"
    )
    query_instruction_format: str = Field(default="{}{}", description="how instruction and query join")
    passage_instruction_for_rerank: str | None = Field(
        default=None, description="instruction put before each passage (None: the class's, 'B: ' for LLM rerankers)"
    )
    passage_instruction_format: str = Field(default="{}{}", description="how instruction and passage join")
    backend: Backend = Field(default="torch", description=_BACKEND)
    trust_remote_code: bool = Field(default=False, description="run code shipped with a hub model")
    cache_dir: str | None = Field(default=None, description="where hub downloads are kept")
    show_progress_bar: bool = Field(default=False, description="show a progress bar while scoring")

    def reranker_settings(self) -> dict[str, Any]:
        """The settings given, less ``normalize`` (a per-call option, so one loaded reranker serves both),
        as keyword arguments for :func:`flag_core.build_reranker`."""
        return given(self, RerankerFields, exclude=("normalize",))


class M3Fields(BaseModel):
    """BGE-M3 settings (flag_core.BGEM3FlagModel's names), for the sparse embeddings and hybrid retrievers."""

    query_instruction_for_retrieval: str | None = Field(
        default=None, description="instruction put before each query (BGE-M3 needs none)"
    )
    query_instruction_format: str = Field(default="{}{}", description="how instruction and query join")
    passage_instruction_for_retrieval: str | None = Field(
        default=None, description="instruction put before each passage (BGE-M3 needs none)"
    )
    passage_instruction_format: str = Field(default="{}{}", description="how instruction and passage join")
    normalize_embeddings: bool = Field(default=True, description="unit-length dense and ColBERT vectors")
    query_max_length: int | None = Field(
        default=None, gt=0, description="longest query in tokens (None: 512; at most what the model accepts)"
    )
    passage_max_length: int | None = Field(
        default=None, gt=0, description="longest passage in tokens (None: 512; at most what the model accepts)"
    )
    batch_size: int = Field(default=256, gt=0, description="most texts in one forward pass")
    max_tokens_per_batch: int | None = Field(default=None, gt=0, description=_BUDGET)
    devices: Devices = Field(default=None, description=_DEVICES)
    use_fp16: bool = Field(default=True, description="fp16 on accelerators (ignored on CPUs)")
    use_bf16: bool = Field(default=False, description="bf16 (fast on CPUs with AVX512-BF16/AMX, slow without)")
    truncate_dim: int | None = Field(default=None, gt=0, description="keep the first n dense dimensions")
    colbert_dim: int = Field(default=-1, description="ColBERT vector size (-1: the checkpoint's)")
    backend: Backend = Field(default="torch", description=_BACKEND)
    trust_remote_code: bool = Field(default=False, description="run code shipped with a hub model")
    cache_dir: str | None = Field(default=None, description="where hub downloads are kept")
    show_progress_bar: bool = Field(default=False, description="show a progress bar while encoding")

    def m3_settings(self) -> dict[str, Any]:
        """The settings given, as keyword arguments for :func:`flag_core.build_m3`."""
        return given(self, M3Fields)
