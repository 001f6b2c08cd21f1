"""Drop-in replacements for FlagEmbedding's rerankers: FlagReranker, FlagLLMReranker,
LayerWiseFlagLLMReranker and FlagAutoReranker."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from .devices import resolve_devices
from .inputs import as_pair_list, as_text_list, check_positive_int
from .instructions import apply_instruction
from .kinds import ModelKind, reranker_class
from .model_files import read_json, resolve_model_path
from .registry import lookup_reranker
from .rerank_runtime import RerankerRuntime, RerankerSettings

logger = logging.getLogger(__name__)

Devices = str | int | Sequence[str | int] | None


class FlagReranker:
    """A cross-encoder reranker with FlagEmbedding's ``FlagReranker`` interface.

    ``compute_score`` always returns a list of floats (one per pair, also for one pair and for several
    devices); ``normalize=True`` maps the logits through a sigmoid.
    """

    kind: ClassVar[ModelKind] = ModelKind.RERANKER

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        use_fp16: bool = False,
        query_instruction_for_rerank: str | None = None,
        query_instruction_format: str = "{}{}",
        passage_instruction_for_rerank: str | None = None,
        passage_instruction_format: str = "{}{}",
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        devices: Devices = None,
        batch_size: int = 128,
        query_max_length: int | None = None,
        max_length: int = 512,
        normalize: bool = False,
        use_bf16: bool = False,
        max_tokens_per_batch: int | None = None,
        show_progress_bar: bool = False,
        backend: Literal["torch", "onnx", "openvino"] = "torch",
    ) -> None:
        path = resolve_model_path(model_name_or_path, cache_dir)
        self.model_name_or_path = str(model_name_or_path)
        self.use_fp16 = bool(use_fp16)
        self.use_bf16 = bool(use_bf16)
        self.query_instruction_for_rerank = query_instruction_for_rerank
        self.query_instruction_format = query_instruction_format
        self.passage_instruction_for_rerank = passage_instruction_for_rerank
        self.passage_instruction_format = passage_instruction_format
        self.batch_size = check_positive_int(batch_size, "batch_size", allow_none=False) or 128
        self.query_max_length = check_positive_int(query_max_length, "query_max_length")
        self.normalize = bool(normalize)
        self.show_progress_bar = bool(show_progress_bar)
        self.target_devices = resolve_devices(devices)
        check_positive_int(max_tokens_per_batch, "max_tokens_per_batch")
        self.runtime = RerankerRuntime(
            RerankerSettings(
                path=str(path),
                kind=self.kind,
                use_fp16=self.use_fp16,
                use_bf16=self.use_bf16,
                trust_remote_code=bool(trust_remote_code),
                max_tokens_per_batch=max_tokens_per_batch,
                backend=backend,
            ),
            self.target_devices,
        )
        self.max_length = self._cap(check_positive_int(max_length, "max_length", allow_none=False) or 512)

    def _cap(self, length: int) -> int:
        limit = self.runtime.max_length
        if self.kind is ModelKind.RERANKER and limit is not None and length > limit:
            logger.warning("max_length=%d is more than the model accepts; using %d", length, limit)
            return limit
        return length

    def _prepare(self, sentence_pairs: Any) -> list[tuple[str, str]]:
        pairs = as_pair_list(sentence_pairs)
        queries = apply_instruction(
            [q for q, _ in pairs], self.query_instruction_for_rerank, self.query_instruction_format, False
        )
        passages = apply_instruction(
            [p for _, p in pairs], self.passage_instruction_for_rerank, self.passage_instruction_format, False
        )
        return list(zip(queries, passages, strict=True))

    def _scores(
        self,
        sentence_pairs: Any,
        batch_size: int | None,
        query_max_length: int | None,
        max_length: int | None,
        show_progress_bar: bool | None,
        prompt: str | None = None,
        cutoff_layers: Sequence[int] | None = None,
    ) -> Any:
        pairs = self._prepare(sentence_pairs)
        length = self.max_length if max_length is None else self._cap(check_positive_int(max_length, "max_length") or 0)
        query_length = check_positive_int(query_max_length, "query_max_length") or self.query_max_length
        return self.runtime.score(
            pairs,
            query_max_length=query_length if query_length is not None else length * 3 // 4,
            max_length=length,
            batch_size=check_positive_int(batch_size, "batch_size") or self.batch_size,
            show_progress=self.show_progress_bar if show_progress_bar is None else show_progress_bar,
            prompt=prompt,
            cutoff_layers=cutoff_layers,
        )

    def _floats(self, scores: Any, normalize: bool | None) -> list[list[float]]:
        """One list of Python floats per score column (sigmoid applied when normalising)."""
        if self.normalize if normalize is None else normalize:
            scores = scores.sigmoid()
        return [[float(s) for s in column] for column in scores.T.tolist()]

    def compute_score(
        self,
        sentence_pairs: Sequence[tuple[str, str]] | tuple[str, str] | Sequence[Sequence[str]],
        batch_size: int | None = None,
        query_max_length: int | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[float]:
        """Relevance scores of (query, passage) pairs, in input order; an empty list gives []."""
        scores = self._scores(sentence_pairs, batch_size, query_max_length, max_length, show_progress_bar)
        return self._floats(scores, normalize)[0]

    def rerank(
        self, query: str, passages: Sequence[str], top_n: int | None = None, normalize: bool | None = None
    ) -> list[tuple[int, float]]:
        """(index into ``passages``, score) pairs, best first (ties keep input order), at most ``top_n``."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        texts, single = as_text_list(passages, "passages")
        if single:
            raise TypeError("passages must be a list of str, not one str; wrap it as [passage]")
        check_positive_int(top_n, "top_n")
        scores = self.compute_score([(query, text) for text in texts], normalize=normalize)
        ranked = sorted(enumerate(scores), key=lambda item: -item[1])
        return ranked if top_n is None else ranked[:top_n]

    def stop_self_pool(self) -> None:
        """Stop worker processes (several devices)."""
        self.runtime.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name_or_path!r}, devices={self.target_devices})"


