"""LlamaIndex vector stores over flagstack's embedded indexes: exact dense search (:class:`FlagVectorStore`) and
BGE-M3 hybrid search (:class:`FlagHybridVectorStore`), with node ids, deletes, metadata filters applied inside the
index (exactly, before the top-k cut) and one checksummed file each (``persist`` / ``from_persist_path``).

Both keep text (``stores_text=True``: ``VectorStoreIndex.from_vector_store`` works, no docstore is needed) and give
back copies (editing a returned node changes nothing in the store). A node's id is its entry's id: adding a node whose
id is present replaces it. LlamaIndex's ``MetadataFilters`` are translated whole into flag_core's filter language
(:func:`metadata_filter`: every operator but TEXT_MATCH_INSENSITIVE, and/or/not, nested filters); one that cannot be
translated is a ValueError naming it, never ignored.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec
from llama_index.core.bridge.pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from flag_core.frameworks import (
    HybridIndexHolder,
    ModelName,
    as_model_name,
    check_mode,
    check_positive_int,
    expand_settings,
    run_async,
)
from flag_core.retrieval import (
    DEFAULT_CANDIDATES,
    DEFAULT_WEIGHTS,
    DenseIndex,
    HybridIndex,
    embedding_settings,
)
from flag_core.settings import M3Fields

from ._nodes import (
    DENSE_PAYLOADS,
    HYBRID_PAYLOADS,
    REF_DOC_FIELD,
    checked_nodes,
    keyed_by_node,
    metadata_filter,
    node_of,
    node_payload,
    restriction,
)

__all__ = ["FlagHybridVectorStore", "FlagVectorStore", "metadata_filter"]

DEFAULT_MMR_PREFETCH_FACTOR = 4.0  # as LlamaIndex's Milvus store: MMR picks among 4 x similarity_top_k candidates
_HYBRID_MODES = {
    VectorStoreQueryMode.HYBRID: "hybrid",
    VectorStoreQueryMode.SPARSE: "sparse",
    VectorStoreQueryMode.TEXT_SEARCH: "sparse",  # BGE-M3's lexical weights are its text search
}


def _options(kwargs: Mapping[str, Any], known: Sequence[str], method: str) -> dict[str, Any]:
    """The keyword options a method takes (None values left out), or a TypeError naming an unknown one."""
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        allowed = f"; it takes {', '.join(known)}" if known else ""
        raise TypeError(f"{method}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}{allowed}")
    return {key: value for key, value in kwargs.items() if value is not None}


def _query_mode(mode: Any) -> VectorStoreQueryMode:
    try:
        return VectorStoreQueryMode(mode)
    except ValueError:
        raise ValueError(f"unknown VectorStoreQuery mode {mode!r}") from None


def _check_fs(fs: Any) -> None:
    """flagstack writes and reads local files only (atomically, checksummed)."""
    if fs is not None and not isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        raise ValueError(f"flagstack's vector stores persist to local files; fs={type(fs).__name__} is not supported")


def _result(rows: Sequence[tuple[Mapping[str, Any], float, str]], scores: bool = False) -> VectorStoreQueryResult:
    """A query result of (payload copy, score, id) rows; with ``scores``, rows of a hybrid search whose payload carries
    every mode's score under "flagstack_scores"."""
    nodes = []
    for payload, _, _ in rows:
        node = node_of(payload)  # a new node: results are the caller's to edit
        if scores:
            node.metadata["flagstack_scores"] = payload["flagstack_scores"]
            node.excluded_embed_metadata_keys = [*node.excluded_embed_metadata_keys, "flagstack_scores"]
            node.excluded_llm_metadata_keys = [*node.excluded_llm_metadata_keys, "flagstack_scores"]
        nodes.append(node)
    return VectorStoreQueryResult(nodes=nodes, similarities=[float(score) for _, score, _ in rows],
                                  ids=[entry_id for _, _, entry_id in rows])


