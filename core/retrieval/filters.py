"""Metadata filters for the embedded indexes, applied exactly at search time (never after a top-k cut).

A filter is either a callable (metadata -> bool, given a copy) or a mapping in the query language that Chroma,
Pinecone and MongoDB share: ``{"field": value}`` (equality), ``{"field": {"$op": value}}`` with ``$eq``, ``$ne``,
``$in``, ``$nin``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$contains`` (a list field holds the value, a str field
the substring) and ``$exists``; ``{"$and": [...]}``, ``{"$or": [...]}``, ``{"$not": {...}}``; several keys in one
mapping must all hold. A dotted field (``"a.b"``) reads nested metadata, unless a field is named with the dots.

Meanings, so nothing is silently surprising: a missing field matches only ``$ne``, ``$nin`` and ``$exists: false``;
a bool never equals a number (JSON keeps them apart even where Python does not); ranges compare numbers with
numbers and strings with strings, and a field of another type does not match. A filter is checked whole when it is
compiled (an unknown operator, a range over a list, a NaN), a ValueError or TypeError naming the bad part.
"""

from __future__ import annotations

import copy
import math
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Metadata = Mapping[str, Any]
Filter = Mapping[str, Any] | Callable[[dict[str, Any]], bool]
"""A metadata filter: a mapping in the query language above, or a callable taking a copy of the metadata."""
Matcher = Callable[[Metadata], bool]

COMPARISONS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$contains", "$exists")
LOGICAL = ("$and", "$or", "$not")
_RANGES: dict[str, Callable[[Any, Any], bool]] = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt,
                                                  "$lte": operator.le}
_MISSING = object()


def compile_filter(spec: Filter | None) -> Matcher | None:
    """A function telling whether a metadata dict matches ``spec`` (None: no filter), after checking ``spec``."""
    if spec is None:
        return None
    if callable(spec) and not isinstance(spec, Mapping):
        return _callable(spec)
    if not isinstance(spec, Mapping):
        raise TypeError(f"filter must be a mapping (e.g. {{'year': {{'$gte': 2020}}}}) or a callable, "
                        f"got {type(spec).__name__}")
    try:
        return _mapping(spec, "filter")
    except RecursionError:
        raise ValueError("filter is nested too deeply to read") from None


def _callable(function: Callable[[dict[str, Any]], bool]) -> Matcher:
    def match(metadata: Metadata) -> bool:
        result = function(copy.deepcopy(dict(metadata)))  # the index's metadata stays the index's
        if not isinstance(result, bool | _numpy_bool()):
            raise TypeError(f"a filter callable must return True or False, it returned {type(result).__name__}")
        return bool(result)
    return match


def _numpy_bool() -> type:
    import numpy as np
    return np.bool_


def _mapping(spec: Mapping[str, Any], where: str) -> Matcher:
    parts: list[Matcher] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: keys are field names or $and/$or/$not, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
                raise ValueError(f"{where}: {key} takes a non-empty list of filters, got {value!r}")
            subs = [_mapping(_as_mapping(sub, f"{where}.{key}[{i}]"), f"{where}.{key}[{i}]")
                    for i, sub in enumerate(value)]
            parts.append(_all(subs) if key == "$and" else _any(subs))
        elif key == "$not":
            parts.append(_negated(_mapping(_as_mapping(value, f"{where}.$not"), f"{where}.$not")))
        elif key.startswith("$"):
            raise ValueError(f"{where}: unknown operator {key!r} at the top level; use $and, $or, $not or a "
                             "field name")
        else:
            parts.append(_field(key, value, f"{where}[{key!r}]"))
    return _all(parts)


def _as_mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a filter mapping, got {type(value).__name__}")
    return value


def _negated(inner: Matcher) -> Matcher:
    return lambda metadata: not inner(metadata)


def _all(parts: list[Matcher]) -> Matcher:
    return lambda metadata: all(part(metadata) for part in parts)


def _any(parts: list[Matcher]) -> Matcher:
    return lambda metadata: any(part(metadata) for part in parts)


def _field(name: str, condition: Any, where: str) -> Matcher:
    path = name.split(".")
    if not isinstance(condition, Mapping) or not condition:
        _check_value(condition, where)
        return _compare(path, "$eq", condition)
    tests = []
    for op, value in condition.items():
        if op not in COMPARISONS:
            raise ValueError(f"{where}: unknown operator {op!r}; use one of {', '.join(COMPARISONS)}")
        at = f"{where}[{op!r}]"
        if op in ("$in", "$nin"):
            if not isinstance(value, Sequence | set | frozenset) or isinstance(value, str | bytes):
                raise TypeError(f"{at} takes a list of values, got {type(value).__name__}")
            for item in value:
                _check_value(item, at)
            value = list(value)
        elif op in _RANGES:
            if not _orderable(value):
                raise TypeError(f"{at} compares numbers or strings, got {value!r}")
        elif op == "$exists":
            if not isinstance(value, bool):
                raise TypeError(f"{at} takes true or false, got {value!r}")
        else:
            _check_value(value, at)
        tests.append(_compare(path, op, value))
    return _all(tests)


def _check_value(value: Any, where: str) -> None:
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{where}: NaN matches nothing; filter on a real value")
    if isinstance(value, Mapping):
        raise TypeError(f"{where}: a mapping here must hold operators ($eq, $in, ...), got an empty one")


def _orderable(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(float(value))


def _lookup(metadata: Metadata, path: list[str]) -> Any:
    """The value at a dotted path; at each level a key holding the rest of the path, dots and all, is taken first
    (metadata may name a field "file.name")."""
    value: Any = metadata
    for depth, key in enumerate(path):
        if not isinstance(value, Mapping):
            return _MISSING
        rest = ".".join(path[depth:])
        if depth < len(path) - 1 and rest in value:
            return value[rest]
        if key not in value:
            return _MISSING
        value = value[key]
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False  # JSON keeps true and 1 apart
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _compare(path: list[str], op: str, expected: Any) -> Matcher:
    # $in / $nin: a str is looked up in a set (a long list of ids stays cheap), other values compared one by one
    strings = frozenset(item for item in expected if isinstance(item, str)) if op in ("$in", "$nin") else frozenset()
    others = [item for item in expected if not isinstance(item, str)] if op in ("$in", "$nin") else []

    def match(metadata: Metadata) -> bool:
        value = _lookup(metadata, path)
        if op == "$exists":
            return (value is not _MISSING) == expected
        if value is _MISSING:
            return op in ("$ne", "$nin")
        if op == "$eq":
            return _same(value, expected)
        if op == "$ne":
            return not _same(value, expected)
        if op in ("$in", "$nin"):
            found = value in strings if isinstance(value, str) else any(_same(value, item) for item in others)
            return found == (op == "$in")
        if op == "$contains":
            if isinstance(value, str):
                return isinstance(expected, str) and expected in value
            return isinstance(value, list) and any(_same(item, expected) for item in value)
        # a range: numbers with numbers, strings with strings
        if isinstance(expected, str) != isinstance(value, str) or not _orderable(value):
            return False
        return _RANGES[op](value, expected)
    return match
