"""Validation of user inputs: one place that turns "a str or a list of str" into a checked list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
    return items, False


def check_positive_int(value: Any, name: str, allow_none: bool = True) -> int | None:
    """Return ``value`` if it is a positive int (or None when allowed), else raise a clear error."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} ({value!r})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value
