"""The HTTP app: several flagstack models behind the APIs existing clients speak (OpenAI, Hugging Face TEI, Cohere /
Jina rerank, BGE-M3 in full), with health, readiness, Prometheus metrics, API keys and guards against overload.

Every model call goes through the model's queue (:mod:`~flag_core.inference.gather`): concurrent requests share
batches there, a full queue answers 503 with Retry-After, and a request whose client goes away or whose
deadline passes has its queued work dropped. :func:`create_app` builds the app (the command line, tests and Ray
Serve build the same one); the models load in the background once the app starts, and ``/ready`` answers 200 only
when all are loaded.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import pydantic_core
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..inference.gather import QueueFull, run_async, settle
from . import work
from .config import Kind, ModelSpec, ServeConfig
from .metrics import Metrics
from .work import Served, ServeError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# endpoints that answer without a key (probes)
OPEN_PATHS = frozenset({"/health", "/ready"})
LOADING_RETRY_AFTER = 5  # seconds, for requests that come while the models load

EMBEDDERS: tuple[Kind, ...] = ("embedder", "m3")


# requests ------------------------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EmbeddingsRequest(_Body):
    """OpenAI's ``POST /v1/embeddings`` (``input_type`` is flagstack's: "query" encodes queries)."""

    input: Any = Field(description="a text or a list of texts")
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, gt=0, strict=True)
    input_type: Literal["query", "passage"] = "passage"
    user: str | None = None


class M3Request(_Body):
    """BGE-M3's dense, sparse and ColBERT outputs of the same texts, from one model call. flagstack's own API, so an
    unknown field (``return_sparse``, ``encoding_format``) is a 422 naming it, never ignored."""

    model_config = ConfigDict(extra="forbid")

    input: Any = Field(description="a text or a list of texts")
    model: str | None = None
    input_type: Literal["query", "passage"] = "passage"
    dense: bool = True
    sparse: bool = True
    colbert: bool = False


class EmbedRequest(_Body):
    """TEI's ``POST /embed`` (``model`` picks a served model; TEI serves one)."""

    inputs: Any = Field(description="a text or a list of texts")
    normalize: bool = True
    truncate: bool = False
    truncation_direction: Literal["right", "Right"] = "right"
    dimensions: int | None = Field(default=None, gt=0, strict=True)
    prompt_name: Literal["query", "passage", "document"] | None = Field(
        default=None, description="query: encode as queries (the model's query instruction); passage / document or "
        "none: as passages")
    model: str | None = None


class EmbedSparseRequest(_Body):
    """TEI's ``POST /embed_sparse``."""

    inputs: Any = Field(description="a text or a list of texts")
    truncate: bool = False
    truncation_direction: Literal["right", "Right"] = "right"
    model: str | None = None


class TeiRerankRequest(_Body):
    """TEI's ``POST /rerank``."""

    query: str
    texts: Any = Field(description="a list of texts")
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = False
    model: str | None = None


class TokenizeRequest(_Body):
    """TEI's ``POST /tokenize``."""

    inputs: Any = Field(description="a text or a list of texts")
    add_special_tokens: bool = True
    model: str | None = None


class RerankRequest(_Body):
    """Cohere's / Jina's ``POST /v1/rerank``."""

    query: str
    documents: Any = Field(description="a list of texts or of {'text': ...}")
    model: str | None = None
    top_n: int | None = Field(default=None, gt=0, strict=True)
    return_documents: bool = False


# the app's state -----------------------------------------------------------------------------------------------


