"""How llamaindex_flag keeps LlamaIndex nodes in flag_core's indexes (shared by the vector stores and retrievers).

Every entry's payload is ``{"node": doc_to_json(node)}`` (the embedding left out: the index holds the vector) and its
id is the node's id. Filters read the node's data (``id_``, ``metadata``, ``relationships``, ...): LlamaIndex's
``MetadataFilters`` become flag_core filters on ``metadata.<key>`` (on the source document's id for the keys
``ref_doc_id``, ``doc_id`` and ``document_id``: :func:`metadata_filter`), a ``node_ids`` restriction one on ``id_`` and
a ``doc_ids`` restriction one on the source document's id, so every restriction is applied inside the index, exactly,
before the top-k cut.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from llama_index.core.schema import BaseNode, NodeRelationship
from llama_index.core.storage.docstore.utils import doc_to_json, json_to_doc
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

from flag_core.frameworks import as_item_list
from flag_core.retrieval import PayloadFormat, VectorIndex, new_id

__all__ = [
    "DENSE_PAYLOADS",
    "HYBRID_PAYLOADS",
    "REF_DOC_FIELD",
    "REF_DOC_KEYS",
    "check_node_payload",
    "checked_nodes",
    "keyed_by_node",
    "metadata_filter",
    "node_of",
    "node_payload",
    "restriction",
]

REF_DOC_FIELD = f"relationships.{NodeRelationship.SOURCE.value}.node_id"
"""Where a node's source document id (``node.ref_doc_id``) sits in its data, as a filter field."""
REF_DOC_KEYS = ("ref_doc_id", "doc_id", "document_id")
"""The filter keys that name the source document's id: LlamaIndex's stores (SimpleVectorStore, Qdrant, ...) keep it
under these keys beside the metadata (``node_to_metadata_dict``), replacing any metadata field so named."""


def node_payload(node: BaseNode) -> dict[str, Any]:
    """The payload that keeps ``node`` in an index: its ``doc_to_json`` form, without the embedding."""
    data = doc_to_json(node)  # a fresh dict: the caller's node is not touched
    data["__data__"]["embedding"] = None
    return {"node": data}


def node_of(payload: Mapping[str, Any]) -> BaseNode:
    """The node a payload keeps (a new object: editing it changes neither the index nor the payload)."""
    return json_to_doc(payload["node"])


