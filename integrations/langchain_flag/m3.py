"""FlagM3Embeddings: BGE-M3's dense output as LangChain ``Embeddings``, sharing one encoding of each text with the
sparse (:class:`~langchain_flag.FlagSparseEmbeddings`) embeddings of the same model in a hybrid store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings
from langchain_core.load.serializable import Serializable
from pydantic import ConfigDict, Field, PrivateAttr

from flag_core import BGEM3FlagModel
from flag_core.frameworks import M3Adapter, ModelName, one_pass_model, run_async
from flag_core.settings import M3Fields

if TYPE_CHECKING:
    from .sparse import FlagSparseEmbeddings


class FlagM3Embeddings(M3Adapter, M3Fields, Embeddings, Serializable):
    """BGE-M3's dense vectors for LangChain (settings: :class:`flag_core.settings.M3Fields`). With
    :meth:`sparse` (or a :class:`~langchain_flag.FlagSparseEmbeddings` of equal settings) in a hybrid store, the
    model is loaded once and each text is encoded once for both outputs, whichever the store asks for first.

    Example:
        .. code-block:: python

            from langchain_qdrant import QdrantVectorStore, RetrievalMode
            from langchain_flag import FlagM3Embeddings

            dense = FlagM3Embeddings(model_name="BAAI/bge-m3")
            store = QdrantVectorStore.from_texts(
                texts, embedding=dense, sparse_embedding=dense.sparse(),
                retrieval_mode=RetrievalMode.HYBRID, location=":memory:", collection_name="docs",
            )
    """

    model_name: ModelName = Field(description="hub id or local folder of the BGE-M3 model (str or os.PathLike)")

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    _model: BGEM3FlagModel = PrivateAttr()

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    def model_post_init(self, context: Any, /) -> None:
        self._model = one_pass_model(self, "dense")

    def sparse(self) -> FlagSparseEmbeddings:
        """The sparse embeddings of the same model and settings (one loaded model, one encoding per text)."""
        from .sparse import FlagSparseEmbeddings

        return FlagSparseEmbeddings(**{name: getattr(self, name) for name in FlagSparseEmbeddings.model_fields})

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Dense vectors of passages (with the passage instruction, if any)."""
        return [vector.tolist() for vector in self._model.one_pass.serve(texts, "passage", "dense")]

    def embed_query(self, text: str) -> list[float]:
        """The dense vector of one query (with the query instruction, if any)."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes one str, got {type(text).__name__}")
        return list(self._model.one_pass.serve([text], "query", "dense")[0].tolist())

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Like :meth:`embed_documents`, run in a worker thread so the event loop keeps running."""
        return await run_async(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Like :meth:`embed_query`, run in a worker thread so the event loop keeps running."""
        return await run_async(self.embed_query, text)
