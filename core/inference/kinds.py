"""The kinds of model flagstack runs, and the outside vocabularies that name them.

:class:`ModelKind` is the one list of model kinds: each knows the transformers head it loads with
(:class:`Head`, which knows its Auto class) and its default pooling. FlagEmbedding's ``model_class``
names and LM-Cocktail's ``model_type`` names are public vocabularies that users pass in; they are
translated to a :class:`ModelKind` here and nowhere else.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

POOLING_METHODS = ("cls", "mean", "last_token")
DEFAULT_MAX_LENGTH = 512  # FlagEmbedding's default query, passage and (query, passage) pair length

# FlagEmbedding's BGEM3FlagModel: the dense output is the CLS state, and both lengths default to 512 tokens,
# whatever the checkpoint's sentence-transformers files say
M3_POOLING = "cls"
M3_MAX_LENGTH = DEFAULT_MAX_LENGTH


def check_pooling(method: str) -> str:
    """Return ``method`` if it is a known pooling method, else raise a ValueError listing them."""
    if method not in POOLING_METHODS:
        raise ValueError(f"unknown pooling_method {method!r}; use one of {', '.join(POOLING_METHODS)}")
    return method


class Head(str, Enum):
    """The transformers head a model is loaded with."""

    BASE = "base"
    SEQUENCE_CLASSIFICATION = "sequence_classification"
    CAUSAL_LM = "causal_lm"

    def auto_class(self) -> Any:
        """transformers' Auto class for this head (AutoModel, ...ForSequenceClassification, ...ForCausalLM)."""
        import transformers

        names = {
            Head.BASE: "AutoModel",
            Head.SEQUENCE_CLASSIFICATION: "AutoModelForSequenceClassification",
            Head.CAUSAL_LM: "AutoModelForCausalLM",
        }
        return getattr(transformers, names[self])


class ModelKind(str, Enum):
    """What a checkpoint is, as flagstack runs it."""

    EMBEDDER = "embedder"  # a bidirectional encoder embedder (BGE, e5, gte, MiniLM)
    M3 = "m3"  # BGE-M3: one encoder, three outputs (dense, sparse lexical weights, ColBERT vectors)
    DECODER_EMBEDDER = "decoder_embedder"  # a decoder-only embedder (bge-en-icl, e5-mistral, Qwen3-Embedding)
    LLM_EMBEDDER = "llm_embedder"  # BAAI/llm-embedder: one encoder, task-specific instructions
    RERANKER = "reranker"  # a cross-encoder with one relevance logit (bge-reranker-*)
    LLM_RERANKER = "llm_reranker"  # a decoder scored by its "Yes" logit (bge-reranker-v2-gemma)
    LAYERWISE_RERANKER = "layerwise_reranker"  # the same, read from chosen layers (bge-reranker-v2-minicpm-layerwise)
    LLM = "llm"  # a generative decoder (LM-Cocktail's "decoder" merges)

    @property
    def head(self) -> Head:
        """The transformers head this kind loads with."""
        if self is ModelKind.RERANKER:
            return Head.SEQUENCE_CLASSIFICATION
        if self in (ModelKind.LLM_RERANKER, ModelKind.LAYERWISE_RERANKER, ModelKind.LLM):
            return Head.CAUSAL_LM
        return Head.BASE

    @property
    def default_pooling(self) -> str | None:
        """FlagEmbedding's pooling for this kind (None: the kind is not pooled into a vector)."""
        return {
            ModelKind.EMBEDDER: "cls",
            ModelKind.M3: "cls",
            ModelKind.LLM_EMBEDDER: "cls",
            ModelKind.DECODER_EMBEDDER: "last_token",
        }.get(self)

    @property
    def own_pooling(self) -> str | None:
        """The pooling this kind's FlagEmbedding class always uses, whatever a folder's sentence-transformers files
        say (BGE-M3's dense output and LLM-Embedder's vectors are the CLS state), or None when the folder may
        decide."""
        return M3_POOLING if self in (ModelKind.M3, ModelKind.LLM_EMBEDDER) else None

    @property
    def own_max_length(self) -> int | None:
        """The default length of this kind's FlagEmbedding class, ahead of a folder's ``max_seq_length`` (BGE-M3:
        512), or None when the folder may decide."""
        return M3_MAX_LENGTH if self is ModelKind.M3 else None

    @property
    def is_reranker(self) -> bool:
        return self in (ModelKind.RERANKER, ModelKind.LLM_RERANKER, ModelKind.LAYERWISE_RERANKER)

    @property
    def is_decoder(self) -> bool:
        """Whether the model reads left to right (decoder-only), so batches are padded on the left."""
        return self.head is Head.CAUSAL_LM


def _parse(vocabulary: dict[str, ModelKind], value: Any, what: str) -> ModelKind:
    if isinstance(value, ModelKind) and value in vocabulary.values():
        return value
    if isinstance(value, str) and value in vocabulary:
        return vocabulary[value]
    raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(vocabulary)}")


# FlagEmbedding's FlagAutoModel model_class names
EMBEDDER_CLASSES: dict[str, ModelKind] = {
    "encoder-only-base": ModelKind.EMBEDDER,
    "encoder-only-m3": ModelKind.M3,
    "decoder-only-base": ModelKind.DECODER_EMBEDDER,
    "decoder-only-icl": ModelKind.DECODER_EMBEDDER,
}

# FlagEmbedding's FlagAutoReranker model_class names, flagstack's short names, and the registry's kinds
RERANKER_CLASSES: dict[str, ModelKind] = {
    "encoder": ModelKind.RERANKER,
    "encoder-only-base": ModelKind.RERANKER,
    "reranker": ModelKind.RERANKER,
    "llm": ModelKind.LLM_RERANKER,
    "llm_reranker": ModelKind.LLM_RERANKER,
    "decoder-only-base": ModelKind.LLM_RERANKER,
    "layerwise": ModelKind.LAYERWISE_RERANKER,
    "layerwise_reranker": ModelKind.LAYERWISE_RERANKER,
    "decoder-only-layerwise": ModelKind.LAYERWISE_RERANKER,
}

# LM-Cocktail's model_type names
MERGE_TYPES: dict[str, ModelKind] = {
    "encoder": ModelKind.EMBEDDER,
    "reranker": ModelKind.RERANKER,
    "decoder": ModelKind.LLM,
}


def embedder_class(model_class: Any) -> ModelKind:
    """The kind named by a FlagAutoModel ``model_class``."""
    return _parse(EMBEDDER_CLASSES, model_class, "model_class")


def reranker_class(model_class: Any) -> ModelKind:
    """The kind named by a FlagAutoReranker ``model_class``."""
    return _parse(RERANKER_CLASSES, model_class, "model_class")


def merge_type(model_type: Any) -> ModelKind:
    """The kind named by an LM-Cocktail ``model_type`` ("encoder", "reranker", "decoder")."""
    return _parse(MERGE_TYPES, model_type, "model_type")
