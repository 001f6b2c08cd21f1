"""``flagstack serve``: flagstack models over HTTP, speaking the APIs existing clients speak.

- :mod:`.config`: what is served (:class:`ModelSpec`, read from ``[NAME=]PATH`` and ``NAME.setting=value``) and the
  server's guards (:class:`ServeConfig`); no web framework imported
- :mod:`.work`: the model calls the endpoints make and the checks of what requests send
- :mod:`.app`: :func:`create_app`, the FastAPI app (OpenAI, TEI, Cohere/Jina, BGE-M3, probes, metrics)
- :mod:`.metrics`: the Prometheus metrics; :mod:`.server`: running it on uvicorn

FastAPI, uvicorn and prometheus-client come with ``pip install 'flagstack[serve]'``; importing ``flag_core`` never
imports them, importing this package's :func:`create_app` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ModelSpec, ServeConfig, check_bind, model_specs, parse_model, parse_setting
from .server import serve, stop_servers

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["ModelSpec", "ServeConfig", "check_bind", "create_app", "model_specs", "parse_model", "parse_setting",
           "serve", "stop_servers"]


def __getattr__(name: str) -> Any:
    if name == "create_app":  # FastAPI is imported only when the app is built
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
