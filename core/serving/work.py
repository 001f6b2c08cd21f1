"""What the endpoints ask of the models: flag_core calls whose model runs go through each model's queue (so
concurrent requests share batches): blocking ones the server runs through
:func:`~flag_core.inference.gather.run_async`, and :func:`embed_with_tokens`, awaited on the event loop; and the
checks of what a request sends. Nothing here imports FastAPI."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..inference.gather import run_async
from ..inference.inputs import check_unicode
from ..inference.m3 import BGEM3FlagModel
from .config import OPTIONS, Kind, ServeConfig

Side = Literal["query", "passage"]
# characters of a request whose tokens are counted on the event loop (more: in a thread)
INLINE_COUNT_CHARS = 4096


class ServeError(Exception):
    """A request the server answers with ``status`` and ``message`` (which names the bad item and what to do);
    ``param`` names the request field, ``headers`` go with the answer (Retry-After)."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}


@dataclass(frozen=True)
class Served:
    """A loaded model as the server holds it. What the server tokenizes itself (token counts, length checks,
    /tokenize) goes through the model's :meth:`side_tokenizer`, never the tokenizer its runs use."""

    name: str
    kind: Kind
    path: str
    model: Any

    @property
    def tokenizer(self) -> Any:
        """The side tokenizer (a copy of the model's); use it within ``model.side_tokenizer()``."""
        with self.model.side_tokenizer() as tokenizer:
            return tokenizer

    @property
    def queues(self) -> Any:
        return self.model.runtime.queue


def texts_of(value: Any, field: str, config: ServeConfig) -> list[str]:
    """A request's texts (a str or a list of str), within the server's limits; anything else is a
    :class:`ServeError` naming ``field`` and its bad item."""
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list):
        if not value:
            raise ServeError(422, f"{field} is an empty list; send at least one text", field)
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value) or all(
                isinstance(item, list) and all(isinstance(i, int) for i in item) for item in value):
            raise ServeError(422, f"{field} holds token ids; this server reads text, so send the texts themselves "
                             "(langchain-openai: OpenAIEmbeddings(check_embedding_ctx_length=False))", field)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ServeError(422, f"{field}[{i}] is {_json_type(item)}, expected a string", f"{field}[{i}]")
        items = list(value)
    else:
        raise ServeError(422, f"{field} must be a string or a list of strings, got {_json_type(value)}", field)
    if len(items) > config.max_texts:
        raise ServeError(413, f"{field} holds {len(items)} texts, more than this server takes in one request "
                         f"({config.max_texts}, --max-texts); send fewer per request or raise --max-texts", field)
    for i, item in enumerate(items):
        where = f"{field}[{i}]" if not isinstance(value, str) else field
        if len(item) > config.max_chars:
            raise ServeError(413, f"{where} has {len(item)} characters, more than this server takes in one text "
                             f"({config.max_chars}, --max-chars); split the text or raise --max-chars", where)
        try:
            check_unicode(item, where)
        except ValueError as exc:
            raise ServeError(422, str(exc), where) from None
    return items


def documents_of(value: Any, field: str, config: ServeConfig) -> list[str]:
    """Rerank documents: strings or ``{"text": ...}`` objects (Cohere, Jina)."""
    if isinstance(value, list):
        plain: list[Any] = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                if not isinstance(item.get("text"), str):
                    raise ServeError(422, f"{field}[{i}] is an object without a string 'text'; send a string or "
                                     '{"text": "..."}', f"{field}[{i}]")
                plain.append(item["text"])
            else:
                plain.append(item)
        value = plain
    if isinstance(value, str):
        raise ServeError(422, f"{field} must be a list of strings, not one string; wrap it as [text]", field)
    return texts_of(value, field, config)


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", dict: "an object", list: "a list",
             type(None): "null", str: "a string"}
    return names.get(type(value), type(value).__name__)