class ServerState:
    """What an app holds: the specs, the loaded models (None while loading), the load error, the config (read at
    every request) and the metrics. ``on_load_error`` is called when loading fails (the command line stops)."""

    def __init__(self, specs: Sequence[ModelSpec], config: ServeConfig) -> None:
        if not specs:
            raise ValueError("no model to serve; give at least one embedder, reranker or BGE-M3 model")
        names = [spec.name for spec in specs]
        if len(set(names)) < len(names):
            raise ValueError(f"two models share a name in {names}; give each its own")
        self.specs = list(specs)
        self.config = config
        self.models: dict[str, Served] | None = None
        self.error: str | None = None
        self.on_load_error: Callable[[str], None] | None = None
        self.metrics = Metrics(self._queues)
        self._observed: list[tuple[Any, Callable[..., None]]] = []
        self._lock = threading.Lock()

    def _queues(self) -> dict[str, Any]:
        return {name: served.queues for name, served in (self.models or {}).items()}

    def load(self) -> None:
        """Build each model and run it once (a model that cannot run fails here, not on a request); a second call,
        once they are loaded, does nothing (Ray Serve's replicas load before the app starts)."""
        if self.models is not None:
            return
        served: dict[str, Served] = {}
        spec = None
        try:
            for spec in self.specs:
                logger.info("loading %s %s from %s", spec.kind, spec.name, spec.path)
                model = spec.build()
                one = Served(spec.name, spec.kind, spec.path, model)
                if spec.kind == "reranker":
                    model.compute_score([("warm", "up")])
                else:
                    work.embed(one, ["warm up"], "passage")
                with model.side_tokenizer():  # made now, not by the first request on the event loop
                    pass
                served[spec.name] = one
        except Exception as exc:
            where = f"model {spec.name!r} ({spec.path})" if spec is not None else "the models"
            self.error = f"loading {where} failed: {type(exc).__name__}: {exc}"
            logger.error("%s", self.error)
            if self.on_load_error is not None:
                self.on_load_error(self.error)
            return
        with self._lock:
            for one in served.values():
                observer = self.metrics.observer(one.name)
                one.queues.observers.append(observer)
                self._observed.append((one.queues, observer))
            self.models = served
        logger.info("ready: %s", ", ".join(served))

    def close(self) -> None:
        """Detach the metrics from the models' queues (a model may outlive the app)."""
        with self._lock:
            for queue, observer in self._observed:
                if observer in queue.observers:
                    queue.observers.remove(observer)
            self._observed.clear()

    def loaded(self) -> dict[str, Served]:
        """The models, or a 503 while they load (or after loading failed)."""
        if self.models is not None:
            return self.models
        if self.error is not None:
            raise ServeError(503, self.error)
        raise ServeError(503, "the models are still loading; retry when /ready answers 200",
                         headers={"Retry-After": str(LOADING_RETRY_AFTER)})


def state_of(request: Request) -> ServerState:
    return request.app.state.flagstack  # type: ignore[no-any-return]


# running a model call ------------------------------------------------------------------------------------------


async def _client_gone(receive: Receive) -> None:
    """Returns when the client disconnects (the request body has been read, so the next message is that)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _busy(served: Served, exc: QueueFull) -> ServeError:
    return ServeError(503, f"model {served.name!r} is busy: {exc} (flagstack serve --queue-limit, or --set "
                      f"{served.name}.queue_limit=N)", headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))})


def threaded(function: Callable[..., T], *args: Any) -> Callable[[], Awaitable[T]]:
    """What :func:`model_call` starts for a blocking call: ``function(*args)`` through :func:`run_async`."""
    return lambda: run_async(function, *args)


async def model_call(request: Request, served: Served, start: Callable[[], Awaitable[T]]) -> T:
    """The model work ``start()`` begins (:func:`threaded` for a blocking call), dropped when the client goes away
    (499) or the deadline passes (504); a full queue is a 503 with Retry-After, a failing model call a 500."""
    config = state_of(request).config
    refused = served.queues.refusal()  # a full queue refuses at once: no thread, no tokenizing for a 503
    if refused is not None:
        raise _busy(served, refused)
    job = asyncio.ensure_future(start())
    job.add_done_callback(settle)
    gone = asyncio.ensure_future(_client_gone(request.receive))
    try:
        done, _ = await asyncio.wait({job, gone}, timeout=config.timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if job not in done:
        job.cancel()
        if gone in done:
            raise ServeError(499, "the client went away; its queued work was dropped")
        raise ServeError(504, f"the request took longer than this server's deadline of {config.timeout:g} s "
                         "(--timeout); its queued work was dropped: retry, send fewer texts, or raise --timeout")
    try:
        return job.result()
    except QueueFull as exc:
        raise _busy(served, exc) from None
    except ServeError:
        raise
    except Exception as exc:
        logger.exception("model %s failed", served.name)
        raise ServeError(500, f"model {served.name!r} failed on this request's batch: {type(exc).__name__}: "
                         f"{exc}") from None


# answers ---------------------------------------------------------------------------------------------------------


class Answer(JSONResponse):
    """A JSON answer written by pydantic-core (~7x faster than Starlette's json.dumps for a vector; the same values:
    both write each float's shortest round-trip digits); a NaN or infinite number is still an error, never written
    (json.dumps with allow_nan=False decides)."""

    def render(self, content: Any) -> bytes:
        data = pydantic_core.to_json(content, inf_nan_mode="constants")
        if b"NaN" in data or b"Infinity" in data:  # a real one, or those letters inside a string: json.dumps decides
            return super().render(content)
        return data


def _error_type(status: int, openai: bool) -> str:
    if openai:
        return {401: "authentication_error", 404: "invalid_request_error", 499: "client_closed",
                503: "overloaded_error", 504: "timeout_error"}.get(
            status, "invalid_request_error" if status < 500 else "server_error")
    return {401: "Unauthorized", 499: "ClientClosed", 503: "Overloaded", 504: "Timeout"}.get(
        status, "Validation" if status < 500 else "Backend")


def error_response(path: str, status: int, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """An error as the endpoint's API says it: OpenAI's ``{"error": {"message", "type", "param"}}`` under /v1,
    TEI's ``{"error", "error_type"}`` elsewhere."""
    if path.startswith("/v1/"):
        body: dict[str, Any] = {"error": {"message": message, "type": _error_type(status, True), "param": param,
                                          "code": None}}
    else:
        body = {"error": message, "error_type": _error_type(status, False)}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    problems, first = [], None
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        if error.get("type") == "json_invalid":
            ctx = error.get("ctx") or {}
            problems.append(f"the body is not valid JSON ({ctx.get('error', error.get('msg'))}); send a JSON object")
            continue
        if not loc:
            problems.append("the request body must be a JSON object of this endpoint's fields (Content-Type: "
                            "application/json)")
            continue
        field = ".".join(loc)
        first = first or field
        problems.append(f"{field}: {error.get('msg')}")
    return "; ".join(problems) or "the request body is not what this endpoint takes", first


# the guard: API keys and metrics -----------------------------------------------------------------------------


def authorized(header: str | None, keys: Sequence[str]) -> bool:
    """Whether an ``Authorization`` header carries one of ``keys`` as a bearer token (constant-time compares)."""
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    try:  # the header's bytes as sent (ASGI headers are bytes, read here as latin-1): a UTF-8 key matches
        given = token.strip().encode("latin-1")
    except UnicodeEncodeError:
        given = token.strip().encode("utf-8")
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode("utf-8"))
    return found


