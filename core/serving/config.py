"""What a server serves and how it guards itself: the models (:class:`ModelSpec`), read from ``[NAME=]PATH`` and
``NAME.setting=value`` texts, and the server's limits (:class:`ServeConfig`). Nothing here imports FastAPI."""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..inference.settings import EmbedderSettings, M3Settings, ModelSettings, RerankerSettings

Kind = Literal["embedder", "reranker", "m3"]
# the settings class of each kind of served model
SETTINGS: dict[str, type[ModelSettings]] = {"embedder": EmbedderSettings, "reranker": RerankerSettings,
                                            "m3": M3Settings}
# the command-line option that serves each kind (for messages)
OPTIONS: dict[str, str] = {"embedder": "--model", "reranker": "--reranker", "m3": "--m3"}

DEFAULT_QUEUE_LIMIT = 64  # calls waiting per model before a request is answered 503 (a server never backs up)
DEFAULT_MAX_TEXTS = 2048  # texts in one request (OpenAI's own limit for /v1/embeddings)
DEFAULT_MAX_CHARS = 100_000  # characters in one text
DEFAULT_MAX_BODY_BYTES = 64 << 20  # bytes of one request body (read before any other check)
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its ``name`` (what requests call it), ``kind``, ``path`` (folder or hub id) and the
    settings it is built with; ``model`` is an already built model to serve as it is (tests, Ray Serve)."""

    name: str
    kind: Kind
    path: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    model: Any = None

    def checked_settings(self) -> ModelSettings:
        """The settings object (a ValueError naming the model and the bad setting)."""
        try:
            return SETTINGS[self.kind].checked(dict(self.settings))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"model {self.name!r}: {exc}") from None

    def build(self) -> Any:
        """The model object: ``model`` when given, else the shared one for (path, settings) from flag_core."""
        if self.model is not None:
            return self.model
        from ..inference.shared import build_embedder, build_m3, build_reranker

        builders = {"embedder": build_embedder, "reranker": build_reranker, "m3": build_m3}
        return builders[self.kind](self.path, self.checked_settings())  # type: ignore[operator]


@dataclass(frozen=True)
class ServeConfig:
    """A server's guards: texts per request, characters per text, bytes per request body, the deadline of a request
    (seconds, None: no deadline) and the API keys (none: no key asked)."""

    max_texts: int = DEFAULT_MAX_TEXTS
    max_chars: int = DEFAULT_MAX_CHARS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    timeout: float | None = None
    api_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_chars", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not self.timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {self.timeout!r}")
        if any(not isinstance(key, str) or not key for key in self.api_keys):
            raise ValueError("every API key must be a non-empty str")


def parse_model(text: str, kind: Kind) -> ModelSpec:
    """``[NAME=]PATH`` as a :class:`ModelSpec` (NAME: the folder's name). A text that is an existing path is a
    path even when it holds '='."""
    if not text:
        raise ValueError(f"{OPTIONS[kind]} needs [NAME=]PATH, got an empty text")
    name, sep, path = text.partition("=")
    if not sep or os.path.exists(text):
        name, path = "", text
    if sep and not os.path.exists(text) and (not name or not path):
        raise ValueError(f"{OPTIONS[kind]} {text!r}: give NAME=PATH with both parts, or only PATH")
    name = name or os.path.basename(path.rstrip("/\\")) or path
    return ModelSpec(name=name, kind=kind, path=path)


def parse_setting(text: str) -> tuple[str, str, Any]:
    """``NAME.setting=value`` as (model name, setting, value): the value is read as JSON when it parses (8, 2.5,
    true, null, "x", [..]), else taken as a string."""
    target, sep, raw = text.partition("=")
    name, dot, setting = target.rpartition(".")
    if not sep or not dot or not name or not setting:
        raise ValueError(f"--set {text!r}: expected NAME.setting=value, e.g. --set bge.batch_size=64")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return name, setting, value


def model_specs(specs: Sequence[ModelSpec], sets: Iterable[str] = (),
                defaults: Mapping[str, Any] | None = None) -> list[ModelSpec]:
    """``specs`` with their settings: ``defaults`` (server-wide, e.g. the gather settings) under each model's
    ``--set`` values; checked now, so a bad name or value is an error before anything loads."""
    names: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.name in names:
            raise ValueError(f"two models are named {spec.name!r} ({names[spec.name].path} and {spec.path}); name "
                             f"them apart: {OPTIONS[spec.kind]} NAME=PATH")
        names[spec.name] = spec
    given: dict[str, dict[str, Any]] = {name: {} for name in names}
    for text in sets:
        name, setting, value = parse_setting(text)
        if name not in names:
            raise ValueError(f"--set {text!r}: no model is named {name!r}; the served models: {', '.join(names)}")
        fields = SETTINGS[names[name].kind].model_fields
        if setting not in fields:
            raise ValueError(f"--set {text!r}: a{'n' if names[name].kind[0] in 'aeiou' else ''} {names[name].kind} "
                             f"has no setting {setting!r}; its settings: {', '.join(fields)}")
        given[name][setting] = value
    result = []
    for name, spec in names.items():
        settings = {**(defaults or {}), **spec.settings, **given[name]}
        checked = ModelSpec(spec.name, spec.kind, spec.path, settings, spec.model)
        if spec.model is None:
            checked.checked_settings()
        result.append(checked)
    return result


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or "localhost") is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_keys: Sequence[str], insecure: bool) -> None:
    """Refuse to listen on a non-loopback ``host`` without an API key, unless ``insecure``: the models would be
    open to the whole network."""
    if not api_keys and not insecure and not is_loopback(host):
        raise ValueError(f"--host {host} is reachable from other machines and no --api-key is given: anyone could "
                         "use the models; add --api-key KEY (repeatable), or --insecure to serve without one")
