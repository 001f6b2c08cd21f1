"""An encoder for MTEB (2.x and 1.x), so MTEB/C-MTEB tasks run on flagstack's runtime.

    import mteb
    from flag_core import FlagAutoModel
    from flag_core.mteb_encoder import MTEBEncoder

    encoder = MTEBEncoder(FlagAutoModel.from_finetuned("BAAI/bge-base-zh-v1.5"))
    results = mteb.evaluate(encoder, tasks=mteb.get_tasks(tasks=["T2Retrieval"]))  # mteb 2.x
    # mteb 1.x: mteb.MTEB(tasks=[...]).run(encoder)

Queries (MTEB's ``prompt_type="query"``) get the model's query instruction; documents and everything
else are encoded as passages. mteb downloads its datasets itself, so this needs the hub.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .inference.embedder import FlagModel, Side


def _texts(inputs: Any) -> list[str]:
    """MTEB hands a list of str (1.x) or batches of {"text": [...]} from a DataLoader (2.x)."""
    if isinstance(inputs, str):
        return [inputs]
    items = list(inputs) if isinstance(inputs, Iterable) else None
    if items is None:
        raise TypeError(f"MTEB inputs must be texts or batches of texts, got {type(inputs).__name__}")
    if all(isinstance(item, str) for item in items):
        return items
    texts: list[str] = []
    for i, batch in enumerate(items):
        if not isinstance(batch, Mapping) or "text" not in batch:
            raise TypeError(f"MTEB input batch {i} has no 'text' field (got {type(batch).__name__})")
        texts.extend(batch["text"])
    return texts


class MTEBEncoder:
    """Wraps a flag_core embedder in the interface MTEB evaluates (``encode`` and ``similarity``)."""

    def __init__(self, model: FlagModel) -> None:
        self.model = model

    @property
    def mteb_model_meta(self) -> Any:
        """What mteb records about the model (its name and embedding size; the rest unknown), so that
        ``mteb.evaluate`` runs this object rather than looking a model up by name."""
        from mteb.models.model_meta import ModelMeta

        name = os.path.basename(self.model.model_name_or_path.rstrip("/\\")) or "model"
        return ModelMeta.create_empty(
            {"name": f"flagstack/{name}", "revision": "local", "embed_dim": self.model.dimension,
             "max_tokens": self.model.passage_max_length, "similarity_fn_name": "cosine"}
        )

    def encode(self, inputs: Any, *, prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        """Vectors of the inputs; queries when ``prompt_type`` is "query", passages otherwise."""
        texts = _texts(inputs)
        side: Side = "query" if getattr(prompt_type, "value", prompt_type) == "query" else "passage"
        return np.asarray(self.model.encode_as(side, texts), dtype=np.float32)

    @staticmethod
    def similarity(a: Any, b: Any) -> np.ndarray:
        """Cosine similarity of every row of ``a`` with every row of ``b``."""
        a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return a @ b.T

    @staticmethod
    def similarity_pairwise(a: Any, b: Any) -> np.ndarray:
        """Cosine similarity of row i of ``a`` with row i of ``b``."""
        a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
        norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        return (a * b).sum(axis=1) / norms