def pick(models: dict[str, Served], name: str | None, kinds: Sequence[Kind], endpoint: str) -> Served:
    """The model a request names (404 naming the served ones when none has that name; 400 when it is of a kind the
    endpoint does not serve); no name: the first served model of the first of ``kinds``."""
    wanted = " or ".join(f"{'an' if k[0] in 'aeiou' else 'a'} {k}" for k in kinds)
    if name is not None:
        if not isinstance(name, str):
            raise ServeError(422, f"model must be a string, got {_json_type(name)}", "model")
        served = models.get(name)
        if served is None:
            raise ServeError(404, f"no model is named {name!r}; this server serves {', '.join(models) or 'none'}",
                             "model")
        if served.kind not in kinds:
            fitting = [n for n, s in models.items() if s.kind in kinds]
            raise ServeError(400, f"model {name!r} is {'an' if served.kind[0] in 'aeiou' else 'a'} {served.kind}; "
                             f"{endpoint} takes {wanted}" + (f": {', '.join(fitting)}" if fitting else ""), "model")
        return served
    for kind in kinds:
        for served in models.values():
            if served.kind == kind:
                return served
    raise ServeError(404, f"{endpoint} needs {wanted} and this server serves none; start flagstack serve with "
                     f"{' or '.join(OPTIONS[k] for k in kinds)} PATH", "model")


def max_length(served: Served, side: Side) -> int:
    """The token length the model reads a text of ``side`` with."""
    return int(served.model.query_max_length if side == "query" else served.model.passage_max_length)


def token_counts(served: Served, texts: list[str], side: Side, truncate: bool, field: str) -> list[int]:
    """Tokens of each text as the model reads it; with ``truncate`` False a text longer than the model reads is a
    413 (TEI's rule) instead of being cut."""
    return _checked(served, served.model.count_tokens(texts, max_length=_count_limit(served, side, truncate)), side,
                    truncate, field)


def _count_limit(served: Served, side: Side, truncate: bool) -> int:
    return max_length(served, side) + (0 if truncate else 1)  # one more: a text the model would cut is seen


def _checked(served: Served, counts: list[int], side: Side, truncate: bool, field: str) -> list[int]:
    length = max_length(served, side)
    if not truncate:
        for i, count in enumerate(counts):
            if count > length:
                raise ServeError(413, f"{field}[{i}] is longer than the {length} tokens model {served.name!r} reads; "
                                 "send truncate=true to cut it, or shorten it", f"{field}[{i}]")
    return counts


def embed(served: Served, texts: list[str], side: Side) -> np.ndarray:
    """Dense vectors (float32, one row per text): ``encode_corpus`` for passages, ``encode_queries`` for queries;
    a BGE-M3 model gives its dense output."""
    model = served.model
    if isinstance(model, BGEM3FlagModel):
        encode = model.encode_queries if side == "query" else model.encode_corpus
        out = encode(texts, return_dense=True, return_sparse=False, return_colbert_vecs=False)
        return np.asarray(out["dense_vecs"], dtype=np.float32)
    return np.asarray(model.encode_as(side, texts, output="numpy"), dtype=np.float32)


async def embed_with_tokens(served: Served, texts: list[str], side: Side, truncate: bool = True,
                            field: str = "input") -> tuple[np.ndarray, int]:
    """:func:`embed` and the number of tokens read (OpenAI's usage), for the event loop: an embedder's call waits
    in the model's queue without a thread of its own (:meth:`FlagModel.aencode_as`); BGE-M3's runs in a waiting
    thread. The tokens of a short request are counted on the loop (a short query takes ~0.1 ms) unless another
    thread is using the side tokenizer; a longer one's, in a thread."""
    model, limit = served.model, _count_limit(served, side, truncate)
    now = model.count_tokens_now(texts, limit) if sum(map(len, texts)) <= INLINE_COUNT_CHARS else None
    counts: list[int] = now if now is not None else await asyncio.to_thread(model.count_tokens, texts, limit)
    _checked(served, counts, side, truncate, field)
    if isinstance(model, BGEM3FlagModel):
        vectors = await run_async(embed, served, texts, side)
    else:
        vectors = np.asarray(await model.aencode_as(side, texts, output="numpy"), dtype=np.float32)
    return vectors, sum(counts)