def node_data(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """What filters read of a payload: the node's data (``id_``, ``metadata``, ``relationships``, ...)."""
    return payload["node"]["__data__"]  # type: ignore[no-any-return]


def node_id_of(payload: Mapping[str, Any]) -> Any:
    """The id of the node a payload keeps (the entry id of a file written before entries had ids)."""
    return payload["node"]["__data__"]["id_"]


def check_node_shape(payload: dict[str, Any]) -> None:
    """A payload the dense store can use: a ``doc_to_json`` form with an id and a metadata dict (a cheap check: a
    large file loads in about the time its bytes take); else a ValueError."""
    node = payload.get("node")
    data = node.get("__data__") if isinstance(node, dict) else None
    if not isinstance(data, dict) or "__type__" not in node:  # type: ignore[operator]
        raise ValueError("not a LlamaIndex node (no doc_to_json form)")
    if not isinstance(data.get("id_"), str) or not isinstance(data.get("metadata"), dict):
        raise ValueError("a LlamaIndex node without an id or a metadata dict")


def check_node_payload(payload: dict[str, Any]) -> None:
    """A node's payload in an index: what ``doc_to_json`` wrote, which ``json_to_doc`` reads; else a ValueError."""
    try:
        json_to_doc(payload["node"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a LlamaIndex node ({type(exc).__name__}: {exc})") from exc
    check_node_shape(payload)


# the dense store and FlagRetriever share files (one format name); so do the hybrid store and FlagHybridRetriever
DENSE_PAYLOADS = PayloadFormat("llamaindex_flag.FlagRetriever", keys=("node",), check=check_node_shape,
                               metadata=node_data, legacy_id=node_id_of)
HYBRID_PAYLOADS = PayloadFormat("llamaindex_flag.FlagHybridRetriever", keys=("node",), check=check_node_payload,
                                metadata=node_data, legacy_id=node_id_of)


def checked_nodes(nodes: Iterable[BaseNode]) -> list[BaseNode]:
    """``nodes`` as a list, or a TypeError naming the first item that is not a LlamaIndex node."""
    items: list[BaseNode] = as_item_list(nodes, BaseNode, "nodes", "a LlamaIndex node")
    return items


def keyed_by_node(index: VectorIndex) -> VectorIndex | None:
    """For an index read from a file whose entry ids are not its nodes' ids (written before the stores kept node ids
    as entry ids): the same entries keyed by their nodes' ids (where a node id is taken by an earlier entry, the
    entry keeps its own id and its node gets that id), so that a node's id always names its entry; None when every
    entry is keyed by its node's id already."""
    node_ids: list[Any] = []

    def note(row: dict[str, Any]) -> bool:  # every row, in position order
        node_ids.append(node_id_of(row["payload"]))
        return False

    index.find(note)
    ids = index.ids
    if node_ids == ids:
        return None
    taken: set[str] = set()
    keyed: list[str] = []
    for entry_id, node_id in zip(ids, node_ids, strict=True):
        chosen = node_id if isinstance(node_id, str) and node_id and node_id not in taken else (
            entry_id if entry_id not in taken else new_id())
        keyed.append(chosen)
        taken.add(chosen)
    rows = index.payloads  # copies, edited here
    for row, chosen in zip(rows, keyed, strict=True):
        row["payload"]["node"]["__data__"]["id_"] = chosen
    fixed = VectorIndex.restored(np.array(index.vectors), rows, keyed, use_faiss=index.use_faiss)
    fixed.dim, fixed.payload_format = index.dim, index.payload_format
    return fixed


# LlamaIndex's MetadataFilters in flag_core's filter language --------------------------------------------------------

_COMPARE = {FilterOperator.EQ: "$eq", FilterOperator.NE: "$ne", FilterOperator.GT: "$gt",
            FilterOperator.GTE: "$gte", FilterOperator.LT: "$lt", FilterOperator.LTE: "$lte"}
_RANGES = ("$gt", "$gte", "$lt", "$lte")
_MAPPED = (*_COMPARE, FilterOperator.IN, FilterOperator.NIN, FilterOperator.CONTAINS, FilterOperator.TEXT_MATCH,
           FilterOperator.ANY, FilterOperator.ALL, FilterOperator.IS_EMPTY)
_OPERATORS = ", ".join(op.name for op in _MAPPED)


def metadata_filter(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """``filters`` (LlamaIndex ``MetadataFilters``, nested ones too) as a flag_core filter over the node's data
    (None: no filter); every operator is mapped exactly, and one that cannot be is a ValueError naming it:

    ======================  ==========================================================================
    LlamaIndex              flag_core (``k`` is ``metadata.<key>``)
    ======================  ==========================================================================
    EQ, NE                  ``{k: {"$eq": v}}``, ``{k: {"$ne": v}}`` (v None: ``{k: {"$in": []}}``,
                            ``{k: {"$nin": []}}``: EQ matches no node, NE every node, as LlamaIndex)
    GT, GTE, LT, LTE        ``{k: {"$gt": v}}`` ... (numbers with numbers, strings with strings)
    IN, NIN                 ``{k: {"$in": [...]}}``, ``{k: {"$nin": [...]}}`` (None left out of the list)
    CONTAINS                ``{k: {"$contains": v}}`` (a list holding v, or a str holding the substring)
    TEXT_MATCH              ``{k: {"$gte": "", "$contains": v}}`` (a str field holding the substring v)
    ANY, ALL                ``{"$or" / "$and": [{k: {"$contains": x}} for x in v]}`` (``[]``: ANY matches
                            nothing, ALL every node whose field is set and not null, as LlamaIndex)
    IS_EMPTY                ``{"$or": [{k: {"$exists": False}}, {k: {"$in": [None, "", []]}}]}``
    TEXT_MATCH_INSENSITIVE  ValueError (flag_core's filters do not fold case)
    AND, OR                 ``{"$and": [...]}``, ``{"$or": [...]}``
    NOT                     ``{"$not": {"$or": [...]}}`` (none of the filters holds, as LlamaIndex reads it)
    ======================  ==========================================================================

    As LlamaIndex reads them, a missing field and a null one match only NE, NIN and IS_EMPTY, and a null filter value
    matches no field (so EQ None matches nothing: IS_EMPTY finds missing and null fields); unlike LlamaIndex's Python
    comparisons, a bool never equals a number (flag_core's rule: ``True`` is not ``1``). An empty filter list
    restricts nothing. The keys ``ref_doc_id``, ``doc_id`` and ``document_id`` name the node's source document id
    (``node.ref_doc_id``), as in LlamaIndex's stores. A key is a metadata field's whole name, dots and all
    (``"file.name"``), as LlamaIndex reads it; where no field is named so, a dotted key reads nested metadata
    (``"source.page"``: ``metadata["source"]["page"]``), as flag_core's filters do."""
    if filters is None:
        return None
    spec = _filters(filters, "filters")
    return spec or None


def _filters(filters: Any, where: str) -> dict[str, Any]:
    if not isinstance(filters, MetadataFilters):
        raise TypeError(f"{where} must be LlamaIndex MetadataFilters, got {type(filters).__name__}")
    if not filters.filters:
        return {}
    parts = [_filters(item, f"{where}.filters[{i}]") if isinstance(item, MetadataFilters)
             else _filter(item, f"{where}.filters[{i}]") for i, item in enumerate(filters.filters)]
    condition = filters.condition if filters.condition is not None else FilterCondition.AND
    if condition == FilterCondition.AND:
        return {"$and": parts}
    if condition == FilterCondition.OR:
        return {"$or": parts}
    if condition == FilterCondition.NOT:
        return {"$not": {"$or": parts}}
    raise ValueError(f"{where}: FilterCondition {condition!r} cannot be mapped to flagstack's filters; use and, or "
                     "or not")


def _filter(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, MetadataFilter):
        raise TypeError(f"{where} must be a LlamaIndex MetadataFilter or MetadataFilters, got {type(item).__name__}")
    value = item.value
    try:
        op = FilterOperator(item.operator)
    except ValueError:
        raise ValueError(f"{where}: FilterOperator {item.operator!r} cannot be mapped to flagstack's filters; the "
                         f"operators are {_OPERATORS}") from None
    if not isinstance(item.key, str):
        raise TypeError(f"{where}: the key must be a str, got {item.key!r}")
    key = REF_DOC_FIELD if item.key in REF_DOC_KEYS else f"metadata.{item.key}"
    name = op.name
    if op == FilterOperator.IS_EMPTY:
        return {"$or": [{key: {"$exists": False}}, {key: {"$in": [None, "", []]}}]}
    if op in _COMPARE:
        flag = _COMPARE[op]
        if flag in _RANGES and (not _scalar(value) or value is None):
            raise ValueError(f"{where}: {name} compares a number or a str, got {value!r}")
        if value is None and flag in ("$eq", "$ne"):  # null equals no field (LlamaIndex): EQ none, NE every node
            return {key: {"$in" if flag == "$eq" else "$nin": []}}
        return {key: {flag: value}}
    if op in (FilterOperator.IN, FilterOperator.NIN):
        values = [v for v in _values(value, name, where) if v is not None]  # null equals no field, as above
        return {key: {"$in" if op == FilterOperator.IN else "$nin": values}}
    if op == FilterOperator.CONTAINS:
        if value is None:
            raise ValueError(f"{where}: CONTAINS needs a value, got None")
        return {key: {"$contains": value}}
    if op == FilterOperator.TEXT_MATCH:
        if not isinstance(value, str):
            raise ValueError(f"{where}: TEXT_MATCH needs a str to look for, got {value!r}")
        return {key: {"$gte": "", "$contains": value}}  # "$gte": "" holds for every str and nothing else
    if op in (FilterOperator.ANY, FilterOperator.ALL):
        values = _values(value, name, where)
        if not values:
            return {"$not": {}} if op == FilterOperator.ANY else {key: {"$exists": True, "$ne": None}}
        return {"$or" if op == FilterOperator.ANY else "$and": [{key: {"$contains": v}} for v in values]}
    if op == FilterOperator.TEXT_MATCH_INSENSITIVE:
        raise ValueError(f"{where}: FilterOperator.TEXT_MATCH_INSENSITIVE cannot be mapped to flagstack's filters "
                         "(they do not fold case); keep a lower-cased copy of the field and use TEXT_MATCH")
    raise ValueError(f"{where}: FilterOperator.{name} cannot be mapped to flagstack's filters; the operators are "
                     f"{_OPERATORS}")


def _scalar(value: Any) -> bool:
    return not isinstance(value, list | tuple | dict)


def _values(value: Any, name: str, where: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where}: {name} takes a list of values, got {value!r}")
    return list(value)


def restriction(
    filters: MetadataFilters | None, node_ids: Sequence[str] | None = None, doc_ids: Sequence[str] | None = None,
) -> dict[str, Any] | None:
    """One flag_core filter for a query's ``filters``, ``node_ids`` and ``doc_ids`` (source document ids); an empty
    or None list restricts nothing, a non-empty one restricts to the nodes listed. A ``VectorStoreIndex`` retriever
    gives as ``node_ids`` the ids in its index struct: none for a store that keeps text, until an ``IndexNode`` is
    inserted; from then on every query of ``index.as_retriever()`` finds only the IndexNodes, as over LlamaIndex's
    Qdrant and Milvus stores, which read ``node_ids`` the same way (``VectorIndexRetriever(index)``, without
    ``node_ids``, searches every node)."""
    parts = []
    spec = metadata_filter(filters)
    if spec is not None:
        parts.append(spec)
    if node_ids:
        parts.append({"id_": {"$in": as_item_list(node_ids, str, "node_ids", "str")}})
    if doc_ids:
        parts.append({REF_DOC_FIELD: {"$in": as_item_list(doc_ids, str, "doc_ids", "str")}})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}