class FlagLLMReranker(FlagReranker):
    """A decoder (LLM) reranker with FlagEmbedding's ``FlagLLMReranker`` interface: the score is the logit
    of "Yes" after the query ("A: ..."), the passage ("B: ...") and the prompt."""

    kind: ClassVar[ModelKind] = ModelKind.LLM_RERANKER

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        use_fp16: bool = False,
        use_bf16: bool = False,
        query_instruction_for_rerank: str | None = "A: ",
        query_instruction_format: str = "{}{}",
        passage_instruction_for_rerank: str | None = "B: ",
        passage_instruction_format: str = "{}{}",
        prompt: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.prompt = prompt
        super().__init__(
            model_name_or_path,
            use_fp16=use_fp16,
            use_bf16=use_bf16,
            query_instruction_for_rerank=query_instruction_for_rerank,
            query_instruction_format=query_instruction_format,
            passage_instruction_for_rerank=passage_instruction_for_rerank,
            passage_instruction_format=passage_instruction_format,
            **kwargs,
        )

    def compute_score(  # type: ignore[override]
        self,
        sentence_pairs: Sequence[tuple[str, str]] | tuple[str, str] | Sequence[Sequence[str]],
        batch_size: int | None = None,
        query_max_length: int | None = None,
        max_length: int | None = None,
        prompt: str | None = None,
        normalize: bool | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[float]:
        """Relevance scores of (query, passage) pairs, in input order."""
        scores = self._scores(
            sentence_pairs, batch_size, query_max_length, max_length, show_progress_bar, prompt or self.prompt
        )
        return self._floats(scores, normalize)[0]


class LayerWiseFlagLLMReranker(FlagLLMReranker):
    """A layerwise LLM reranker: scores read from the layers named in ``cutoff_layers`` (default: the
    last). One layer gives a list of floats, several give one list per layer."""

    kind: ClassVar[ModelKind] = ModelKind.LAYERWISE_RERANKER

    def compute_score(  # type: ignore[override]
        self,
        sentence_pairs: Sequence[tuple[str, str]] | tuple[str, str] | Sequence[Sequence[str]],
        batch_size: int | None = None,
        query_max_length: int | None = None,
        max_length: int | None = None,
        cutoff_layers: Sequence[int] | None = None,
        prompt: str | None = None,
        normalize: bool | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[float] | list[list[float]]:
        """Scores per requested layer, in input order."""
        layers = list(cutoff_layers) if cutoff_layers is not None else [self.runtime.num_layers]
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 < layer <= self.runtime.num_layers:
                raise ValueError(f"cutoff_layers must hold layer numbers 1..{self.runtime.num_layers}, got {layer!r}")
        scores = self._scores(
            sentence_pairs, batch_size, query_max_length, max_length, show_progress_bar, prompt or self.prompt, layers
        )
        per_layer = self._floats(scores, normalize)
        return per_layer[0] if len(per_layer) == 1 else per_layer


_CLASSES: dict[ModelKind, type[FlagReranker]] = {
    cls.kind: cls for cls in (FlagReranker, FlagLLMReranker, LayerWiseFlagLLMReranker)
}


class FlagAutoReranker:
    """Builds the right reranker class for a model name or folder."""

    def __init__(self) -> None:
        raise OSError("FlagAutoReranker is not meant to be instantiated; use FlagAutoReranker.from_finetuned(...)")

    @classmethod
    def from_finetuned(
        cls,
        model_name_or_path: str | os.PathLike[str],
        model_class: str | None = None,
        use_fp16: bool = False,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> FlagReranker:
        """A reranker for ``model_name_or_path``: the registry decides for known names
        (bge-reranker-base/large/v2-m3 -> encoder, v2-gemma -> LLM, v2-minicpm-layerwise -> layerwise);
        an unknown folder is read from its config (a causal LM -> LLM, else encoder)."""
        if model_class is not None:
            kind = reranker_class(model_class)
        else:
            entry = lookup_reranker(str(model_name_or_path))
            kind = entry.kind if entry is not None else _kind_from_config(model_name_or_path, kwargs.get("cache_dir"))
        return _CLASSES[kind](
            model_name_or_path, use_fp16=use_fp16, trust_remote_code=bool(trust_remote_code), **kwargs
        )


def _kind_from_config(model_name_or_path: str | os.PathLike[str], cache_dir: str | None) -> ModelKind:
    path = resolve_model_path(model_name_or_path, cache_dir)
    architectures = read_json(path / "config.json", dict).get("architectures")
    names = " ".join(str(name) for name in architectures or [])
    if "LayerWise" in names:
        return ModelKind.LAYERWISE_RERANKER
    if "ForCausalLM" in names:
        return ModelKind.LLM_RERANKER
    return ModelKind.RERANKER
