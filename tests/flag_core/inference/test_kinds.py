"""One vocabulary of model kinds: each kind knows its head, Auto class and pooling, and the outside names
(FlagEmbedding's model_class, LM-Cocktail's model_type, the registry) all map onto it."""

from __future__ import annotations

import pytest
import transformers

from flag_core import FlagAutoReranker, FlagLLMReranker, FlagReranker, LayerWiseFlagLLMReranker, lookup_reranker
from flag_core.inference.kinds import (
    EMBEDDER_CLASSES,
    MERGE_TYPES,
    RERANKER_CLASSES,
    Head,
    ModelKind,
    embedder_class,
    merge_type,
    reranker_class,
)


def test_each_kind_knows_its_head_auto_class_and_pooling() -> None:
    assert ModelKind.EMBEDDER.head is Head.BASE and ModelKind.EMBEDDER.default_pooling == "cls"
    assert ModelKind.DECODER_EMBEDDER.default_pooling == "last_token"
    assert ModelKind.RERANKER.head.auto_class() is transformers.AutoModelForSequenceClassification
    assert ModelKind.LLM_RERANKER.head.auto_class() is transformers.AutoModelForCausalLM
    assert ModelKind.LLM.head is Head.CAUSAL_LM and ModelKind.LLM.default_pooling is None
    assert Head.BASE.auto_class() is transformers.AutoModel
    assert [k for k in ModelKind if k.is_reranker] == [
        ModelKind.RERANKER, ModelKind.LLM_RERANKER, ModelKind.LAYERWISE_RERANKER,
    ]


def test_encoder_means_what_its_vocabulary_says() -> None:
    # LM-Cocktail's "encoder" is an embedder; FlagAutoReranker's "encoder" is a cross-encoder
    assert merge_type("encoder") is ModelKind.EMBEDDER and reranker_class("encoder") is ModelKind.RERANKER
    assert merge_type("decoder") is ModelKind.LLM and reranker_class("decoder-only-base") is ModelKind.LLM_RERANKER
    assert embedder_class("decoder-only-icl") is ModelKind.DECODER_EMBEDDER
    assert set(MERGE_TYPES.values()) <= set(ModelKind) and set(EMBEDDER_CLASSES.values()) <= set(ModelKind)
    assert {kind for kind in RERANKER_CLASSES.values()} == {k for k in ModelKind if k.is_reranker}
    with pytest.raises(ValueError, match=r"model_type .vision.*encoder, reranker, decoder"):
        merge_type("vision")
    with pytest.raises(ValueError, match="model_class"):
        reranker_class("embedder")
    with pytest.raises(ValueError, match="model_class"):
        embedder_class(ModelKind.RERANKER)


def test_reranker_classes_follow_the_kind(reranker_path: str, tiny_decoder_path: str) -> None:
    assert FlagReranker.kind is ModelKind.RERANKER and FlagLLMReranker.kind is ModelKind.LLM_RERANKER
    assert LayerWiseFlagLLMReranker.kind is ModelKind.LAYERWISE_RERANKER
    entry = lookup_reranker("BAAI/bge-reranker-v2-gemma")
    assert entry is not None and entry.kind is ModelKind.LLM_RERANKER
    assert type(FlagAutoReranker.from_finetuned(reranker_path, devices="cpu")) is FlagReranker
    assert type(FlagAutoReranker.from_finetuned(tiny_decoder_path, devices="cpu")) is FlagLLMReranker
    layerwise = FlagAutoReranker.from_finetuned(tiny_decoder_path, model_class="layerwise", devices="cpu")
    assert type(layerwise) is LayerWiseFlagLLMReranker