def _body_message(size: int | None, limit: int) -> str:
    what = f"{size} bytes" if size is not None else f"more than {limit} bytes"
    return (f"the request body has {what}, more than this server's {limit} (--max-body-bytes): send fewer or shorter "
            "texts per request")


async def _read_bounded(receive: Receive, limit: int) -> list[Message] | None:
    """The messages of a body sent without Content-Length, read up to ``limit`` bytes (None: it is longer)."""
    messages: list[Message] = []
    seen = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages
        seen += len(message.get("body", b""))
        if seen > limit:
            return None
        if not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that gives ``messages`` first (a body already read), then what comes (a disconnect)."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


class Guard:
    """ASGI middleware: asks for an API key (when the server has any; not on the probes) and counts each request
    by endpoint and status, with its latency."""

    def __init__(self, app: ASGIApp, state: ServerState, endpoints: frozenset[str]) -> None:
        self.app = app
        self.state = state
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        endpoint = path if path in self.endpoints else "other"
        metrics = self.state.metrics
        status = 500
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        metrics.in_progress.inc()
        try:
            keys = self.state.config.api_keys
            if keys and path not in OPEN_PATHS:
                header = dict(scope.get("headers") or []).get(b"authorization")
                if not authorized(header.decode("latin-1") if header else None, keys):
                    message = "this server needs an API key: send the header 'Authorization: Bearer KEY'"
                    if header:
                        message = ("the Authorization header holds no key of this server's; send "
                                   "'Authorization: Bearer KEY' with a key it was started with (--api-key)")
                    response = error_response(path, 401, message)
                    response.headers["WWW-Authenticate"] = "Bearer"
                    await response(scope, receive, sending)
                    return
            limit = self.state.config.max_body_bytes
            declared = dict(scope.get("headers") or []).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await error_response(path, 413, _body_message(int(declared), limit))(scope, receive, sending)
                return
            if declared is None and scope.get("method") in ("POST", "PUT", "PATCH"):
                body = await _read_bounded(receive, limit)  # no Content-Length: counted as it arrives
                if body is None:
                    await error_response(path, 413, _body_message(None, limit))(scope, receive, sending)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, sending)
        finally:
            metrics.in_progress.dec()
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


# the app -------------------------------------------------------------------------------------------------------


