"""The registry: hub ids, local folders, fine-tuned checkpoint folders, and unknown folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core import FlagAutoModel, FlagModel, LLMEmbedder, lookup_embedder, lookup_reranker
from flag_core.inference.instructions import BGE_EN_QUERY_INSTRUCTION, BGE_ZH_QUERY_INSTRUCTION


@pytest.mark.parametrize(
    ("name", "family", "pooling"),
    [
        ("BAAI/bge-base-en-v1.5", "bge-en", "cls"),
        ("BAAI/bge-large-zh-v1.5", "bge-zh", "cls"),
        ("BAAI/bge-small-en", "bge-en", "cls"),
        ("BAAI/bge-m3", "bge-m3", "cls"),
        ("BAAI/llm-embedder", "llm-embedder", "cls"),
        ("intfloat/e5-base-v2", "e5", "mean"),
        ("intfloat/multilingual-e5-large", "e5", "mean"),
        ("thenlper/gte-base", "gte", "mean"),
        ("Qwen/Qwen3-Embedding-0.6B", "qwen3-embedding", "last_token"),
        ("/models/bge-base-en-v1.5", "bge-en", "cls"),
        ("/runs/bge-small-zh-v1.5-legal/checkpoint-1200", "bge-zh", "cls"),
        ("C:\\models\\bge-m3\\checkpoint-5", "bge-m3", "cls"),
    ],
)
def test_known_names(name: str, family: str, pooling: str) -> None:
    entry = lookup_embedder(name)
    assert entry is not None and entry.name == family and entry.pooling == pooling


def test_unknown_names_are_not_errors() -> None:
    assert lookup_embedder("/tmp/my-own-model") is None
    assert lookup_embedder("/tmp/run/checkpoint-3") is None
    assert lookup_embedder("") is None


def test_rerankers() -> None:
    assert lookup_reranker("BAAI/bge-reranker-v2-m3").kind == "reranker"  # type: ignore[union-attr]
    assert lookup_reranker("BAAI/bge-reranker-large").kind == "reranker"  # type: ignore[union-attr]
    assert lookup_reranker("BAAI/bge-reranker-v2-gemma").kind == "llm_reranker"  # type: ignore[union-attr]
    assert lookup_reranker("BAAI/bge-reranker-v2-minicpm-layerwise").kind == "layerwise_reranker"  # type: ignore[union-attr]
    assert lookup_reranker("/x/bge-base-en-v1.5") is None


def test_auto_model_on_a_local_bge_folder(model_copy: Any, mini_model: FlagModel) -> None:
    folder = Path(model_copy("bge-small-en-v1.5"))
    model = FlagAutoModel.from_finetuned(str(folder), devices="cpu", pooling_method="cls")
    assert model.query_instruction_for_retrieval == BGE_EN_QUERY_INSTRUCTION
    np.testing.assert_allclose(
        model.encode_queries("pandas"), mini_model.encode(BGE_EN_QUERY_INSTRUCTION + "pandas"), atol=1e-6
    )
    # FlagModel itself adds no instruction unless asked, as FlagEmbedding's FlagModel does
    assert FlagModel(str(folder), devices="cpu").query_instruction_for_retrieval is None


def test_auto_model_on_a_checkpoint_folder(model_copy: Any) -> None:
    folder = Path(model_copy("bge-base-zh-v1.5-finetuned/checkpoint-100"))
    model = FlagAutoModel.from_finetuned(str(folder), devices="cpu")
    assert model.query_instruction_for_retrieval == BGE_ZH_QUERY_INSTRUCTION
    # the folder's sentence-transformers files still decide pooling and length
    assert model.pooling_method == "mean" and model.query_max_length == 256


def test_auto_model_on_an_unknown_folder(model_copy: Any) -> None:
    folder = Path(model_copy("something-else"))
    (folder / "modules.json").unlink()
    (folder / "sentence_bert_config.json").unlink()
    model = FlagAutoModel.from_finetuned(str(folder), devices="cpu")
    assert model.pooling_method == "cls" and model.query_max_length == 512
    assert model.query_instruction_for_retrieval is None
    assert model.encode(["x"]).shape == (1, 384)


def test_explicit_arguments_win(model_copy: Any) -> None:
    folder = Path(model_copy("bge-large-en-v1.5"))
    model = FlagAutoModel.from_finetuned(
        str(folder), devices="cpu", pooling_method="cls", query_instruction_for_retrieval="Find: ",
        query_max_length=64,
    )
    assert model.query_instruction_for_retrieval == "Find: "
    assert model.pooling_method == "cls" and model.query_max_length == 64


def test_auto_model_gives_llm_embedder(model_copy: Any) -> None:
    folder = Path(model_copy("llm-embedder"))
    model = FlagAutoModel.from_finetuned(str(folder), devices="cpu")
    assert isinstance(model, LLMEmbedder) and model.pooling_method == "cls"


def test_unknown_model_class_is_an_error(model_path: str) -> None:
    with pytest.raises(ValueError, match="model_class"):
        FlagAutoModel.from_finetuned(model_path, model_class="encoder-only-huge")