def m3_outputs(served: Served, texts: list[str], side: Side, dense: bool, sparse: bool,
               colbert: bool) -> tuple[dict[str, Any], int]:
    """BGE-M3's dense, sparse and ColBERT outputs of ``texts`` from one model call, and the tokens read."""
    counts = token_counts(served, texts, side, True, "input")
    model = served.model
    encode = model.encode_queries if side == "query" else model.encode_corpus
    return encode(texts, return_dense=dense, return_sparse=sparse, return_colbert_vecs=colbert), sum(counts)


def rerank_scores(served: Served, query: str, documents: list[str], normalize: bool, truncate: bool = True,
                  field: str = "documents") -> tuple[list[float], int]:
    """The reranker's score of (query, document) for each document, in order, and the tokens of the pairs; with
    ``truncate`` False a query longer than the reranker's query length or a pair longer than its pair length is a
    413 (TEI's rule) instead of being cut."""
    model = served.model
    limit = int(getattr(model, "max_length", 0) or 512)
    if not truncate:
        query_limit = int(getattr(model, "query_max_length", None) or limit * 3 // 4)
        with model.side_tokenizer() as tokenizer:
            query_ids = tokenizer(query, add_special_tokens=False, truncation=True,
                                         max_length=query_limit + 1)["input_ids"]
            pairs = tokenizer([query] * len(documents), documents, truncation=True,
                                     max_length=limit + 1)["input_ids"]
        if len(query_ids) > query_limit:
            raise ServeError(413, f"query is longer than the {query_limit} tokens model {served.name!r} reads of a "
                             "query; send truncate=true to cut it, or shorten it", "query")
        for i, row in enumerate(pairs):
            if len(row) > limit:
                raise ServeError(413, f"{field}[{i}] with the query is longer than the {limit} tokens model "
                                 f"{served.name!r} reads of a pair; send truncate=true to cut it, or shorten it",
                                 f"{field}[{i}]")
    scores = model.compute_score([(query, document) for document in documents], normalize=normalize)
    with model.side_tokenizer() as tokenizer:
        ids = tokenizer([query] * len(documents), documents, truncation=True, max_length=limit)["input_ids"]
    return [float(s) for s in scores], sum(len(row) for row in ids)


def tokenize(served: Served, texts: list[str], add_special_tokens: bool) -> list[list[dict[str, Any]]]:
    """TEI's /tokenize answer: per text, its tokens as {id, text, special, start, stop} (character offsets; None
    for special tokens)."""
    with served.model.side_tokenizer() as tokenizer:
        encoded = tokenizer(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                            return_special_tokens_mask=True)
    result = []
    for text, ids, offsets, mask in zip(texts, encoded["input_ids"], encoded["offset_mapping"],
                                        encoded["special_tokens_mask"], strict=True):
        tokens = []
        # special: the tokens the tokenizer adds ([CLS], [SEP]); an unknown token stands for a piece of the text
        # and keeps its offsets (TEI's rule)
        for token_id, (start, stop), added in zip(ids, offsets, mask, strict=True):
            is_special = bool(added)
            tokens.append({"id": int(token_id),
                           "text": tokenizer.convert_ids_to_tokens(int(token_id)) if is_special else text[start:stop],
                           "special": is_special,
                           "start": None if is_special else int(start),
                           "stop": None if is_special else int(stop)})
        result.append(tokens)
    return result


def cut(vectors: np.ndarray, dimensions: int | None, normalize: bool, served: Served) -> np.ndarray:
    """The first ``dimensions`` of each vector (re-normalised when ``normalize``); None keeps them all."""
    if dimensions is None:
        return vectors
    if dimensions > vectors.shape[1]:
        raise ServeError(422, f"dimensions {dimensions} is more than the {vectors.shape[1]} of model "
                         f"{served.name!r}; ask for {vectors.shape[1]} or fewer", "dimensions")
    vectors = vectors[:, :dimensions]
    if normalize:
        vectors = unit(vectors)
    return vectors


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def as_base64(vector: np.ndarray) -> str:
    """A vector as OpenAI's base64: its little-endian float32 bytes."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def sparse_pairs(weights: dict[str, float]) -> list[tuple[int, float]]:
    """Lexical weights (token id text -> weight) as (token id, weight), by token id."""
    return sorted((int(token), float(weight)) for token, weight in weights.items())
