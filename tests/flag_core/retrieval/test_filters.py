"""Metadata filters: every operator's meaning, missing fields, JSON's bool/number split, nesting, and bad filters
refused whole when compiled (naming the bad part), never ignored."""

from __future__ import annotations

from typing import Any

import pytest

from flag_core.retrieval import compile_filter

ROWS: list[dict[str, Any]] = [
    {"year": 2019, "kind": "paper", "tags": ["bio", "ml"], "meta": {"lang": "en"}, "score": 0.5},
    {"year": 2021, "kind": "note", "tags": ["ml"], "meta": {"lang": "de"}, "flag": True},
    {"year": 2023, "kind": "paper", "tags": [], "title": "Deep panda studies"},
    {"kind": "book", "year": "2020", "flag": 1},
    {},
]


def matching(spec: Any) -> list[int]:
    match = compile_filter(spec)
    assert match is not None
    return [i for i, row in enumerate(ROWS) if match(row)]


@pytest.mark.parametrize(("spec", "expected"), [
    ({"kind": "paper"}, [0, 2]),
    ({"kind": {"$eq": "paper"}}, [0, 2]),
    ({"kind": {"$ne": "paper"}}, [1, 3, 4]),  # a missing field is "not equal"
    ({"kind": {"$in": ["note", "book"]}}, [1, 3]),
    ({"kind": {"$nin": ["note", "book"]}}, [0, 2, 4]),
    ({"year": {"$gt": 2019}}, [1, 2]),  # "2020" is a str: never in a numeric range
    ({"year": {"$gte": 2019, "$lt": 2023}}, [0, 1]),
    ({"year": {"$lte": 2021}}, [0, 1]),
    ({"year": {"$gte": "2000"}}, [3]),  # strings compare with strings
    ({"score": {"$lt": 1}}, [0]),
    ({"tags": {"$contains": "ml"}}, [0, 1]),
    ({"title": {"$contains": "panda"}}, [2]),
    ({"title": {"$exists": True}}, [2]),
    ({"title": {"$exists": False}}, [0, 1, 3, 4]),
    ({"meta.lang": "en"}, [0]),
    ({"flag": True}, [1]),  # true is not 1
    ({"flag": 1}, [3]),  # and 1 is not true
    ({"tags": []}, [2]),
    ({"kind": "paper", "year": 2023}, [2]),
    ({"$or": [{"kind": "note"}, {"year": 2023}]}, [1, 2]),
    ({"$and": [{"kind": "paper"}, {"year": {"$lt": 2020}}]}, [0]),
    ({"$not": {"kind": "paper"}}, [1, 3, 4]),
    ({}, [0, 1, 2, 3, 4]),
])
def test_each_operator_means_what_it_says(spec: dict[str, Any], expected: list[int]) -> None:
    assert matching(spec) == expected


@pytest.mark.parametrize(("spec", "error", "message"), [
    ({"year": {"$greater": 3}}, ValueError, r"filter\['year'\].*unknown operator '\$greater'"),
    ({"$nor": [{"a": 1}]}, ValueError, r"unknown operator '\$nor'"),
    ({"year": {"$gt": [1, 2]}}, TypeError, r"\$gt.*compares numbers or strings"),
    ({"year": {"$gt": True}}, TypeError, r"\$gt.*compares numbers or strings"),
    ({"year": {"$in": "2019"}}, TypeError, r"\$in.*list of values"),
    ({"year": float("nan")}, ValueError, "NaN"),
    ({"year": {"$exists": 1}}, TypeError, r"\$exists.*true or false"),
    ({"$or": []}, ValueError, r"\$or takes a non-empty list"),
    ({"$and": [5]}, TypeError, r"\$and\[0\] must be a filter mapping"),
    ({"year": {}}, TypeError, "empty one"),
    ({3: 1}, TypeError, "keys are field names"),
    ("kind == paper", TypeError, "filter must be a mapping"),
])
def test_bad_filters_are_refused_whole_when_compiled(spec: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        compile_filter(spec)


def test_a_callable_gets_a_copy_and_must_answer_true_or_false() -> None:
    def editing(metadata: dict[str, Any]) -> bool:
        metadata["kind"] = "changed"
        metadata.get("meta", {})["lang"] = "changed"
        return True

    match = compile_filter(editing)
    assert match is not None and match(ROWS[0])
    assert ROWS[0]["kind"] == "paper" and ROWS[0]["meta"] == {"lang": "en"}
    answers_none = compile_filter(lambda metadata: None)  # type: ignore[arg-type,return-value]
    assert answers_none is not None
    with pytest.raises(TypeError, match="must return True or False"):
        answers_none(ROWS[0])
    assert compile_filter(None) is None