def create_app(models: Sequence[ModelSpec], config: ServeConfig | None = None) -> FastAPI:
    """The server's app for ``models`` (loaded in the background once the app starts; ``/ready`` says when) with
    ``config``'s limits and keys. ``app.state.flagstack`` is its :class:`ServerState`."""
    state = ServerState(models, config or ServeConfig())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.get_running_loop().run_in_executor(None, state.load)
        try:
            yield
        finally:
            state.close()
            if not loading.done():
                logger.warning("the server stops while models are still loading")

    app = FastAPI(title="flagstack serve", lifespan=lifespan,
                  description="flagstack models over the OpenAI, TEI and Cohere/Jina APIs")
    app.state.flagstack = state

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return error_response(request.url.path, exc.status, exc.message, exc.param, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # an unknown path or a wrong method, in the error shape of the API the path belongs to
        allowed = (exc.headers or {}).get("Allow", "another method")
        message = {404: f"no endpoint {request.url.path}; see /docs for this server's endpoints",
                   405: f"{request.method} is not what {request.url.path} takes; send {allowed}"}.get(
            exc.status_code, str(exc.detail))
        return error_response(request.url.path, exc.status_code, message, headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return error_response(request.url.path, 422, message, field)

    # probes and metrics

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Alive (the process answers)."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """200 once every model is loaded; 503 before (or when loading failed, with the error)."""
        if state.models is not None:
            return JSONResponse({"status": "ready", "models": list(state.models)})
        if state.error is not None:
            return JSONResponse({"status": "failed", "error": state.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503,
                            headers={"Retry-After": str(LOADING_RETRY_AFTER)})

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """TEI's /info for the first embedder (or model), and every served model with its settings and the
        server's limits."""
        models = state.loaded()
        first = next((s for s in models.values() if s.kind in EMBEDDERS), next(iter(models.values())))
        return {"model_id": first.name, "model_type": first.kind, "max_client_batch_size": state.config.max_texts,
                "max_input_length": int(getattr(first.model, "passage_max_length", None)
                                        or getattr(first.model, "max_length", None) or 0),
                "limits": {"max_texts": state.config.max_texts, "max_chars": state.config.max_chars,
                           "max_body_bytes": state.config.max_body_bytes,
                           "timeout": state.config.timeout},
                "models": {name: {"kind": s.kind, "path": s.path, "settings": s.model.settings.model_dump(mode="json")}
                           for name, s in models.items()}}

    # OpenAI

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        """The served models, as OpenAI lists them (``kind`` added)."""
        created = int(time.time())
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "flagstack", "kind": served.kind}
            for name, served in state.loaded().items()]}

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingsRequest, request: Request) -> JSONResponse:
        """OpenAI embeddings: passages by default (``input_type: "query"`` for queries)."""
        served = work.pick(state.loaded(), body.model, EMBEDDERS, "/v1/embeddings")
        texts = work.texts_of(body.input, "input", state.config)
        vectors, tokens = await model_call(request, served,
                                           lambda: work.embed_with_tokens(served, texts, body.input_type))
        vectors = work.cut(vectors, body.dimensions, bool(served.model.normalize_embeddings), served)
        encode = work.as_base64 if body.encoding_format == "base64" else (lambda v: v.tolist())
        return Answer({"object": "list", "model": served.name,
                       "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                                for i, v in enumerate(vectors)],
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.post("/v1/m3/embeddings")
    async def m3_embeddings(body: M3Request, request: Request) -> JSONResponse:
        """BGE-M3's dense vectors, sparse lexical weights ({indices, values} by token id) and ColBERT vectors of
        the same texts from one model call; ``dense``, ``sparse`` and ``colbert`` say which."""
        served = work.pick(state.loaded(), body.model, ("m3",), "/v1/m3/embeddings")
        if not (body.dense or body.sparse or body.colbert):
            raise ServeError(422, "dense, sparse and colbert are all false; ask for at least one output", "dense")
        texts = work.texts_of(body.input, "input", state.config)
        out, tokens = await model_call(request, served, threaded(work.m3_outputs, served, texts, body.input_type,
                                                                  body.dense, body.sparse, body.colbert))
        data = []
        for i in range(len(texts)):
            row: dict[str, Any] = {"object": "m3_embedding", "index": i}
            if body.dense:
                row["dense"] = out["dense_vecs"][i].tolist()
            if body.sparse:
                pairs = work.sparse_pairs(out["lexical_weights"][i])
                row["sparse"] = {"indices": [p[0] for p in pairs], "values": [p[1] for p in pairs]}
            if body.colbert:
                row["colbert"] = out["colbert_vecs"][i].tolist()
            data.append(row)
        return Answer({"object": "list", "model": served.name, "data": data,
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    # Cohere / Jina

    @app.post("/v1/rerank")
    async def rerank(body: RerankRequest, request: Request) -> JSONResponse:
        """Cohere / Jina rerank: results best first (relevance scores through a sigmoid, in (0, 1))."""
        served = work.pick(state.loaded(), body.model, ("reranker",), "/v1/rerank")
        query = work.texts_of(body.query, "query", state.config)[0]
        documents = work.documents_of(body.documents, "documents", state.config)
        scores, tokens = await model_call(request, served, threaded(work.rerank_scores, served, query, documents, True))
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: body.top_n]
        results = []
        for i in order:
            result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if body.return_documents:
                result["document"] = {"text": documents[i]}
            results.append(result)
        return Answer({"object": "list", "model": served.name, "results": results,
                       "usage": {"total_tokens": tokens, "prompt_tokens": tokens}})

    # TEI

    async def tei_embed(body: EmbedRequest, request: Request) -> JSONResponse:
        served = work.pick(state.loaded(), body.model, EMBEDDERS, request.url.path)
        normalizes = bool(served.model.normalize_embeddings)
        if normalizes and not body.normalize:
            raise ServeError(422, f"model {served.name!r} is served with unit-length vectors; for raw vectors "
                             f"start the server with --set {served.name}.normalize_embeddings=false", "normalize")
        texts = work.texts_of(body.inputs, "inputs", state.config)
        side: work.Side = "query" if body.prompt_name == "query" else "passage"
        vectors, _tokens = await model_call(
            request, served, lambda: work.embed_with_tokens(served, texts, side, body.truncate, "inputs"))
        if body.normalize and not normalizes:
            vectors = work.unit(vectors)
        return Answer(work.cut(vectors, body.dimensions, body.normalize, served).tolist())

    app.post("/embed", summary="TEI embed")(tei_embed)
    # huggingface_hub's InferenceClient (langchain-huggingface's HuggingFaceEndpointEmbeddings) posts to the URL
    # it is given: a TEI server answers embeddings at its root
    app.post("/", summary="TEI embed (the root, as InferenceClient.feature_extraction posts)")(tei_embed)

    @app.post("/embed_sparse")
    async def embed_sparse(body: EmbedSparseRequest, request: Request) -> JSONResponse:
        """TEI's sparse embeddings: BGE-M3's lexical weights as [{index: token id, value}] per text."""
        served = work.pick(state.loaded(), body.model, ("m3",), "/embed_sparse")
        texts = work.texts_of(body.inputs, "inputs", state.config)
        out, _tokens = await model_call(request, served, threaded(_sparse, served, texts, body.truncate))
        return Answer([[{"index": token, "value": weight} for token, weight in work.sparse_pairs(weights)]
                       for weights in out["lexical_weights"]])

    @app.post("/rerank")
    async def tei_rerank(body: TeiRerankRequest, request: Request) -> JSONResponse:
        """TEI rerank: [{index, score, text?}] best first (``raw_scores``: the logits, else through a sigmoid)."""
        served = work.pick(state.loaded(), body.model, ("reranker",), "/rerank")
        query = work.texts_of(body.query, "query", state.config)[0]
        texts = work.documents_of(body.texts, "texts", state.config)
        scores, _tokens = await model_call(request, served, threaded(work.rerank_scores, served, query, texts,
                                                                      not body.raw_scores, body.truncate, "texts"))
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return Answer([{"index": i, "score": scores[i], **({"text": texts[i]} if body.return_text else {})}
                       for i in order])

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest, request: Request) -> JSONResponse:
        """TEI tokenize: each text's tokens {id, text, special, start, stop}."""
        served = work.pick(state.loaded(), body.model, ("embedder", "m3", "reranker"), "/tokenize")
        texts = work.texts_of(body.inputs, "inputs", state.config)
        return Answer(await asyncio.to_thread(work.tokenize, served, texts, body.add_special_tokens))

    endpoints = frozenset(route.path for route in app.routes if hasattr(route, "path"))
    app.add_middleware(Guard, state=state, endpoints=endpoints)
    return app


def _sparse(served: Served, texts: list[str], truncate: bool) -> tuple[dict[str, Any], int]:
    work.token_counts(served, texts, "passage", truncate, "inputs")
    return work.m3_outputs(served, texts, "passage", False, True, False)
