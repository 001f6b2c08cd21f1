"""Drop-in replacements for FlagEmbedding's rerankers: FlagReranker, FlagLLMReranker,
LayerWiseFlagLLMReranker and FlagAutoReranker."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from .front import ModelFront
from .inputs import as_pair_list, as_text_list, check_positive_int
from .instructions import apply_instruction
from .kinds import ModelKind, reranker_class
from .model_files import read_json, resolve_model_path
from .registry import lookup_reranker
from .rerank_runtime import RerankerRuntime
from .settings import BackendName, Devices, RerankerSettings, setting_defaults

logger = logging.getLogger(__name__)

LLM_QUERY_INSTRUCTION = "A: "  # FlagEmbedding's LLM rerankers' instructions
LLM_PASSAGE_INSTRUCTION = "B: "

# the declared default of each setting: the FlagEmbedding-compatible signatures below spell their parameters out
# and read each default from its one declaration, in the settings class (a constructor whose default differs reads
# it from its class's none_means, a named constant; tests/flag_core/test_settings.py holds both)
_R = setting_defaults(RerankerSettings)


class FlagReranker(ModelFront[RerankerSettings]):
    """A cross-encoder reranker with FlagEmbedding's ``FlagReranker`` interface.

    ``compute_score`` always returns a list of floats (one per pair, also for one pair and for several
    devices); ``normalize=True`` maps the logits through a sigmoid. The settings (:class:`RerankerSettings`) read
    as attributes (``reranker.max_length``: the pair length, at most what the model accepts).
    """

    kind: ClassVar[ModelKind] = ModelKind.RERANKER
    settings_class = RerankerSettings
    not_in_constructor: ClassVar[tuple[str, ...]] = ("model_class", "prompt")
    setting_reasons: ClassVar[dict[str, str]] = {"prompt": "an LLM reranker setting, not one",
                                                 "model_class": "for another reranker class, not a setting"}
    runtime: RerankerRuntime

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        use_fp16: bool = _R.use_fp16,
        query_instruction_for_rerank: str | None = _R.query_instruction_for_rerank,
        query_instruction_format: str = _R.query_instruction_format,
        passage_instruction_for_rerank: str | None = _R.passage_instruction_for_rerank,
        passage_instruction_format: str = _R.passage_instruction_format,
        trust_remote_code: bool = _R.trust_remote_code,
        cache_dir: str | None = _R.cache_dir,
        devices: Devices = _R.devices,
        batch_size: int = _R.batch_size,
        query_max_length: int | None = _R.query_max_length,
        max_length: int = _R.max_length,
        normalize: bool = _R.normalize,
        use_bf16: bool = _R.use_bf16,
        max_tokens_per_batch: int | None = _R.max_tokens_per_batch,
        show_progress_bar: bool = _R.show_progress_bar,
        backend: BackendName = _R.backend,
    ) -> None:
        self._start(model_name_or_path, locals())
        self._setup()

    @classmethod
    def takes(cls, name: str, value: Any) -> bool:
        return name == "model_class" and reranker_class(value) is cls.kind

    def _setup(self) -> None:
        self.runtime = RerankerRuntime(str(self.path), self.settings, self.target_devices, self.kind)
        self.__dict__["settings"] = self.runtime.settings  # its max_length within what the model accepts

    def _prepare(self, sentence_pairs: Any) -> list[tuple[str, str]]:
        pairs = as_pair_list(sentence_pairs)
        queries = apply_instruction(
            [q for q, _ in pairs], self.query_instruction_for_rerank, self.query_instruction_format, False
        )
        passages = apply_instruction(
            [p for _, p in pairs], self.passage_instruction_for_rerank, self.passage_instruction_format, False
        )
        return list(zip(queries, passages, strict=True))

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
        scores = self.runtime.score(self._prepare(sentence_pairs), query_max_length, max_length, batch_size,
                                    show_progress_bar)
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


class FlagLLMReranker(FlagReranker):
    """A decoder (LLM) reranker with FlagEmbedding's ``FlagLLMReranker`` interface: the score is the logit
    of "Yes" after the query ("A: ..."), the passage ("B: ...") and the prompt."""

    kind: ClassVar[ModelKind] = ModelKind.LLM_RERANKER
    none_means: ClassVar[dict[str, Any]] = {
        "query_instruction_for_rerank": LLM_QUERY_INSTRUCTION,
        "passage_instruction_for_rerank": LLM_PASSAGE_INSTRUCTION,
    }
    not_in_constructor: ClassVar[tuple[str, ...]] = ("model_class",)

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        use_fp16: bool = _R.use_fp16,
        use_bf16: bool = _R.use_bf16,
        query_instruction_for_rerank: str | None = none_means["query_instruction_for_rerank"],
        query_instruction_format: str = _R.query_instruction_format,
        passage_instruction_for_rerank: str | None = none_means["passage_instruction_for_rerank"],
        passage_instruction_format: str = _R.passage_instruction_format,
        prompt: str | None = _R.prompt,
        **kwargs: Any,
    ) -> None:
        self._start(model_name_or_path, locals())
        self._setup()

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
        scores = self.runtime.score(self._prepare(sentence_pairs), query_max_length, max_length, batch_size,
                                    show_progress_bar, prompt)
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
        scores = self.runtime.score(self._prepare(sentence_pairs), query_max_length, max_length, batch_size,
                                    show_progress_bar, prompt, layers)
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
        model_class: str | None = _R.model_class,
        use_fp16: bool = _R.use_fp16,
        trust_remote_code: bool = _R.trust_remote_code,
        **kwargs: Any,
    ) -> FlagReranker:
        """A reranker for ``model_name_or_path``: the registry decides for known names
        (bge-reranker-base/large/v2-m3 -> encoder, v2-gemma -> LLM, v2-minicpm-layerwise -> layerwise);
        an unknown folder is read from its config (a causal LM -> LLM, else encoder)."""
        kind = reranker_kind(model_name_or_path, model_class, kwargs.get("cache_dir"))
        return _CLASSES[kind](
            model_name_or_path, use_fp16=use_fp16, trust_remote_code=bool(trust_remote_code), **kwargs
        )


def reranker_kind(model_name_or_path: str | os.PathLike[str], model_class: str | None, cache_dir: str | None
                  ) -> ModelKind:
    """The reranker class for a model: ``model_class`` when given, else the registry's for the name, else read
    from the folder's config (a causal LM: LLM, a layerwise one: layerwise, else a cross-encoder)."""
    if model_class is not None:
        return reranker_class(model_class)
    entry = lookup_reranker(str(model_name_or_path))
    return entry.kind if entry is not None else _kind_from_config(model_name_or_path, cache_dir)


def auto_reranker(model_name_or_path: str | os.PathLike[str], settings: RerankerSettings) -> FlagReranker:
    """The reranker for ``model_name_or_path`` built from a settings object (``settings.model_class`` or the
    registry or the config picks the class; a None instruction means the class's own)."""
    kind = reranker_kind(model_name_or_path, settings.model_class, settings.cache_dir)
    return _CLASSES[kind].from_settings(model_name_or_path, settings)


def _kind_from_config(model_name_or_path: str | os.PathLike[str], cache_dir: str | None) -> ModelKind:
    path = resolve_model_path(model_name_or_path, cache_dir)
    architectures = read_json(path / "config.json", dict).get("architectures")
    names = " ".join(str(name) for name in architectures or [])
    if "LayerWise" in names:
        return ModelKind.LAYERWISE_RERANKER
    if "ForCausalLM" in names:
        return ModelKind.LLM_RERANKER
    return ModelKind.RERANKER
