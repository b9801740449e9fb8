"""Advertised schemas say the same as pydantic's, in fewer tokens, and stay valid 2020-12."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field, create_model

from mediamux.tools.schemas import compact_input_schema, compact_output_schema, opaque
from tests.tokens import count


class Point(BaseModel):
    x: int
    y: int | None = None


class Node(BaseModel):
    label: str
    children: list[Node] = []


def arguments_schema(**fields: Any) -> dict[str, Any]:
    return create_model("toolArguments", **fields).model_json_schema()


def accepts(schema: dict[str, Any], instance: Any) -> bool:
    return Draft202012Validator(schema).is_valid(instance)


@pytest.mark.unit
def test_automatic_titles_go_but_a_property_called_title_stays() -> None:
    compact = compact_input_schema(arguments_schema(title=(str, ...), point=(Point, ...)))

    assert "title" in compact["properties"]
    assert "title" not in compact["properties"]["title"]
    assert "title" not in compact and "title" not in compact["properties"]["point"]


@pytest.mark.unit
def test_an_optional_argument_is_its_plain_type_and_not_required() -> None:
    original = arguments_schema(
        limit=(Annotated[int | None, Field(ge=1, description="How many")], None), name=(str, ...)
    )

    compact = compact_input_schema(original)

    assert compact["properties"]["limit"] == {"minimum": 1, "type": "integer", "description": "How many"}
    assert compact["required"] == ["name"]
    for instance in ({"name": "a"}, {"name": "a", "limit": 3}, {"name": "a", "limit": 0}, {"limit": 3}):
        assert accepts(compact, instance) == accepts(original, instance), instance


@pytest.mark.unit
def test_a_nullable_argument_without_a_null_default_keeps_its_null() -> None:
    compact = compact_input_schema(
        arguments_schema(required=(int | None, ...), other=(Literal["a", "b"] | None, "a"))
    )

    assert compact["properties"]["required"]["type"] == ["integer", "null"]
    assert compact["required"] == ["required"]
    assert compact["properties"]["other"]["enum"] == ["a", "b", None]
    assert accepts(compact, {"required": None, "other": None})
    assert not accepts(compact, {"required": None, "other": "c"})


@pytest.mark.unit
def test_a_model_used_once_is_written_in_place_and_a_recursive_one_stays_in_defs() -> None:
    once = compact_input_schema(arguments_schema(point=(Point | None, None)))
    recursive = compact_input_schema(arguments_schema(tree=(Node, ...)))

    assert "$defs" not in once
    assert once["properties"]["point"]["properties"]["x"] == {"type": "integer"}
    assert "Node" in recursive["$defs"]
    assert accepts(recursive, {"tree": {"label": "a", "children": [{"label": "b"}]}})
    assert not accepts(recursive, {"tree": {"label": "a", "children": [{"children": []}]}})


@pytest.mark.unit
def test_a_model_used_twice_stays_shared() -> None:
    compact = compact_input_schema(arguments_schema(start=(Point, ...), end=(Point, ...)))

    assert compact["properties"]["start"] == {"$ref": "#/$defs/Point"}
    assert set(compact["$defs"]) == {"Point"}


@pytest.mark.unit
def test_only_meaningless_keywords_go() -> None:
    compact = compact_input_schema(
        arguments_schema(
            data=(dict[str, Any], {}),
            closed=(dict[str, int], ...),
            tags=(list[str], []),
            mode=(Literal["fast", "slow"], "fast"),
        )
    )

    assert compact["properties"]["data"] == {"type": "object"}  # additionalProperties: true is the default
    assert compact["properties"]["closed"]["additionalProperties"] == {"type": "integer"}
    assert "default" not in compact["properties"]["tags"]
    assert compact["properties"]["mode"]["default"] == "fast"


@pytest.mark.unit
def test_an_opaque_argument_is_advertised_plain_and_still_checked() -> None:
    Id = Annotated[str, Field(min_length=3, pattern=r"^[a-z]+$"), opaque("An id")]
    model = create_model("toolArguments", id=(Id, ...))

    assert compact_input_schema(model.model_json_schema())["properties"]["id"] == {
        "type": "string",
        "description": "An id",
    }
    with pytest.raises(ValueError, match="pattern"):
        model(id="NOT-AN-ID")


@pytest.mark.unit
def test_a_result_schema_keeps_every_null_a_value_may_be() -> None:
    class Result(BaseModel):
        usd: float | None = Field(None, description="Charge")
        status: Literal["ok", "failed"] | None = None
        point: Point | None = None

    original = Result.model_json_schema()
    compact = compact_output_schema(original)

    assert compact["properties"]["usd"] == {"type": ["number", "null"], "description": "Charge"}
    assert compact["properties"]["status"]["enum"] == ["ok", "failed", None]
    assert "default" not in str(compact)
    for instance in (
        {"usd": None, "status": None, "point": None},
        {"usd": 1.5, "status": "ok", "point": {"x": 1, "y": None}},
        {"usd": "1", "status": "ok"},
        {"status": "pending"},
    ):
        assert accepts(compact, instance) == accepts(original, instance), instance


@pytest.mark.unit
@pytest.mark.parametrize("compactor", [compact_input_schema, compact_output_schema])
def test_compact_schemas_are_valid_2020_12_and_smaller(compactor: Any) -> None:
    original = arguments_schema(
        title=(str | None, None), point=(Point, ...), tree=(Node | None, None), mode=(Literal["a"], "a")
    )

    compact = compactor(original)

    Draft202012Validator.check_schema(compact)
    assert count(str(compact)) < count(str(original))
