"""Moving from langchain-huggingface / langchain-community is an import change: the same arguments give the
same vectors (within 1e-5) and the same rerank order as the real classes, on the bundled model."""

from __future__ import annotations

import warnings
from typing import Any

import langchain_huggingface as huggingface  # the real classes (test extra)
import numpy as np
import pytest
from langchain_core.documents import Document

from langchain_flag import FlagEmbeddings, FlagReranker

TEXTS = [
    "The giant panda is a bear species endemic to China.",
    "Pandas eat bamboo almost exclusively.",
    "Paris is the capital of France.",
    "json.loads parses JSON text into Python objects.",
    "a short one",
]
QUERY = "what do pandas eat?"

ARGUMENT_SETS: list[dict[str, Any]] = [
    {},
    {"model_kwargs": {"device": "cpu"}, "encode_kwargs": {"normalize_embeddings": True, "batch_size": 2}},
    {"encode_kwargs": {"prompt": "passage: "}},  # no query_encode_kwargs: queries get the same prompt
    {"encode_kwargs": {"prompt": "passage: "}, "query_encode_kwargs": {"prompt": "query: "}},
    {"model_kwargs": {"prompts": {"q": "search_query: ", "d": "search_document: "}},
     "encode_kwargs": {"prompt_name": "d"}, "query_encode_kwargs": {"prompt_name": "q"}},
    {"model_kwargs": {"trust_remote_code": False, "backend": "torch"}, "encode_kwargs": {"convert_to_numpy": True}},
    {"cache_folder": None, "multi_process": False, "show_progress": False},
]


def _both(original: Any, migrated: FlagEmbeddings) -> None:
    np.testing.assert_allclose(migrated.embed_documents(TEXTS), original.embed_documents(TEXTS), atol=1e-5)
    np.testing.assert_allclose(migrated.embed_query(QUERY), original.embed_query(QUERY), atol=1e-5)


@pytest.mark.parametrize("arguments", ARGUMENT_SETS, ids=lambda a: ",".join(a) or "defaults")
def test_huggingface_embeddings_arguments(model_path: str, arguments: dict[str, Any]) -> None:
    original = huggingface.HuggingFaceEmbeddings(model_name=model_path, **arguments)
    _both(original, FlagEmbeddings(model_name=model_path, **arguments))


def test_truncate_dim_keeps_the_direction_and_unit_length(model_path: str) -> None:
    """sentence-transformers cuts the normalised vector (its Normalize module runs first), so its truncated
    vectors are shorter than 1; flagstack normalises after cutting, as FlagEmbedding does: same direction."""
    arguments = {"model_kwargs": {"truncate_dim": 128}}
    original = np.array(huggingface.HuggingFaceEmbeddings(model_name=model_path, **arguments).embed_documents(TEXTS))
    migrated = np.array(FlagEmbeddings(model_name=model_path, **arguments).embed_documents(TEXTS))
    assert migrated.shape == original.shape == (len(TEXTS), 128)
    np.testing.assert_allclose(migrated, original / np.linalg.norm(original, axis=1, keepdims=True), atol=1e-5)


def test_huggingface_bge_embeddings_arguments(model_path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community import embeddings as community
        arguments = {"query_instruction": "Represent this question for searching relevant passages: ",
                     "embed_instruction": "", "model_kwargs": {"device": "cpu"},
                     "encode_kwargs": {"normalize_embeddings": True}}
        original = community.HuggingFaceBgeEmbeddings(model_name=model_path, **arguments)
    _both(original, FlagEmbeddings(model_name=model_path, **arguments))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"model_kwargs": {"revision": "main"}}, r"model_kwargs\['revision'\].*local folder"),
        ({"encode_kwargs": {"precision": "int8"}}, r"encode_kwargs\['precision'\]"),
        ({"model_kwargs": {"backend": "tensorrt"}}, "backend='torch', 'onnx' or 'openvino'"),
        ({"encode_kwargs": {"prompt_name": "nope"}}, "prompt_name 'nope' is not one of the model's prompts"),
        ({"encode_kwargs": {"batch_size": 4}, "query_encode_kwargs": {"batch_size": 8}}, "one setting"),
        ({"model_kwargs": {"device": "cpu"}, "devices": "cuda:0"}, "give it once"),
    ],
)
def test_arguments_without_an_equivalent_are_named(model_path: str, arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):  # pydantic wraps it in a ValidationError
        FlagEmbeddings(model_name=model_path, **arguments)


def test_cross_encoder_reranker_order_and_sigmoid_scores(reranker_path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
        from langchain_community.cross_encoders import HuggingFaceCrossEncoder

    cross = HuggingFaceCrossEncoder(model_name=reranker_path, model_kwargs={"device": "cpu"})
    documents = [Document(page_content=text) for text in TEXTS]
    original = CrossEncoderReranker(model=cross, top_n=3).compress_documents(documents, QUERY)
    migrated = FlagReranker(model_name=reranker_path, model_kwargs={"device": "cpu"}, top_n=3, normalize=True)
    ours = migrated.compress_documents(documents, QUERY)
    assert [d.page_content for d in ours] == [d.page_content for d in original]
    pairs = [(QUERY, text) for text in TEXTS]
    np.testing.assert_allclose(migrated.score(pairs), list(cross.score(pairs)), atol=1e-5)
    logits = FlagReranker(model_name=reranker_path, devices="cpu").score(pairs)  # the default: FlagEmbedding's
    np.testing.assert_allclose(1 / (1 + np.exp(-np.array(logits))), list(cross.score(pairs)), atol=1e-5)
    with pytest.raises(ValueError, match=r"activation_fn.*normalize=True"):
        FlagReranker(model_name=reranker_path, model_kwargs={"activation_fn": None})


def test_unknown_keywords_are_rejected_by_every_class(model_path: str, reranker_path: str) -> None:
    from langchain_flag import FlagRetriever

    embeddings = FlagEmbeddings(model_name=model_path, devices="cpu")
    with pytest.raises(ValueError, match="normalise_embeddings"):
        FlagEmbeddings(model_name=model_path, normalise_embeddings=True)
    with pytest.raises(ValueError, match="top_k"):
        FlagReranker(model_name=reranker_path, top_k=3)
    with pytest.raises(ValueError, match="search_kwargs"):
        FlagRetriever(embeddings=embeddings, search_kwargs={"k": 3})
