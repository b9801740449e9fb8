"""Mixpeek search filters: what callers write (either generation's spelling) and what each API receives."""

from __future__ import annotations

from typing import Any

import pytest

from mediamux.providers.errors import InvalidRequest
from mediamux.providers.mixpeek_filters import parse_filters

EQ = {"field": "metadata.lang", "operator": "eq", "value": "en"}
V1_EQ = {"field": "metadata.lang", "operator": "eq", "value": "en"}
V0_EQ = {"key": "metadata.lang", "operator": "eq", "value": "en"}

# written, sent to v1, sent to v0
TRANSLATIONS: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ({"AND": [EQ]}, {"AND": [V1_EQ]}, {"AND": [V0_EQ]}),
    (
        {"AND": [{"key": "metadata.lang", "operator": "eq", "value": "en"}]},
        {"AND": [V1_EQ]},
        {"AND": [V0_EQ]},
    ),
    ({"NOR": [V0_EQ]}, {"NOT": [V1_EQ]}, {"NOR": [V0_EQ]}),
    ({"NOT": [EQ]}, {"NOT": [V1_EQ]}, {"NOR": [V0_EQ]}),
    (EQ, {"AND": [V1_EQ]}, {"AND": [V0_EQ]}),
    ({"AND": [{"field": "metadata.lang", "value": "en"}]}, {"AND": [V1_EQ]}, {"AND": [V0_EQ]}),
    (
        {"AND": [{"field": "note", "operator": "exists"}], "case_sensitive": True},
        {"AND": [{"field": "note", "operator": "exists", "value": True}], "case_sensitive": True},
        {"AND": [{"key": "note", "operator": "exists", "value": True}], "case_sensitive": True},
    ),
    (
        {"OR": [EQ, {"NOR": [{"key": "views", "operator": "gt", "value": 100}]}], "AND": [EQ]},
        {"AND": [V1_EQ], "OR": [V1_EQ, {"NOT": [{"field": "views", "operator": "gt", "value": 100}]}]},
        {"AND": [V0_EQ], "OR": [V0_EQ, {"NOR": [{"key": "views", "operator": "gt", "value": 100}]}]},
    ),
    (
        {"AND": [{"field": "tags", "operator": "in", "value": ["a", "b"]}]},
        {"AND": [{"field": "tags", "operator": "in", "value": ["a", "b"]}]},
        {"AND": [{"key": "tags", "operator": "in", "value": ["a", "b"]}]},
    ),
]


@pytest.mark.parametrize(("written", "v1", "v0"), TRANSLATIONS)
def test_either_spelling_is_sent_in_each_generations_own(
    written: dict[str, Any], v1: dict[str, Any], v0: dict[str, Any]
) -> None:
    assert parse_filters(written, "v1").to_v1() == v1
    assert parse_filters(written, "v0").to_v0() == v0


@pytest.mark.parametrize("operator", ["contains", "starts_with", "ends_with", "regex", "phrase", "words"])
def test_v1_only_operators_pass_for_v1_and_are_refused_by_name_for_v0(operator: str) -> None:
    written = {"AND": [{"field": "title", "operator": operator, "value": "dog"}]}

    assert parse_filters(written, "v1").to_v1() == written
    with pytest.raises(InvalidRequest, match=f"the v0 API has no '{operator}' operator"):
        parse_filters(written, "v0")


def test_geo_operators_take_an_area() -> None:
    area = {"center": {"lat": 1, "lon": 2}, "radius_m": 5}
    written = {"AND": [{"field": "where", "operator": "geo_radius", "value": area}]}

    assert parse_filters(written, "v1").to_v1() == written
    with pytest.raises(InvalidRequest, match="needs an object"):
        parse_filters({"AND": [{"field": "where", "operator": "geo_radius", "value": 5}]}, "v1")


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ({}, "needs at least one condition"),
        ({"AND": []}, r"filters\.AND: needs at least one condition"),
        ({"and": [EQ]}, "unknown key 'and'"),
        ({"AND": [EQ], "NOT": [EQ], "NOR": [EQ]}, "NOT and NOR mean the same"),
        ({"AND": [{**EQ, "op": "eq"}]}, r"filters\.AND\[0\]: unknown key 'op'"),
        ({"AND": [{"field": "a", "key": "b", "value": 1}]}, "field and key name different fields"),
        ({"AND": [{"field": "a..b", "value": 1}]}, r"filters\.AND\[0\]\.field: 'a\.\.b' is not a field path"),
        ({"AND": [{"key": "1abc", "value": 1}]}, r"\.key: '1abc'"),
        ({"AND": [{"field": "a", "operator": "like", "value": 1}]}, "'like' is not an operator"),
        ({"AND": [{"field": "a", "operator": "in", "value": "x"}]}, "needs a non-empty list"),
        ({"AND": [{"field": "a", "operator": "nin", "value": []}]}, "needs a non-empty list"),
        ({"AND": [{"field": "a", "operator": "gt", "value": True}]}, "needs a number or a date string"),
        ({"AND": [{"field": "a", "operator": "text", "value": " "}]}, "needs a non-empty string"),
        ({"AND": [{"field": "a", "operator": "regex", "value": "(("}]}, "valid regular expression"),
        ({"AND": [{"field": "a", "operator": "exists", "value": "yes"}]}, "takes true or false"),
        ({"AND": [{"field": "a", "operator": "eq", "value": {"x": 1}}]}, "not an object"),
        ({"AND": [EQ], "case_sensitive": "no"}, "case_sensitive: expected true or false"),
        (["AND"], "expected an object"),
    ],
)
def test_malformed_filters_are_refused_saying_where(written: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as caught:
        parse_filters(written, "v1")

    assert caught.value.error_class == "invalid_input" and caught.value.operation == "search"


def test_depth_and_size_are_bounded() -> None:
    deep: dict[str, Any] = {"AND": [EQ]}
    for _ in range(9):
        deep = {"AND": [deep]}
    wide = {"OR": [EQ] * 101}

    with pytest.raises(InvalidRequest, match="nest at most 8 deep"):
        parse_filters(deep, "v1")
    with pytest.raises(InvalidRequest, match="at most 100 conditions"):
        parse_filters(wide, "v1")
