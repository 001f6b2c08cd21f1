"""FlagHybridRetriever: BGE-M3 dense + sparse candidates and ColBERT rescoring over LlamaIndex nodes (searching
through a :class:`~llamaindex_flag.FlagHybridVectorStore` over its own index)."""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import BaseComponent, BaseNode, NodeWithScore, QueryBundle, QueryType
from llama_index.core.vector_stores.types import VectorStoreQuery

from flag_core.frameworks import HybridIndexHolder, ModelName, run_async, search_options
from flag_core.retrieval import DEFAULT_CANDIDATES, DEFAULT_WEIGHTS
from flag_core.settings import M3Fields

from ._nodes import HYBRID_PAYLOADS, check_node_payload
from .vector_stores import FlagHybridVectorStore, m3_keywords, rekey_hybrid

__all__ = ["PAYLOADS", "FlagHybridRetriever", "check_node_payload"]

PAYLOADS = HYBRID_PAYLOADS  # FlagHybridVectorStore's: the two share files (and, through vector_store, the index)

# the per-call k and mode of retrieve(query, k=..., mode=...) while that call runs: (retriever, k, mode)
_CALL: contextvars.ContextVar[tuple[Any, int, str] | None] = contextvars.ContextVar("flagstack_hybrid_call",
                                                                                     default=None)


