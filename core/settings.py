"""The settings of an embedder and of a reranker, as pydantic fields, shared by every adapter.

LangChain's and LlamaIndex's classes inherit these fields, so a setting has one name everywhere:
in flag_core's constructors, in ``langchain_flag`` and in ``llamaindex_flag``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field


class FromMerge:
    """``from_merge``: build an adapter object from an LM-Cocktail merge, without handling files."""

    merge_type: ClassVar[str] = "encoder"
    model_field: ClassVar[str] = "model_name"

    @classmethod
    def from_merge(
        cls,
        models: list[str],
        weights: list[float] | None = None,
        example_data: Any = None,
        output_path: str | None = None,
        **settings: Any,
    ) -> Any:
        """This class over a merge of ``models``, by ``weights`` or by a few ``example_data`` rows
        (query/pos/neg); the merged folder is cached unless ``output_path`` is given."""
        from .merge import merged_model

        path = merged_model(models, cls.merge_type, weights, example_data, output_path)
        return cls(**{cls.model_field: path}, **settings)


class EmbedderFields(FromMerge, BaseModel):
    """Embedding settings (flag_core.FlagModel's names). Instructions left as None take the registry's
    default for the model; "" turns an instruction off."""

    query_instruction_for_retrieval: str | None = Field(default=None, description="put before each query")
    query_instruction_format: str | None = Field(default=None, description='how instruction and query join: "{}{}"')
    passage_instruction_for_retrieval: str | None = Field(default=None, description="put before each passage")
    passage_instruction_format: str = "{}{}"
    task: str | None = Field(default=None, description="LLM-Embedder task: qa, convsearch, chat, lrlm, icl, tool")
    pooling_method: str | None = Field(default=None, description="cls, mean or last_token (default: the model's)")
    normalize_embeddings: bool = True
    query_max_length: int | None = Field(default=None, gt=0)
    passage_max_length: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=256, gt=0, description="most texts per forward pass")
    max_tokens_per_batch: int | None = Field(default=None, gt=0, description="token budget per forward pass")
    devices: str | list[str] | None = Field(default=None, description="cpu, cuda:0, [cuda:0, cuda:1], mps")
    use_fp16: bool = Field(default=True, description="fp16 on accelerators (ignored on CPUs)")
    use_bf16: bool = False
    truncate_dim: int | None = Field(default=None, gt=0)
    backend: Literal["torch", "onnx"] = Field(default="torch", description="onnx: ONNX Runtime, fp32 CPU (opt-in)")
    trust_remote_code: bool = False
    cache_dir: str | None = None
    show_progress_bar: bool = False

    def embedder_settings(self) -> dict[str, Any]:
        """These settings as keyword arguments for :func:`flag_core.build_embedder`."""
        settings = {name: getattr(self, name) for name in EmbedderFields.model_fields}
        if settings["task"] is None:
            del settings["task"]
        return settings


class RerankerFields(FromMerge, BaseModel):
    """Reranking settings (flag_core.FlagReranker's names)."""

    merge_type: ClassVar[str] = "reranker"

    normalize: bool = Field(default=False, description="map scores through a sigmoid to (0, 1)")
    model_class: str | None = Field(default=None, description="encoder, llm or layerwise (default: detected)")
    use_fp16: bool = False
    use_bf16: bool = False
    batch_size: int = Field(default=128, gt=0)
    max_length: int = Field(default=512, gt=0)
    query_max_length: int | None = Field(default=None, gt=0)
    max_tokens_per_batch: int | None = Field(default=None, gt=0)
    devices: str | list[str] | None = None
    query_instruction_for_rerank: str | None = None
    query_instruction_format: str | None = None
    passage_instruction_for_rerank: str | None = None
    passage_instruction_format: str | None = None
    backend: Literal["torch", "onnx"] = Field(default="torch", description="onnx: ONNX Runtime, fp32 CPU (opt-in)")
    trust_remote_code: bool = False
    cache_dir: str | None = None
    show_progress_bar: bool = False

    def reranker_settings(self) -> dict[str, Any]:
        """These settings (less ``normalize``, a per-call option) for :func:`flag_core.build_reranker`."""
        return {name: getattr(self, name) for name in RerankerFields.model_fields if name != "normalize"}
