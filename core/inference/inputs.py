"""Validation of user inputs: one place that turns "a str or a list of str" into a checked list."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import Annotated, Any, Literal, overload

import numpy as np
from pydantic import BeforeValidator


def as_text_list(texts: Any, what: str = "texts") -> tuple[list[str], bool]:
    """Return ``(list_of_texts, was_single)`` or raise a TypeError naming the bad item.

    A single ``str`` becomes a one-item list (``was_single=True``); any other sequence must hold only
    ``str`` items. Empty strings are valid inputs.
    """
    if isinstance(texts, str):
        return [texts], True
    if texts is None:
        raise TypeError(f"{what} must be a str or a list of str, got None")
    if isinstance(texts, (bytes, bytearray, dict, set, frozenset)) or not isinstance(texts, Sequence):
        if hasattr(texts, "tolist") and not isinstance(texts, (bytes, bytearray)):
            return as_text_list(texts.tolist(), what)
        raise TypeError(f"{what} must be a str or a list of str, got {type(texts).__name__}")
    items = list(texts)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(
                f"{what}[{i}] is {type(item).__name__} ({item!r:.60}), expected str; "
                "convert it to a string or drop it before encoding"
            )
        check_unicode(item, f"{what}[{i}]")
    return items, False


def as_item_list(items: Any, kind: type | tuple[type, ...], what: str, expected: str) -> list[Any]:
    """``items`` (any iterable) as a list whose every item is a ``kind``, else a TypeError naming the first that is
    not (``expected`` says what was expected, e.g. "str", "a LlamaIndex node"); one lone item (a ``kind``, or a str)
    is refused rather than read item by item."""
    if isinstance(items, (kind, str, bytes)):
        raise TypeError(f"{what} must be a list, got one {type(items).__name__}: wrap it in a list")
    items = list(items)
    for i, item in enumerate(items):
        if not isinstance(item, kind):
            raise TypeError(f"{what}[{i}] is {type(item).__name__}, expected {expected}")
    return items


def check_unicode(text: str, where: str) -> None:
    """Raise a ValueError naming ``where`` when ``text`` holds a lone surrogate (text decoded with
    ``surrogateescape``, or half of a UTF-16 pair): no tokenizer can read it."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{where} holds {text[exc.start]!r} at position {exc.start}, a lone surrogate that is not a "
            "character; repair the text first, e.g. text.encode('utf-8', 'replace').decode('utf-8')"
        ) from None


@overload
def check_positive_int(value: Any, name: str, allow_none: Literal[False]) -> int: ...


@overload
def check_positive_int(value: Any, name: str, allow_none: bool = True) -> int | None: ...


def check_positive_int(value: Any, name: str, allow_none: bool = True) -> int | None:
    """Return ``value`` as a plain int if it is a positive integer (a Python or numpy integer, never a bool), or
    None when allowed; else raise a TypeError or ValueError naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} ({value!r})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def as_pair_list(pairs: Any, what: str = "sentence_pairs") -> list[tuple[str, str]]:
    """Return a checked list of (query, passage) pairs; one pair on its own becomes a list of one."""
    if pairs is None:
        raise TypeError(f"{what} must be a (query, passage) pair or a list of pairs, got None")
    if isinstance(pairs, (str, bytes, dict, set)) or not isinstance(pairs, Sequence):
        raise TypeError(f"{what} must be a (query, passage) pair or a list of pairs, got {type(pairs).__name__}")
    if len(pairs) == 2 and isinstance(pairs[0], str):
        pairs = [pairs]
    checked: list[tuple[str, str]] = []
    for i, pair in enumerate(pairs):
        if (
            isinstance(pair, (str, bytes))
            or not isinstance(pair, Sequence)
            or len(pair) != 2
            or not isinstance(pair[0], str)
            or not isinstance(pair[1], str)
        ):
            raise TypeError(
                f"{what}[{i}] must be a (query, passage) pair of two str, got {pair!r:.80}; "
                "build pairs as [(query, passage), ...]"
            )
        check_unicode(pair[0], f"{what}[{i}][0]")
        check_unicode(pair[1], f"{what}[{i}][1]")
        checked.append((pair[0], pair[1]))
    return checked


def as_model_name(value: Any) -> Any:
    """A model name or folder given as an ``os.PathLike`` (e.g. a ``pathlib.Path``) as its str; anything else as
    it is, for the str check that follows."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


ModelName = Annotated[str, BeforeValidator(as_model_name)]
"""A pydantic field type for a hub id or a local model folder: a str, or any ``os.PathLike`` (stored as a str)."""