class _NodeStore:
    """What both stores do the same way over their index (a DenseIndex or a HybridIndex: ``get``, ``find``,
    ``delete``, ``ids``): fetch and delete nodes by id, by source document and by metadata filter, and the async
    twins, which run in a worker thread (:func:`flag_core.frameworks.run_async`) so the event loop keeps running."""

    def _entries(self) -> Any:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._entries())

    def __bool__(self) -> bool:  # an empty store is a store (LlamaIndex tests ``if vector_store:``)
        return True

    def _selected(self, node_ids: Sequence[str] | None, filters: MetadataFilters | None) -> list[str]:
        """The ids of the stored nodes among ``node_ids`` (None: all) that ``filters`` accepts."""
        entries = self._entries()
        spec = metadata_filter(filters)
        if node_ids is None:
            return entries.find(spec) if spec is not None else entries.ids  # type: ignore[no-any-return]
        if isinstance(node_ids, str):
            raise TypeError(f"node_ids must be a list of str, got one str ({node_ids!r}: wrap it in a list)")
        wanted = list(dict.fromkeys(node_ids))
        if spec is not None:
            allowed = set(entries.find(spec))
            wanted = [value for value in wanted if value in allowed]
        return wanted

    def get_nodes(
        self, node_ids: Sequence[str] | None = None, filters: MetadataFilters | None = None,
    ) -> list[BaseNode]:
        """Copies of the stored nodes with ``node_ids`` (in that order; ids not stored are left out; None: every node,
        in the order stored) that ``filters`` accepts (None: all)."""
        ids = self._selected(node_ids, filters)
        return [node_of(entry.payload) for entry in self._entries().get(ids)] if ids else []

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id`` (``node.ref_doc_id``)."""
        _options(delete_kwargs, (), "delete")
        if not isinstance(ref_doc_id, str):
            raise TypeError(f"ref_doc_id must be a str, got {type(ref_doc_id).__name__}")
        entries = self._entries()
        entries.delete(entries.find({REF_DOC_FIELD: {"$eq": ref_doc_id}}))

    def delete_nodes(
        self, node_ids: Sequence[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes with ``node_ids`` (None: every node) that ``filters`` accepts (None: all); as LlamaIndex's
        SimpleVectorStore, neither given deletes every node (``clear``)."""
        _options(delete_kwargs, (), "delete_nodes")
        ids = self._selected(node_ids, filters)
        if ids:
            self._entries().delete(ids)

    async def aget_nodes(
        self, node_ids: Sequence[str] | None = None, filters: MetadataFilters | None = None,
    ) -> list[BaseNode]:
        return await run_async(self.get_nodes, node_ids, filters)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await run_async(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self, node_ids: Sequence[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any,
    ) -> None:
        await run_async(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aclear(self) -> None:
        await run_async(self.clear)  # type: ignore[attr-defined]

    async def async_add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        return await run_async(self.add, nodes, **add_kwargs)  # type: ignore[attr-defined, no-any-return]

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await run_async(self.query, query, **kwargs)  # type: ignore[attr-defined, no-any-return]


class FlagVectorStore(_NodeStore, BasePydanticVectorStore):
    """Exact dense search over nodes' vectors (flag_core's DenseIndex: a numpy matrix product and a partial sort, or
    FAISS ``IndexFlatIP`` with ``use_faiss``; inner product, so cosine for normalised vectors such as BGE's).

    The vectors are the nodes' ``embedding`` (what ``VectorStoreIndex`` computes with its ``embed_model``) and a query
    is ``VectorStoreQuery.query_embedding``; ``similarity_top_k``, ``node_ids``, ``doc_ids`` and ``filters`` restrict
    it inside the index. ``VectorStoreQueryMode.MMR`` picks ``similarity_top_k`` of the ``mmr_prefetch_k`` (or
    ``mmr_prefetch_factor`` x top k, default 4) best by LlamaIndex's ``get_top_k_mmr_embeddings`` (``mmr_threshold``,
    default 0.5; the scores are MMR's, as in LlamaIndex's stores); other modes are refused (sparse and hybrid search:
    :class:`FlagHybridVectorStore`).

    ``embed_model`` (optional) records what made the vectors: its settings are saved with the file, and
    ``from_persist_path(path, embed_model=...)`` refuses a file made with other settings. The file format is
    ``llamaindex_flag.FlagRetriever``'s: a retriever's file loads here and a store's file loads into the retriever.
    ``to_dict`` / ``to_json`` carry the fields only, so they refuse (ValueError) a store holding nodes: persist it and
    read it with ``from_persist_path`` (``pickle`` and ``copy.deepcopy`` carry the nodes).

    Example:
        .. code-block:: python

            from llama_index.core import StorageContext, VectorStoreIndex
            from llamaindex_flag import FlagEmbedding, FlagVectorStore

            embed_model = FlagEmbedding(model_name="BAAI/bge-base-en-v1.5")
            store = FlagVectorStore(embed_model=embed_model)
            index = VectorStoreIndex.from_documents(
                documents, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed_model)
            store.persist("docs.flag")
            again = VectorStoreIndex.from_vector_store(FlagVectorStore.from_persist_path("docs.flag"),
                                                       embed_model=embed_model)
    """

    stores_text: bool = True
    is_embedding_query: bool = True
    flat_metadata: bool = False
    use_faiss: bool = Field(default=False, description="search with FAISS IndexFlatIP (same ranking) when unfiltered")

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    _dense: DenseIndex = PrivateAttr()

    def __init__(self, *, embed_model: Any = None, use_faiss: bool = False, **kwargs: Any) -> None:
        super().__init__(use_faiss=use_faiss, **kwargs)  # type: ignore[call-arg]  # this class's field
        self._dense = self._new_index(embedding_settings(embed_model) if embed_model is not None else {})

    def _new_index(self, settings: Mapping[str, Any]) -> DenseIndex:
        return DenseIndex(None, None, settings, self.use_faiss, DENSE_PAYLOADS)

    # pickles carry the nodes (LlamaIndex's BaseComponent would rebuild the store from its fields alone, empty)
    def __getstate__(self) -> dict[Any, Any]:
        return BaseModel.__getstate__(self)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        BaseModel.__setstate__(self, state)

    @classmethod
    def class_name(cls) -> str:
        return "FlagVectorStore"

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """The store's fields (``from_dict`` builds an empty store); a ValueError while it holds nodes, which the dict
        would lose."""
        held = len(self._dense)
        if held:
            raise ValueError(
                f"this FlagVectorStore holds {held} node(s) and to_dict carries none of them: persist(path) and read "
                "the file with FlagVectorStore.from_persist_path(path) (pickle and copy.deepcopy carry the nodes)"
            )
        return super().to_dict(**kwargs)

    @property
    def client(self) -> DenseIndex:
        """The flag_core DenseIndex holding the nodes."""
        return self._dense

    def _entries(self) -> DenseIndex:
        return self._dense

    @property
    def settings(self) -> dict[str, Any]:
        """The embedding settings saved with the file (those of ``embed_model``, or of the file read)."""
        return dict(self._dense.settings)

    def add(self, nodes: Sequence[BaseNode], *, embeddings: Sequence[Any] | None = None, **add_kwargs: Any
            ) -> list[str]:
        """Store nodes with their vectors (``node.embedding``, or ``embeddings``, one per node) under their ids,
        replacing nodes with those ids; returns the ids. The text kept is the node's embed text (``MetadataMode.EMBED``,
        what the vector was made from)."""
        _options(add_kwargs, (), "add")
        nodes = checked_nodes(nodes)
        if embeddings is None:
            for i, node in enumerate(nodes):
                if node.embedding is None:
                    raise ValueError(f"nodes[{i}] ({node.node_id!r}) has no embedding: add nodes through a "
                                     "VectorStoreIndex (its embed_model embeds them), or set node.embedding")
            vectors: Any = [node.embedding for node in nodes]
        else:
            vectors = list(embeddings)
            if len(vectors) != len(nodes):
                raise ValueError(f"{len(nodes)} nodes but {len(vectors)} embeddings: give one per node")
        if not nodes:
            return []
        texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
        return self._dense.add_embedded(vectors, texts, [node_payload(node) for node in nodes],
                                        [node.node_id for node in nodes], replace=True)

    def clear(self) -> None:
        """Delete every node (the embedding settings stay)."""
        self._dense = self._new_index(self._dense.settings)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nodes nearest to ``query.query_embedding`` among those ``node_ids``, ``doc_ids``
        and ``filters`` allow (exactly: restricted before the top-k cut), best first. Options (keywords, or an index
        retriever's ``vector_store_kwargs``): ``mmr_threshold``, ``mmr_prefetch_k``, ``mmr_prefetch_factor``."""
        options = _options(kwargs, ("mmr_threshold", "mmr_prefetch_k", "mmr_prefetch_factor"), "query")
        mode = _query_mode(query.mode)
        if mode not in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR):
            raise ValueError(f"FlagVectorStore answers default and mmr queries, not {mode.value!r}; BGE-M3 sparse and "
                             "hybrid search is FlagHybridVectorStore")
        if query.query_embedding is None:
            raise ValueError("FlagVectorStore searches by query.query_embedding, which is None (a VectorStoreIndex "
                             "retriever embeds the query with its embed_model)")
        k = check_positive_int(query.similarity_top_k, "similarity_top_k", allow_none=False)
        spec = restriction(query.filters, query.node_ids, query.doc_ids)  # checked before any search
        dense = self._dense
        if mode == VectorStoreQueryMode.MMR:
            return self._mmr(dense, query, k, spec, options)
        hits = dense.search_by_vector(query.query_embedding, k, spec)
        return _result([(hit.payload, hit.score, hit.id) for hit in hits])

    @staticmethod
    def _mmr(
        dense: DenseIndex, query: VectorStoreQuery, k: int, spec: Any, options: Mapping[str, Any],
    ) -> VectorStoreQueryResult:
        if "mmr_prefetch_k" in options and "mmr_prefetch_factor" in options:
            raise ValueError("give mmr_prefetch_k or mmr_prefetch_factor, not both")
        if "mmr_prefetch_k" in options:
            fetch = check_positive_int(options["mmr_prefetch_k"], "mmr_prefetch_k", allow_none=False)
        else:
            factor = options.get("mmr_prefetch_factor", DEFAULT_MMR_PREFETCH_FACTOR)
            if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor >= 1:
                raise ValueError(f"mmr_prefetch_factor must be a number >= 1, got {factor!r}")
            fetch = math.ceil(k * factor)
        threshold = options.get("mmr_threshold", query.mmr_threshold)
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)
                                      or not 0 <= threshold <= 1):
            raise ValueError(f"mmr_threshold must be a number from 0 to 1, got {threshold!r}")
        hits = dense.search_by_vector(query.query_embedding, max(fetch, k), spec, vectors=True)
        if not hits:
            return _result([])
        assert query.query_embedding is not None
        scores, ids = get_top_k_mmr_embeddings(
            list(query.query_embedding), [hit.vector.tolist() for hit in hits],  # type: ignore[union-attr]
            similarity_top_k=k, embedding_ids=[hit.id for hit in hits], mmr_threshold=threshold)
        by_id = {hit.id: hit for hit in hits}
        return _result([(by_id[entry_id].payload, score, entry_id)
                        for score, entry_id in zip(scores, ids, strict=True)])

    def persist(self, persist_path: str, fs: fsspec.AbstractFileSystem | None = None) -> None:
        """Write every node, its vector and the embedding settings to one file, atomically (checksummed; the folder is
        made if needed). ``fs`` may only be a local file system."""
        _check_fs(fs)
        folder = os.path.dirname(os.path.abspath(os.fspath(persist_path)))
        os.makedirs(folder, exist_ok=True)
        self._dense.save(persist_path)

    @classmethod
    def from_persist_path(
        cls, persist_path: str | os.PathLike[str], fs: fsspec.AbstractFileSystem | None = None, *,
        embed_model: Any = None, use_faiss: bool = False,
    ) -> FlagVectorStore:
        """Read a file written by :meth:`persist` or by ``llamaindex_flag.FlagRetriever.save`` (every part checked: a
        damaged file is an :class:`flag_core.IndexFileError` naming it). With ``embed_model``, the file must have
        been made with its settings (else an IndexFileError naming the setting)."""
        _check_fs(fs)
        store = cls(embed_model=embed_model, use_faiss=use_faiss)
        # without an embed_model the file's settings are kept unchecked (persisting again keeps them)
        settings = store._dense.settings if embed_model is not None else None
        dense = DenseIndex.load(persist_path, None, None, settings, use_faiss, DENSE_PAYLOADS)
        keyed = keyed_by_node(dense.index)
        if keyed is not None:
            dense.index = keyed
        store._dense = dense
        return store


