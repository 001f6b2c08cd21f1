"""The settings of an embedder, a reranker and BGE-M3, for the framework adapters and the command line.

The settings are declared once, in :mod:`flag_core.inference.settings` (one immutable object per model kind:
:class:`EmbedderSettings`, :class:`RerankerSettings`, :class:`M3Settings`). LangChain's and LlamaIndex's classes
inherit the same fields through the mutable views below (``EmbedderFields``, ...: pydantic fields of the adapter
object) and hand flag_core the immutable object (:meth:`SettingsFields.model_settings`); the command line builds
its options from the same fields. A subclass of a settings object with a new field, mixed into an adapter class
ahead of it (``class Mine(MySettings, FlagEmbeddings)``), carries that field to the runtime without other edits
(``tests/flag_core/test_settings.py`` shows it).

A setting left as None is not passed on: flag_core decides (see :mod:`flag_core.inference.settings`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from .inference.kinds import POOLING_METHODS
from .inference.settings import (
    CPU_TOKEN_BUDGET,
    DEFAULT_MAX_LENGTH,
    BackendName,
    Devices,
    EmbedderSettings,
    M3Settings,
    ModelSettings,
    RerankerSettings,
    settings_class,
)

Backend = BackendName  # the names flag_core.settings gave these types before
Pooling = Literal["cls", "mean", "last_token"]  # POOLING_METHODS as a static type (a test holds them equal)

__all__ = [
    "CPU_TOKEN_BUDGET",
    "DEFAULT_MAX_LENGTH",
    "POOLING_METHODS",
    "Backend",
    "BackendName",
    "Devices",
    "EmbedderFields",
    "EmbedderSettings",
    "M3Fields",
    "M3Settings",
    "ModelSettings",
    "Pooling",
    "RerankerFields",
    "RerankerSettings",
    "SettingsFields",
    "given",
    "settings_class",
]


def given(settings: BaseModel, fields: type[BaseModel], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The values of ``fields``' settings held by ``settings`` (an adapter object) that are not None (None
    means "not given": flag_core decides)."""
    return {
        name: value
        for name in fields.model_fields
        if name not in exclude and (value := getattr(settings, name)) is not None
    }


class SettingsFields(BaseModel):
    """What the mutable views share: the immutable settings object of their values."""

    # settings an adapter applies per call (a reranker's normalize): left at their default in the model's settings,
    # so adapters that differ only there share one loaded model
    per_call: ClassVar[tuple[str, ...]] = ()

    def model_settings(self) -> Any:
        """The immutable settings object of this object's values (of the settings class behind its class)."""
        cls = settings_class(type(self))
        return cls(**{name: getattr(self, name) for name in cls.model_fields if name not in self.per_call})


class EmbedderFields(SettingsFields, EmbedderSettings):
    """Embedding settings as mutable pydantic fields (for adapter classes): :class:`EmbedderSettings`' fields."""

    model_config = ConfigDict(frozen=False)

    def embedder_settings(self) -> dict[str, Any]:
        """The settings given, as keyword arguments for :func:`flag_core.build_embedder`."""
        return given(self, settings_class(type(self)))


class RerankerFields(SettingsFields, RerankerSettings):
    """Reranking settings as mutable pydantic fields: :class:`RerankerSettings`' fields."""

    model_config = ConfigDict(frozen=False)
    per_call: ClassVar[tuple[str, ...]] = ("normalize",)

    def reranker_settings(self) -> dict[str, Any]:
        """The settings given, less ``normalize`` (a per-call option, so one loaded reranker serves both),
        as keyword arguments for :func:`flag_core.build_reranker`."""
        return given(self, settings_class(type(self)), exclude=("normalize",))


class M3Fields(SettingsFields, M3Settings):
    """BGE-M3 settings as mutable pydantic fields (the sparse embeddings and hybrid retrievers)."""

    model_config = ConfigDict(frozen=False)

    def m3_settings(self) -> dict[str, Any]:
        """The settings given, as keyword arguments for :func:`flag_core.build_m3`."""
        return given(self, settings_class(type(self)))


def __getattr__(name: str) -> Any:
    if name == "RebuildsModel":  # moved to flag_core.frameworks (the adapters' helpers); importable here as before
        from .frameworks import RebuildsModel

        return RebuildsModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
