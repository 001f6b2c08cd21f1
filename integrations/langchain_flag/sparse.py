"""FlagSparseEmbeddings: BGE-M3's lexical weights as ``langchain_qdrant`` sparse embeddings (integer token ids,
float weights), exactly as flag_core's BGEM3FlagModel computes them."""

from __future__ import annotations

from typing import Any

from langchain_qdrant import SparseEmbeddings, SparseVector
from pydantic import ConfigDict, Field, PrivateAttr

from flag_core import BGEM3FlagModel, build_m3
from flag_core.frameworks import ModelName, RebuildsModel
from flag_core.settings import M3Fields


def sparse_vector(weights: dict[str, float]) -> SparseVector:
    """Lexical weights (token id as a str -> weight) as a Qdrant sparse vector, sorted by index."""
    items = sorted((int(token), float(weight)) for token, weight in weights.items())
    return SparseVector(indices=[i for i, _ in items], values=[w for _, w in items])


class FlagSparseEmbeddings(RebuildsModel, M3Fields, SparseEmbeddings):
    """BGE-M3 sparse embeddings for ``langchain_qdrant.QdrantVectorStore(sparse_embedding=...,
    retrieval_mode=RetrievalMode.SPARSE or HYBRID)``; settings: :class:`flag_core.settings.M3Fields`.

    Example:
        .. code-block:: python

            from langchain_qdrant import QdrantVectorStore, RetrievalMode
            from langchain_flag import FlagEmbeddings, FlagSparseEmbeddings

            store = QdrantVectorStore.from_texts(
                texts, embedding=FlagEmbeddings(model_name="BAAI/bge-m3"),
                sparse_embedding=FlagSparseEmbeddings(model_name="BAAI/bge-m3"),
                retrieval_mode=RetrievalMode.HYBRID, location=":memory:", collection_name="docs",
            )
    """

    model_name: ModelName = Field(description="hub id or local folder of the BGE-M3 model (str or os.PathLike)")

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    _model: BGEM3FlagModel = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._model = build_m3(self.model_name, self.model_settings())

    @property
    def client(self) -> BGEM3FlagModel:
        """The flag_core model doing the work."""
        return self._model

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        """Lexical weights of passages (with the passage instruction, if any)."""
        weights = self._model.encode_corpus(texts, return_dense=False, return_sparse=True)["lexical_weights"]
        return [sparse_vector(w) for w in weights]

    def embed_query(self, text: str) -> SparseVector:
        """Lexical weights of one query (with the query instruction, if any)."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes one str, got {type(text).__name__}")
        weights = self._model.encode_queries(text, return_dense=False, return_sparse=True)["lexical_weights"]
        return sparse_vector(weights)
