"""One encoding of each text for every BGE-M3 output a store keeps.

A hybrid vector store asks its embeddings one output at a time: LangChain's ``QdrantVectorStore`` calls the dense
embeddings and then the sparse ones on the same batch; LlamaIndex embeds every node densely first and asks the
sparse function afterwards, batch by batch or node by node. :class:`OnePass` (one per :class:`~.m3.BGEM3FlagModel`,
``model.one_pass``) turns those separate asks into one encoding: the first ask for a text computes every output its
consumers have registered (:meth:`OnePass.serve`), hands back the one asked for and keeps the others until they are
asked for (each kept output is handed out once, then dropped). Whichever output the store asks for first, each text
goes through the encoder once.

What is kept is bounded (``pending_bytes``, and at most ``QUERY_PENDING`` queries; oldest dropped first: a dropped
output is computed again when it is asked for, and that encoding keeps only the outputs the dropped entry still
held, so nothing already handed out is kept again) and keyed by the text, its side (query or passage) and the
model's settings, so a setting changed between two asks never hands out an output computed under the old one.

Registration is per model: an adapter that is alive but never asks (a ColBERT embeddings object kept around) makes
every encoding compute and keep its output until the bound drops it. A LlamaIndex ``VectorStoreIndex`` embeds a
whole insert batch densely before the store asks for the other outputs: with long texts and BGE-M3's 1024-wide
ColBERT rows (about 2 MiB a 512-token passage), lower ``insert_batch_size`` (e.g. 128) so a batch's kept outputs
fit the bound, or texts of a batch are encoded twice.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal, Protocol, get_args

import numpy as np

Output = Literal["dense", "sparse", "colbert"]
Side = Literal["query", "passage"]
OUTPUTS: tuple[Output, ...] = get_args(Output)
SIDES: tuple[Side, ...] = get_args(Side)
DEFAULT_PENDING_BYTES = 512 * 2**20
QUERY_PENDING = 256  # kept query-side texts at most: a hybrid query asks for its outputs at once, so few are waiting
DROPPED_MEMORY = 65_536  # texts whose kept outputs were dropped, remembered so a new encoding keeps only those
_KEYS = {"dense": "dense_vecs", "sparse": "lexical_weights", "colbert": "colbert_vecs"}


class M3Encoder(Protocol):
    """What OnePass needs of a BGE-M3 model (:class:`~.m3.BGEM3FlagModel` has it)."""

    settings: Any

    def encode_queries(self, queries: Any, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def encode_corpus(self, corpus: Any, *args: Any, **kwargs: Any) -> dict[str, Any]: ...


def _size(output: Output, value: Any) -> int:
    if output == "sparse":
        return 64 + 96 * len(value)  # a dict of short str keys and floats
    return int(np.asarray(value).nbytes) + 112


class OnePass:
    """The outputs of one BGE-M3 model, each text encoded once for all registered outputs (see the module)."""

    def __init__(self, model: M3Encoder, pending_bytes: int = DEFAULT_PENDING_BYTES) -> None:
        self._model = weakref.ref(model)  # the model owns this object: no cycle keeping the model alive
        self.pending_bytes = pending_bytes
        self._wanted: dict[Output, int] = {}
        self._pending: OrderedDict[tuple[str, str, str], dict[Output, tuple[Any, int]]] = OrderedDict()
        self._bytes = 0
        self._queries = 0  # kept query-side entries
        # key -> outputs still kept when the entry was dropped for room: what encoding the text again should keep
        self._dropped: OrderedDict[tuple[str, str, str], frozenset[Output]] = OrderedDict()
        self._lock = threading.Lock()
        self.encoded = 0  # texts sent to the encoder (a test and a benchmark read it)

    @property
    def model(self) -> M3Encoder:
        model = self._model()
        if model is None:
            raise RuntimeError("the BGE-M3 model of this OnePass is gone")
        return model

    def register(self, output: Output) -> None:
        """Say that a consumer (a store's dense, sparse or ColBERT embeddings) will ask for ``output``: from now on
        every encoding computes it too and keeps it until it is asked for."""
        _check_output(output)
        with self._lock:
            self._wanted[output] = self._wanted.get(output, 0) + 1

    def unregister(self, output: Output) -> None:
        """Undo one :meth:`register` (a consumer is gone); an output nobody asks for any more is no longer kept."""
        with self._lock:
            count = self._wanted.get(output, 0) - 1
            if count > 0:
                self._wanted[output] = count
                return
            self._wanted.pop(output, None)
            for key in list(self._pending):
                entry = self._pending[key]
                if output in entry:
                    self._bytes -= entry.pop(output)[1]
                if not entry:
                    self._remove(key)

    @property
    def registered(self) -> tuple[Output, ...]:
        """The outputs each encoding computes (in the order dense, sparse, colbert)."""
        with self._lock:
            return tuple(output for output in OUTPUTS if self._wanted.get(output))

    @property
    def pending(self) -> int:
        """Texts with outputs kept for a later ask."""
        with self._lock:
            return len(self._pending)

    def clear(self) -> None:
        """Drop every kept output."""
        with self._lock:
            self._pending.clear()
            self._dropped.clear()
            self._bytes = self._queries = 0

    def serve(self, texts: Sequence[str], side: Side, output: Output) -> list[Any]:
        """``output`` of each text (dense: a float32 vector; sparse: lexical weights, token id as a str -> weight;
        colbert: a (tokens, dim) array), exactly as ``encode_queries`` / ``encode_corpus`` give it, in order: a
        kept output when an earlier encoding computed it, else one encoding of the missing texts that also keeps
        the other registered outputs."""
        _check_output(output)
        if side not in SIDES:
            raise ValueError(f"side must be one of {list(SIDES)}, got {side!r}")
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{position}] must be a str, got {type(text).__name__}")
        model = self.model
        settings_key = model.settings.key()
        found: dict[str, Any] = {}
        with self._lock:
            for text in texts:
                key = (side, settings_key, text)
                entry = self._pending.get(key)
                if text in found or entry is None or output not in entry:
                    continue
                value, size = entry.pop(output)
                self._bytes -= size
                found[text] = value
                if not entry:
                    self._remove(key)
            wanted = {out for out, count in self._wanted.items() if count} | {output}
        missing = list(dict.fromkeys(text for text in texts if text not in found))
        if missing:
            encode = model.encode_queries if side == "query" else model.encode_corpus
            result = encode(missing, return_dense="dense" in wanted, return_sparse="sparse" in wanted,
                            return_colbert_vecs="colbert" in wanted)
            with self._lock:
                self.encoded += len(missing)
                for row, text in enumerate(missing):
                    key = (side, settings_key, text)
                    found[text] = result[_KEYS[output]][row]
                    # a text encoded again after its kept outputs were dropped keeps only those still unasked
                    keep = self._dropped.pop(key, None)
                    others = {out: _own(result[_KEYS[out]][row]) for out in wanted
                              if out != output and (keep is None or out in keep)}
                    if others:
                        self._keep(key, others)
        return [found[text] for text in texts]

    def _keep(self, key: tuple[str, str, str], outputs: dict[Output, Any]) -> None:
        if key not in self._pending and key[0] == "query":
            self._queries += 1
        entry = self._pending.setdefault(key, {})
        self._pending.move_to_end(key)
        for out, value in outputs.items():
            if out in entry:
                self._bytes -= entry[out][1]
            size = _size(out, value)
            entry[out] = (value, size)
            self._bytes += size
        while self._pending and (self._bytes > self.pending_bytes or self._queries > QUERY_PENDING):
            oldest = next(iter(self._pending)) if self._bytes > self.pending_bytes else next(
                k for k in self._pending if k[0] == "query")
            self._dropped[oldest] = frozenset(self._pending[oldest])
            if len(self._dropped) > DROPPED_MEMORY:
                self._dropped.popitem(last=False)
            self._remove(oldest)

    def _remove(self, key: tuple[str, str, str]) -> None:
        entry = self._pending.pop(key)
        self._bytes -= sum(size for _, size in entry.values())
        if key[0] == "query":
            self._queries -= 1


def _own(value: Any) -> Any:
    """A kept value that holds no view into a whole batch's array."""
    return value.copy() if isinstance(value, np.ndarray) and value.base is not None else value


def _check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