def rekey_hybrid(holder: HybridIndexHolder) -> None:
    """After a hybrid holder read its file: key its entries by node id (:func:`~._nodes.keyed_by_node`) where they are
    not; the file then no longer holds the index as it is (``in_file()`` is false until saved)."""
    index: HybridIndex = holder._index
    keyed = keyed_by_node(index.dense)
    if keyed is not None:
        index.dense = keyed
        holder._saved_revision = None


def m3_keywords(
    model_name: Any, settings: dict[str, Any], m3_settings: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], Any]:
    """The BGE-M3 settings of a hybrid retriever's or store's constructor as keyword arguments (``m3_settings={...}``
    expanded) and its model name, which is required."""
    model_name = as_model_name(model_name)
    if model_name is None:
        raise ValueError("model_name is required: a BGE-M3 hub id or folder (str or os.PathLike)")
    return expand_settings(settings, m3_settings, M3Fields.model_fields, "m3_settings"), model_name


class FlagHybridVectorStore(_NodeStore, HybridIndexHolder, BasePydanticVectorStore, M3Fields):
    """BGE-M3 hybrid search over nodes (flag_core's HybridIndex): each node's embed text (``MetadataMode.EMBED``) is
    encoded here, all three outputs in one pass (dense, lexical weights, ColBERT), so ``node.embedding`` is not
    needed and not used (a ``VectorStoreIndex`` still embeds nodes with its ``embed_model``: any cheap one will do,
    e.g. ``MockEmbedding(embed_dim=1)``), and a query is ``VectorStoreQuery.query_str`` (``is_embedding_query`` is
    false: the index's retriever embeds nothing).

    A query takes the ``candidates`` best by dense and by sparse score among the nodes ``node_ids``, ``doc_ids`` and
    ``filters`` allow, rescores them with ColBERT and ranks by the mode: ``VectorStoreQuery.mode`` DEFAULT is the
    store's ``mode`` (dense, sparse, colbert, sparse+dense or hybrid), HYBRID is "hybrid", SPARSE and TEXT_SEARCH are
    "sparse" (BGE-M3's lexical matching); other modes are refused. ``mode``, ``weights`` (dense, sparse, colbert) and
    ``candidates`` may also be given per query (keywords of ``query``, or ``vector_store_kwargs`` of the index's
    retriever); ``sparse_top_k`` is read as ``candidates`` and, in HYBRID mode, ``hybrid_top_k`` as the number
    returned; ``alpha`` is refused (use ``weights``). Each returned node's ``metadata["flagstack_scores"]`` holds every
    mode's score (excluded from the embed and LLM text).

    Settings: ``model_name`` and :class:`flag_core.settings.M3Fields` (``devices``, ``passage_max_length``, ...; or a
    dict of them as ``m3_settings={...}``), ``mode``, ``weights``, ``candidates``, ``colbert_storage``, exactly as
    :class:`~llamaindex_flag.FlagHybridRetriever` takes them; the file format is the retriever's, and
    ``FlagHybridRetriever.vector_store`` is a store over the retriever's own index. ``to_dict`` / ``from_dict`` (and
    the JSON twins) refer to the file (``index_path``), never inline the nodes: ``to_dict`` of a store holding nodes
    that are not in that file as they are (``in_file()`` false: never persisted, or changed since) is a ValueError.

    Example:
        .. code-block:: python

            from llama_index.core import StorageContext, VectorStoreIndex
            from llama_index.core.embeddings import MockEmbedding
            from llamaindex_flag import FlagHybridVectorStore

            store = FlagHybridVectorStore(model_name="BAAI/bge-m3", mode="hybrid")
            index = VectorStoreIndex.from_documents(documents, embed_model=MockEmbedding(embed_dim=1),
                                                    storage_context=StorageContext.from_defaults(vector_store=store))
            nodes = index.as_retriever(similarity_top_k=5).retrieve("what do pandas eat?")
            store.persist("docs.flag")
            again = FlagHybridVectorStore.from_persist_path("docs.flag", model_name="BAAI/bge-m3")
    """

    stores_text: bool = True
    is_embedding_query: bool = False
    flat_metadata: bool = False
    model_name: ModelName = Field(description="hub id or local folder of the BGE-M3 model (str or os.PathLike)")

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    payloads = HYBRID_PAYLOADS

    def __init__(
        self,
        model_name: str | os.PathLike[str] | None = None,
        *,
        mode: str = "hybrid",
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        candidates: int = DEFAULT_CANDIDATES,
        colbert_storage: str | None = None,
        index_path: str | os.PathLike[str] | None = None,
        m3_settings: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        settings, model_name = m3_keywords(model_name, settings, m3_settings)
        settings.update(model_name=model_name, mode=mode, weights=weights, candidates=candidates,
                        colbert_storage=colbert_storage, index_path=index_path)
        super().__init__(**settings)

    @classmethod
    def class_name(cls) -> str:
        return "FlagHybridVectorStore"

    @classmethod
    def sharing(cls, holder: HybridIndexHolder) -> FlagHybridVectorStore:
        """A store over ``holder``'s index (the same object: a node added through either is in both), with its model
        and search settings (``holder``: a :class:`~llamaindex_flag.FlagHybridRetriever`)."""
        settings = M3Fields.m3_settings(holder)  # type: ignore[arg-type]
        store = cls(holder.model_name, mode=holder.mode, weights=holder.weights,  # type: ignore[attr-defined]
                    candidates=holder.candidates, colbert_storage=holder.colbert_storage, **settings)
        store._index = holder._index
        store.index_path = holder.index_path
        store._saved_revision = holder._saved_revision
        return store

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """The settings and ``index_path`` (``from_dict`` reads the nodes from the file); a ValueError while the
        store holds nodes that are not in the file as they are."""
        if not self.in_file():
            raise ValueError(
                f"this store holds {len(self)} nodes that are not all in a file as they are: persist(path) first; "
                "to_dict refers to the nodes by index_path, never inlines them"
            )
        return super().to_dict(**kwargs)

    @property
    def client(self) -> HybridIndex:
        """The flag_core HybridIndex holding the nodes."""
        return self._index

    def _entries(self) -> HybridIndex:
        return self._index

    def _read_index(self, path: str | os.PathLike[str]) -> None:
        super()._read_index(path)
        rekey_hybrid(self)

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Encode nodes' embed text (all three outputs, one pass) and store them under their ids, replacing nodes with
        those ids; returns the ids (``node.embedding`` is not used)."""
        _options(add_kwargs, (), "add")
        nodes = checked_nodes(nodes)
        if not nodes:
            return []
        texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
        return self._index.upsert(texts, [node_payload(node) for node in nodes], [node.node_id for node in nodes])

    def clear(self) -> None:
        """Delete every node (the index object stays: a retriever sharing it sees it empty)."""
        self._index.delete(self._index.ids)

    def _search_mode(self, mode: Any) -> str:
        query_mode = _query_mode(mode)
        if query_mode == VectorStoreQueryMode.DEFAULT:
            return self.mode
        if query_mode in _HYBRID_MODES:
            return _HYBRID_MODES[query_mode]
        raise ValueError(f"FlagHybridVectorStore answers default, hybrid, sparse and text_search queries, not "
                         f"{query_mode.value!r} (mode= picks dense, sparse, colbert, sparse+dense or hybrid)")

    def query(
        self, query: VectorStoreQuery, *, mode: str | None = None, weights: Sequence[float] | None = None,
        candidates: int | None = None, **kwargs: Any,
    ) -> VectorStoreQueryResult:
        """The best nodes for ``query.query_str`` (see the class docstring for modes and options)."""
        _options(kwargs, (), "query")
        search_mode = self._search_mode(query.mode)  # an unanswerable mode is refused even when mode= is given
        if mode is not None:
            search_mode = check_mode(mode)
        if query.query_str is None:
            raise ValueError("FlagHybridVectorStore searches by query.query_str, which is None")
        if query.alpha is not None:
            raise ValueError("alpha has no meaning for BGE-M3's fusion; give weights=(dense, sparse, colbert)")
        top = query.hybrid_top_k if query.mode == VectorStoreQueryMode.HYBRID and query.hybrid_top_k else None
        k = check_positive_int(top or query.similarity_top_k, "similarity_top_k", allow_none=False)
        if candidates is None:
            candidates = query.sparse_top_k if query.sparse_top_k is not None else self.candidates
        spec = restriction(query.filters, query.node_ids, query.doc_ids)
        hits = self._index.search(query.query_str, k, search_mode, self.weights if weights is None else weights,
                                  candidates, filter=spec)
        return _result([({**hit.payload, "flagstack_scores": hit.scores}, hit.score, hit.id) for hit in hits],
                       scores=True)

    def persist(self, persist_path: str, fs: fsspec.AbstractFileSystem | None = None) -> None:
        """Write every node with its three outputs and the model settings to one file, atomically (checksummed; the
        folder is made if needed); it becomes ``index_path``. ``fs`` may only be a local file system."""
        _check_fs(fs)
        os.makedirs(os.path.dirname(os.path.abspath(os.fspath(persist_path))), exist_ok=True)
        self.save(persist_path)

    @classmethod
    def from_persist_path(
        cls, persist_path: str | os.PathLike[str], model_name: str | os.PathLike[str] | None = None,
        fs: fsspec.AbstractFileSystem | None = None, **kwargs: Any,
    ) -> FlagHybridVectorStore:
        """Read a file written by :meth:`persist` or ``FlagHybridRetriever.save``, built with the model ``model_name``
        and the settings given (as the constructor takes them); a file of other settings, or a damaged one, is an
        :class:`flag_core.IndexFileError`."""
        _check_fs(fs)
        store = cls(model_name, **kwargs)
        store._read_index(persist_path)
        return store
