"""``flagstack serve``: several models over HTTP in one process (OpenAI, TEI, Cohere/Jina and BGE-M3 endpoints;
see :mod:`flag_core.serving`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, cast

from ..inference.settings import EmbedderSettings
from ..serving.config import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_TEXTS,
    DEFAULT_PORT,
    DEFAULT_QUEUE_LIMIT,
    ModelSpec,
    ServeConfig,
    check_bind,
    model_specs,
    parse_model,
)
from .options import GATHER_SETTINGS, default_model, parser_kwargs, positive_int, setting

# the gather settings, for every model (a model's own: --set NAME.setting=value); the help says so without the
# word "default", which would hide the default the help shows
GATHER_HELP = {
    "gather_window_ms": "how long a request's model call waits for other requests' texts to share its batches "
    "(0: requests that arrive while the model is busy are gathered, a lone one runs at once), for every model",
    "gather_max_inputs": "most texts (of all requests) gathered into one model call, for every model",
    "queue_limit": "most model calls waiting for each model: past it a request is answered 503 with Retry-After, "
    "never queued without bound; for every model (one model's: --set NAME.queue_limit=N)",
}


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {value}")
    return value


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{option} takes a JSON object, got {text!r} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{option} takes a JSON object, got {text!r}")
    return value


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("serve", **parser_kwargs(
        "serve models over HTTP: OpenAI /v1/embeddings and /v1/models, TEI /embed, /embed_sparse, /rerank and "
        "/tokenize, Cohere/Jina /v1/rerank, BGE-M3 /v1/m3/embeddings, /health, /ready and /metrics"))
    models = p.add_argument_group("models (each repeatable; NAME: what requests call it, default the folder's name)")
    models.add_argument("--model", action="append", metavar="[NAME=]PATH",
                        help="a dense embedder (default: the bundled test model when no model is given)")
    models.add_argument("--reranker", action="append", metavar="[NAME=]PATH", help="a reranker (default: none)")
    models.add_argument("--m3", action="append", metavar="[NAME=]PATH",
                        help="a BGE-M3 model: dense, sparse and ColBERT outputs (default: none)")
    models.add_argument("--set", action="append", metavar="NAME.SETTING=VALUE", dest="settings",
                        help="a setting of one model, e.g. mini.batch_size=64 or bge.devices=cuda:1 (the value is "
                        "read as JSON when it parses, else as text); repeatable (default: none)")
    for name in GATHER_SETTINGS:
        setting(cast(argparse.ArgumentParser, models), EmbedderSettings, name, help=GATHER_HELP[name],
                default=DEFAULT_QUEUE_LIMIT if name == "queue_limit" else EmbedderSettings.model_fields[name].default)
    server = p.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (anything but a loopback address needs --api-key or --insecure)")
    server.add_argument("--port", type=_port, default=DEFAULT_PORT, help="port to listen on")
    server.add_argument("--api-key", action="append", metavar="KEY", dest="api_keys",
                        help="a key clients must send as 'Authorization: Bearer KEY' (repeatable; default: none asked; "
                        "/health and /ready never ask)")
    server.add_argument("--insecure", action="store_true",
                        help="serve on a non-loopback --host without an API key (anyone who reaches it can use it)")
    server.add_argument("--max-texts", type=positive_int, default=DEFAULT_MAX_TEXTS,
                        help="most texts in one request (more: 413)")
    server.add_argument("--max-chars", type=positive_int, default=DEFAULT_MAX_CHARS,
                        help="most characters in one text (more: 413)")
    server.add_argument("--max-body-bytes", type=positive_int, default=DEFAULT_MAX_BODY_BYTES,
                        help="most bytes in one request body (more: 413, before the body is read)")
    server.add_argument("--timeout", type=_positive_float, default=None, metavar="SECONDS",
                        help="deadline of a request: past it the answer is 504 and its queued work is dropped "
                        "(default: none)")
    ray = p.add_argument_group("Ray Serve (past one machine; needs pip install 'flagstack[ray-serve]')")
    ray.add_argument("--ray", action="store_true",
                     help="run the same app as a Ray Serve deployment (replicas spread over the Ray cluster)")
    ray.add_argument("--replicas", type=positive_int, default=1, help="replicas with --ray")
    ray.add_argument("--replica-cpus", type=_positive_float, default=None, metavar="CPUS",
                     help="CPUs Ray gives each replica (torch uses that many threads; default: Ray's, 1)")
    ray.add_argument("--autoscaling", default=None, metavar="JSON",
                     help="Ray Serve autoscaling_config, e.g. '{\"min_replicas\": 1, \"max_replicas\": 4}' (replaces "
                     "--replicas; default: none)")
    ray.add_argument("--ray-address", default=None, metavar="ADDRESS",
                     help="the Ray cluster to join, e.g. ray://head:10001 or auto (default: the RAY_ADDRESS "
                     "environment variable, else a local cluster started for this command)")
    p.set_defaults(func=cmd_serve)


def served_models(args: argparse.Namespace) -> list[ModelSpec]:
    """The models of parsed options with their settings (the bundled test model when none is given)."""
    specs = [parse_model(text, "embedder") for text in args.model or []]
    specs += [parse_model(text, "reranker") for text in args.reranker or []]
    specs += [parse_model(text, "m3") for text in args.m3 or []]
    if not specs:
        specs = [parse_model(default_model(), "embedder")]
    defaults = {name: getattr(args, name) for name in GATHER_SETTINGS}
    return model_specs(specs, args.settings or [], defaults)


def cmd_serve(args: argparse.Namespace) -> int:
    check_bind(args.host, args.api_keys or [], args.insecure)
    config = ServeConfig(max_texts=args.max_texts, max_chars=args.max_chars, max_body_bytes=args.max_body_bytes,
                         timeout=args.timeout,
                         api_keys=tuple(args.api_keys or ()))
    specs = served_models(args)
    if args.ray:
        return _serve_on_ray(args, specs, config)
    if args.replicas != 1 or args.replica_cpus is not None or args.autoscaling is not None or args.ray_address:
        raise ValueError("--replicas, --replica-cpus, --autoscaling and --ray-address go with --ray")
    try:
        from ..serving.app import create_app
        from ..serving.server import serve
    except ImportError as exc:
        raise ImportError(f"flagstack serve needs FastAPI, uvicorn and prometheus-client ({exc}): pip install "
                          "'flagstack[serve]'") from exc
    app = create_app(specs, config)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving    {', '.join(f'{s.name} ({s.kind}, {s.path})' for s in specs)}")
    print(f"on         http://{host}:{args.port} (ready when /ready answers 200; Ctrl-C stops it)", flush=True)
    error = serve(app, args.host, args.port, log_level="info" if args.verbose else "warning")
    if error is not None:
        print(f"flagstack serve: error: {error}", file=sys.stderr)
        return 1
    return 0


def _serve_on_ray(args: argparse.Namespace, specs: list[ModelSpec], config: ServeConfig) -> int:
    try:
        from ..serving.ray_serve import ray_application, serve_on_ray
    except ImportError as exc:
        raise ImportError(f"flagstack serve --ray needs Ray Serve ({exc}): pip install 'flagstack[ray-serve]'") from exc
    actor = {"num_cpus": args.replica_cpus} if args.replica_cpus is not None else None
    autoscaling = _json_object(args.autoscaling, "--autoscaling") if args.autoscaling is not None else None
    application = ray_application(specs, config, replicas=args.replicas, autoscaling_config=autoscaling,
                                  ray_actor_options=actor)
    print(f"serving    {', '.join(f'{s.name} ({s.kind}, {s.path})' for s in specs)}")
    replicas = f"autoscaling {autoscaling}" if autoscaling else f"{args.replicas} replica(s)"
    print(f"on         Ray Serve, {replicas}, http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    serve_on_ray(application, args.host, args.port, args.ray_address)
    return 0
