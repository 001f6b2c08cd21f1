"""Moving from llama-index-embeddings-huggingface is an import change: HuggingFaceEmbedding's arguments give the
same vectors (within 1e-5), a wrong or unknown keyword is an error, and the reranker takes model_name."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from llama_index.embeddings.huggingface import HuggingFaceEmbedding  # the real class (test extra)

from llamaindex_flag import FlagEmbedding, FlagReranker

TEXTS = [
    "The giant panda is a bear species endemic to China.",
    "Pandas eat bamboo almost exclusively.",
    "Paris is the capital of France.",
    "json.loads parses JSON text into Python objects. " * 20,  # longer than max_length=64 below
]
QUERY = "what do pandas eat?"

ARGUMENT_SETS: list[dict[str, Any]] = [
    {"device": "cpu"},
    {"max_length": 64, "query_instruction": "query: ", "text_instruction": "passage: ", "normalize": True,
     "embed_batch_size": 2, "device": "cpu"},
    {"cache_folder": None, "trust_remote_code": False, "show_progress_bar": False, "parallel_process": False},
    {"device": "cpu", "model_kwargs": {"torch_dtype": "float32"}},
]


@pytest.mark.parametrize("arguments", ARGUMENT_SETS, ids=lambda a: ",".join(a))
def test_huggingface_embedding_arguments(model_path: str, arguments: dict[str, Any]) -> None:
    original = HuggingFaceEmbedding(model_name=model_path, **arguments)
    migrated = FlagEmbedding(model_name=model_path, **arguments)
    np.testing.assert_allclose(migrated.get_text_embedding_batch(TEXTS), original.get_text_embedding_batch(TEXTS),
                               atol=1e-5)
    np.testing.assert_allclose(migrated.get_query_embedding(QUERY), original.get_query_embedding(QUERY), atol=1e-5)


def test_the_arguments_that_were_ignored_now_count(model_path: str) -> None:
    plain = FlagEmbedding(model_name=model_path, devices="cpu")
    given = FlagEmbedding(model_name=model_path, query_instruction="X: ", max_length=16, devices="cpu")
    assert given.client.query_instruction_for_retrieval == "X: " and given.client.query_max_length == 16
    assert not np.allclose(given.get_query_embedding(QUERY), plain.get_query_embedding(QUERY), atol=1e-3)


def test_one_batch_size(model_path: str) -> None:
    embedding = FlagEmbedding(model_name=model_path, embed_batch_size=8, devices="cpu")
    assert embedding.client.batch_size == 8 and "batch_size" not in embedding.to_dict()
    assert FlagEmbedding(model_name=model_path, batch_size=4, devices="cpu").embed_batch_size == 4
    with pytest.raises(ValueError, match="give one"):
        FlagEmbedding(model_name=model_path, batch_size=4, embed_batch_size=8)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"querry_instruction": "typo: "}, "querry_instruction"),
        ({"pooling": "cls"}, "pooling"),
        ({"target_devices": ["cpu"]}, "only with parallel_process=True"),
        ({"model_kwargs": {"attn_implementation": "flash_attention_2"}}, "attn_implementation"),
        ({"device": "cpu", "devices": "cuda:0"}, "give it once"),
    ],
)
def test_unknown_and_unmappable_keywords_are_errors(model_path: str, arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FlagEmbedding(model_name=model_path, **arguments)


def test_reranker_takes_model_name_and_rejects_typos(reranker_path: str) -> None:
    reranker = FlagReranker(model_name=reranker_path, top_n=2, devices="cpu")
    assert reranker.model == reranker_path and reranker.client.model_name_or_path == reranker_path
    with pytest.raises(ValueError, match="top_k"):
        FlagReranker(model=reranker_path, top_k=2)
    with pytest.raises(ValueError, match="give one"):
        FlagReranker(model=reranker_path, model_name="other")


def test_to_dict_from_dict_deepcopy_and_pickle(model_path: str, reranker_path: str) -> None:
    import copy
    import pickle

    embedding = FlagEmbedding(model_name=model_path, devices="cpu", query_instruction="q: ", embed_batch_size=16)
    for back in (FlagEmbedding.from_dict(embedding.to_dict()), copy.deepcopy(embedding),
                 pickle.loads(pickle.dumps(embedding))):
        assert back.to_dict() == embedding.to_dict() and back.client is embedding.client
    assert FlagEmbedding.from_dict(embedding.to_dict()).get_query_embedding("x") == embedding.get_query_embedding("x")
    reranker = FlagReranker(model_name=reranker_path, top_n=2, devices="cpu")
    clones = (FlagReranker.from_dict(reranker.to_dict()), copy.deepcopy(reranker), pickle.loads(pickle.dumps(reranker)))
    for back in clones:
        assert back.to_dict() == reranker.to_dict() and back.client is reranker.client


def test_the_retriever_rejects_unknown_keywords(model_path: str) -> None:
    from llamaindex_flag import FlagRetriever

    with pytest.raises(TypeError, match="top_k"):
        FlagRetriever(embed_model=FlagEmbedding(model_name=model_path, devices="cpu"), top_k=3)  # type: ignore[call-arg]


def test_path_model_names_and_numpy_integers(model_path: str, reranker_path: str) -> None:
    """Model names may be any os.PathLike (kept as a str: the same shared model and to_dict); counts may be numpy
    integers."""
    from pathlib import Path

    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from llamaindex_flag import FlagRetriever

    embedding = FlagEmbedding(model_name=Path(model_path), devices="cpu", embed_batch_size=np.int64(2))
    assert embedding.model_name == model_path and embedding.embed_batch_size == 2
    assert embedding.client is FlagEmbedding(model_name=model_path, devices="cpu", embed_batch_size=2).client
    assert embedding.to_dict()["model_name"] == model_path
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in TEXTS]
    for reranker in (FlagReranker(model=Path(reranker_path), top_n=np.int64(2), devices="cpu"),
                     FlagReranker(model_name=Path(reranker_path), top_n=np.int64(2), devices="cpu")):
        assert reranker.model == reranker_path
        assert len(reranker.postprocess_nodes(nodes, QueryBundle(QUERY))) == 2
    assert FlagReranker(model=Path(reranker_path), model_name=reranker_path, devices="cpu").model == reranker_path
    retriever = FlagRetriever(nodes=[n.node for n in nodes], embed_model=embedding, similarity_top_k=np.int64(3))
    assert type(retriever.similarity_top_k) is int and len(retriever.retrieve(QUERY)) == 3
