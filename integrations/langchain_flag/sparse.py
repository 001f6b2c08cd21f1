"""FlagSparseEmbeddings: BGE-M3's lexical weights as ``langchain_qdrant`` sparse embeddings (integer token ids,
float weights), exactly as flag_core's BGEM3FlagModel computes them; :meth:`FlagSparseEmbeddings.milvus` gives the
same weights in langchain-milvus' shape. Importing this module needs no vector-store package."""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from flag_core import BGEM3FlagModel
from flag_core.frameworks import M3Adapter, ModelName, one_pass_model, run_async
from flag_core.settings import M3Fields

if TYPE_CHECKING:
    from langchain_qdrant import SparseVector


class PlainSparseVector(BaseModel, extra="forbid"):
    """A sparse vector with langchain-qdrant's fields (token ids, unique and sorted, and their weights), used when
    langchain-qdrant is not installed."""

    indices: list[int] = Field(..., description="token ids")
    values: list[float] = Field(..., description="their weights, one per index")


@functools.cache
def _vector_class() -> type[Any]:
    """langchain-qdrant's ``SparseVector`` when it is installed (imported on first use, not with this module),
    else :class:`PlainSparseVector`; registers FlagSparseEmbeddings as a langchain-qdrant ``SparseEmbeddings``."""
    try:
        from langchain_qdrant import SparseEmbeddings, SparseVector
    except ImportError:
        return PlainSparseVector
    SparseEmbeddings.register(FlagSparseEmbeddings)
    return SparseVector


def sparse_vector(weights: dict[str, float]) -> SparseVector:
    """Lexical weights (token id as a str -> weight) as a Qdrant sparse vector, sorted by index."""
    items = sorted((int(token), float(weight)) for token, weight in weights.items())
    return _vector_class()(indices=[i for i, _ in items], values=[w for _, w in items])  # type: ignore[no-any-return]


def weight_dict(weights: dict[str, float]) -> dict[int, float]:
    """Lexical weights as {token id: weight} (langchain-milvus' sparse shape)."""
    return {int(token): float(weight) for token, weight in weights.items()}


class FlagSparseEmbeddings(M3Adapter, M3Fields):
    """BGE-M3 sparse embeddings for ``langchain_qdrant.QdrantVectorStore(sparse_embedding=...,
    retrieval_mode=RetrievalMode.SPARSE or HYBRID)`` (an instance of langchain-qdrant's ``SparseEmbeddings`` when
    that is installed); settings: :class:`flag_core.settings.M3Fields`. With a
    :class:`~langchain_flag.FlagM3Embeddings` of equal settings as the dense side, the model is loaded once and
    each text encoded once. For langchain-milvus, pass :meth:`milvus`.

    Example:
        .. code-block:: python

            from langchain_qdrant import QdrantVectorStore, RetrievalMode
            from langchain_flag import FlagM3Embeddings, FlagSparseEmbeddings

            store = QdrantVectorStore.from_texts(
                texts, embedding=FlagM3Embeddings(model_name="BAAI/bge-m3"),
                sparse_embedding=FlagSparseEmbeddings(model_name="BAAI/bge-m3"),
                retrieval_mode=RetrievalMode.HYBRID, location=":memory:", collection_name="docs",
            )
    """

    model_name: ModelName = Field(description="hub id or local folder of the BGE-M3 model (str or os.PathLike)")

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    _model: BGEM3FlagModel = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._model = one_pass_model(self, "sparse")
        _vector_class()  # an instance of langchain-qdrant's SparseEmbeddings when that is installed

    def lexical_weights(self, texts: list[str], side: str = "passage") -> list[dict[str, float]]:
        """flag_core's lexical weights (token id as a str -> weight) of ``texts`` on the query or passage side."""
        return self._model.one_pass.serve(texts, side, "sparse")  # type: ignore[arg-type]

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        """Lexical weights of passages (with the passage instruction, if any)."""
        return [sparse_vector(w) for w in self.lexical_weights(texts)]

    def embed_query(self, text: str) -> SparseVector:
        """Lexical weights of one query (with the query instruction, if any)."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes one str, got {type(text).__name__}")
        return sparse_vector(self.lexical_weights([text], "query")[0])

    async def aembed_documents(self, texts: list[str]) -> list[SparseVector]:
        """Like :meth:`embed_documents`, without blocking the event loop."""
        return await run_async(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> SparseVector:
        """Like :meth:`embed_query`, without blocking the event loop."""
        return await run_async(self.embed_query, text)

    def milvus(self) -> Any:
        """These embeddings as langchain-milvus' ``BaseSparseEmbedding`` ({token id: weight}), for
        ``Milvus(embedding_function=[dense, sparse.milvus()], ...)``; needs langchain-milvus."""
        from ._milvus import milvus_sparse

        return milvus_sparse(self)


if "langchain_qdrant" in sys.modules:  # already imported by the user: register now (isinstance checks)
    _vector_class()
