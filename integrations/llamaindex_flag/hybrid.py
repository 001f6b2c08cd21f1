"""FlagHybridRetriever: BGE-M3 dense + sparse candidates and ColBERT rescoring over LlamaIndex nodes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.storage.docstore.utils import doc_to_json, json_to_doc

from flag_core import build_m3
from flag_core.inference.inputs import as_model_name, check_positive_int
from flag_core.retrieval import HybridIndex, PayloadFormat
from flag_core.retrieval.hybrid import DEFAULT_CANDIDATES, DEFAULT_WEIGHTS, MODES, check_weights


def check_node_payload(payload: dict[str, Any]) -> None:
    """A node's payload in an index: what ``doc_to_json`` wrote, which ``json_to_doc`` reads; else a ValueError."""
    try:
        json_to_doc(payload["node"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a LlamaIndex node ({type(exc).__name__}: {exc})") from exc


PAYLOADS = PayloadFormat("llamaindex_flag.FlagHybridRetriever", keys=("node",), check=check_node_payload)


class FlagHybridRetriever(BaseRetriever):
    """The ``similarity_top_k`` nodes by BGE-M3's three outputs: the ``candidates`` best by dense and by sparse
    score, rescored with ColBERT (candidates only) and ranked by ``mode`` with ``weights`` (dense, sparse,
    colbert). The node's score is the ranking score; ``metadata["flagstack_scores"]`` of the returned copy holds
    every mode's. ``m3_settings`` go to :func:`flag_core.build_m3` (e.g. ``devices``, ``passage_max_length``).
    ``model_name`` is a hub id or a folder (str or os.PathLike). ``copy.deepcopy`` and ``pickle`` copy the nodes
    and share the loaded model (built again through :func:`flag_core.build_m3`, never copied).

    Example:
        .. code-block:: python

            from llamaindex_flag import FlagHybridRetriever

            retriever = FlagHybridRetriever(nodes=nodes, model_name="BAAI/bge-m3", similarity_top_k=5)
            results = retriever.retrieve("what do pandas eat?")
    """

    def __init__(
        self,
        nodes: Sequence[BaseNode] | None = None,
        model_name: str | os.PathLike[str] | None = None,
        similarity_top_k: int = 2,
        mode: str = "hybrid",
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        candidates: int = DEFAULT_CANDIDATES,
        m3_settings: dict[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        model_name = as_model_name(model_name)
        if not isinstance(model_name, str):
            raise ValueError("model_name is required: a BGE-M3 hub id or folder (str or os.PathLike)")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.model_name = model_name
        self.similarity_top_k = check_positive_int(similarity_top_k, "similarity_top_k", allow_none=False)
        self.mode = mode
        self.weights = check_weights(weights)
        self.candidates = check_positive_int(candidates, "candidates", allow_none=False)
        self.m3_settings = dict(m3_settings or {})
        self._index = HybridIndex(build_m3(model_name, **self.m3_settings), payload_format=PAYLOADS)
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        if nodes:
            self.add_nodes(nodes)

    def __len__(self) -> int:
        return len(self._index)

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the model: the index's documents travel without it (see the class docstring)."""
        state = dict(self.__dict__)
        state["_index"] = self._index.detached()
        return state

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        state = dict(state)
        documents = state.pop("_index")
        self.__dict__.update(state)
        self._index = HybridIndex.attached(build_m3(self.model_name, **self.m3_settings), documents)

    def add_nodes(self, nodes: Sequence[BaseNode]) -> None:
        """Encode (with ``MetadataMode.EMBED``, all three outputs) and index more nodes."""
        nodes = list(nodes)
        for i, node in enumerate(nodes):
            if not isinstance(node, BaseNode):
                raise TypeError(f"nodes[{i}] is {type(node).__name__}, expected a LlamaIndex node")
        texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
        self._index.add(texts, [{"node": doc_to_json(node)} for node in nodes])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write every output, the nodes and the model settings to one file, atomically."""
        self._index.save(path)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], model_name: str | os.PathLike[str], **kwargs: Any
    ) -> FlagHybridRetriever:
        """Read a file written by :meth:`save` (same model settings, or :class:`flag_core.IndexFileError`)."""
        retriever = cls(model_name=model_name, **kwargs)
        retriever._index = HybridIndex.load(path, retriever._index.model, PAYLOADS)
        return retriever

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self._index.search(query_bundle.query_str, self.similarity_top_k, self.mode, self.weights,
                                  self.candidates)
        results = []
        for hit in hits:
            node = json_to_doc(hit.payload["node"])  # a fresh copy: results are the caller's to edit
            node.metadata["flagstack_scores"] = hit.scores
            node.excluded_embed_metadata_keys = [*node.excluded_embed_metadata_keys, "flagstack_scores"]
            node.excluded_llm_metadata_keys = [*node.excluded_llm_metadata_keys, "flagstack_scores"]
            results.append(NodeWithScore(node=node, score=hit.score))
        return results

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)