class FlagHybridRetriever(HybridIndexHolder, BaseComponent, M3Fields, BaseRetriever):
    """The ``similarity_top_k`` nodes by BGE-M3's three outputs: the ``candidates`` best by dense and by sparse
    score, rescored with ColBERT (candidates only) and ranked by ``mode`` with ``weights`` (dense, sparse,
    colbert). The node's score is the ranking score; ``metadata["flagstack_scores"]`` of the returned copy holds
    every mode's. Searching and adding go through ``vector_store``, a
    :class:`~llamaindex_flag.FlagHybridVectorStore` over this retriever's own index (the same HybridIndex object,
    the same file format): nodes added through either are in both. A node added again (same id) replaces the one
    stored.

    Model settings are :class:`flag_core.settings.M3Fields`, fields of this class as of
    ``langchain_flag.FlagHybridRetriever`` (``devices="cpu"``, ``passage_max_length=256``, ...); a dict of them
    may be given as ``m3_settings={...}`` (an unknown key is a TypeError, one also given as a keyword a ValueError).
    ``model_name`` is a hub id or a folder (str or os.PathLike).

    ``k`` and ``mode`` may be given per call: ``retriever.retrieve(query, k=10, mode="dense")`` (and
    ``aretrieve``), with the usual retrieval events and callbacks; without them, ``similarity_top_k`` and ``mode``.

    ``to_dict`` / ``from_dict`` (and ``to_json`` / ``from_json``) round-trip a retriever whose nodes are in a file
    (``index_path``: set by :meth:`save` and :meth:`load`, or given, kept absolute); the file is referred to, never
    inlined, and ``to_dict`` of a retriever holding nodes that are not saved is a ValueError rather than a dict that
    loses them. ``copy.deepcopy`` and ``pickle`` copy the nodes; every copy shares the loaded model (built again
    through :func:`flag_core.build_m3`, never copied).

    Example:
        .. code-block:: python

            from llamaindex_flag import FlagHybridRetriever

            retriever = FlagHybridRetriever(nodes=nodes, model_name="BAAI/bge-m3", similarity_top_k=5)
            results = retriever.retrieve("what do pandas eat?")
            dense_only = retriever.retrieve("what do pandas eat?", k=2, mode="dense")
            retriever.save("pandas.flag")
            again = FlagHybridRetriever.from_json(retriever.to_json())
    """

    model_name: ModelName = Field(description="hub id or local folder of the BGE-M3 model (str or os.PathLike)")
    similarity_top_k: int = Field(default=2, gt=0, description="nodes returned")
    verbose: bool = Field(default=False, description="print recursive retrieval steps")
    callback_manager: CallbackManager = Field(default_factory=CallbackManager, exclude=True)
    object_map: dict[str, Any] = Field(default_factory=dict, exclude=True)

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    payloads = PAYLOADS

    _verbose: bool = PrivateAttr(default=False)
    _store: FlagHybridVectorStore | None = PrivateAttr(default=None)

    def __init__(
        self,
        nodes: Sequence[BaseNode] | None = None,
        model_name: str | os.PathLike[str] | None = None,
        similarity_top_k: int = 2,
        mode: str = "hybrid",
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        candidates: int = DEFAULT_CANDIDATES,
        colbert_storage: str | None = None,
        m3_settings: Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **settings: Any,
    ) -> None:
        settings, model_name = m3_keywords(model_name, settings, m3_settings)
        settings.update(model_name=model_name, similarity_top_k=similarity_top_k, mode=mode, weights=weights,
                        candidates=candidates, colbert_storage=colbert_storage, verbose=bool(verbose))
        if callback_manager is not None:
            settings["callback_manager"] = callback_manager
        super().__init__(**settings)
        if nodes:
            self.add_nodes(nodes)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._verbose = self.verbose  # what LlamaIndex's BaseRetriever reads
        self._store = None

    @property
    def vector_store(self) -> FlagHybridVectorStore:
        """A :class:`~llamaindex_flag.FlagHybridVectorStore` over this retriever's index (the same object: nodes
        added, deleted or cleared through it are the retriever's), with its model and search settings. Save through
        the retriever to keep its ``index_path``."""
        store = self._store
        if store is None or store._index is not self._index:  # built once per index (load replaces the index)
            store = self._store = FlagHybridVectorStore.sharing(self)
        else:  # the search settings as they are now (assignable fields of both)
            store.mode, store.weights, store.candidates = self.mode, self.weights, self.candidates
        return store

    def _read_index(self, path: str | os.PathLike[str]) -> None:
        super()._read_index(path)
        rekey_hybrid(self)

    @classmethod
    def class_name(cls) -> str:
        return "FlagHybridRetriever"

    @property
    def m3_settings(self) -> dict[str, Any]:  # type: ignore[override]
        """The BGE-M3 settings in effect that are not None, as a dict (this class's attribute before the settings
        became its fields)."""
        return M3Fields.m3_settings(self)

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """The settings and ``index_path`` (``from_dict`` builds an equal retriever: the model is shared, the
        nodes read from the file); a ValueError while the retriever holds nodes that are not in the file."""
        if not self.in_file():
            raise ValueError(
                f"this retriever holds {len(self)} nodes that are not all in a file as they are: save(path) first; "
                "to_dict refers to the nodes by index_path, never inlines them"
            )
        return super().to_dict(**kwargs)

    def add_nodes(self, nodes: Sequence[BaseNode]) -> None:
        """Encode (with ``MetadataMode.EMBED``, all three outputs) and index more nodes; a node whose id is stored
        replaces it."""
        self.vector_store.add(nodes)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], model_name: str | os.PathLike[str], **kwargs: Any
    ) -> FlagHybridRetriever:
        """Read a file written by :meth:`save` (same model settings, or :class:`flag_core.IndexFileError`)."""
        retriever = cls(model_name=model_name, **kwargs)
        retriever._read_index(path)
        return retriever

    # retrieval ----------------------------------------------------------------------------------

    @contextmanager
    def _options(self, k: int | None, mode: str | None) -> Iterator[None]:
        token = _CALL.set((self, *search_options(k, mode, self.similarity_top_k, self.mode)))
        try:
            yield
        finally:
            _CALL.reset(token)

    def retrieve(
        self, str_or_query_bundle: QueryType, *, k: int | None = None, mode: str | None = None
    ) -> list[NodeWithScore]:
        """The best nodes for a query (a str or a QueryBundle): ``k`` of them (None: ``similarity_top_k``) ranked
        by ``mode`` (None: the retriever's ``mode``)."""
        with self._options(k, mode):
            return super().retrieve(str_or_query_bundle)

    async def aretrieve(
        self, str_or_query_bundle: QueryType, *, k: int | None = None, mode: str | None = None
    ) -> list[NodeWithScore]:
        """:meth:`retrieve`, in a worker thread so the event loop keeps running."""
        with self._options(k, mode):
            return await super().aretrieve(str_or_query_bundle)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        call = _CALL.get()
        k, mode = call[1:] if call is not None and call[0] is self else (self.similarity_top_k, self.mode)
        found = self.vector_store.query(VectorStoreQuery(query_str=query_bundle.query_str, similarity_top_k=k),
                                        mode=mode, weights=self.weights, candidates=self.candidates)
        # new nodes, with every mode's score in metadata["flagstack_scores"]: results are the caller's to edit
        return [NodeWithScore(node=node, score=score)
                for node, score in zip(found.nodes or [], found.similarities or [], strict=True)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await run_async(self._retrieve, query_bundle)
