"""Tool schemas as hosts read them: pydantic's JSON Schema without the parts that mean nothing.

pydantic writes a ``title`` on every model and field (``"Wait S"``), spells an optional argument
as ``anyOf [X, {"type": "null"}]`` with ``default: null``, keeps every nested model under
``$defs`` even when it is used once, and writes ``additionalProperties: true`` where that is
the default anyway. A host sends all of that to the model on every turn. These functions rewrite a
schema into the same meaning in fewer tokens. They only change what is advertised: the SDK
validates arguments against the pydantic model of the tool's signature, never against this
schema, so what a call may contain is exactly as strict as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import WithJsonSchema

Schema = dict[str, Any]

# Keywords whose values are schemas (JSON Schema 2020-12), by shape; every other keyword's value is
# data (enum, const, default, examples, required …) and is never rewritten.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_SCHEMA_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")
_NULL: Schema = {"type": "null"}
_DEFS_PREFIX = "#/$defs/"


def compact_input_schema(schema: Schema) -> Schema:
    """An argument schema that says the same in fewer tokens.

    An optional argument (``X | None = None``) becomes plain ``X``, not required: leaving it out is
    how a caller says "unset", and the tool still accepts an explicit null. A nullable argument
    with no default, or with another default, keeps its null.
    """
    return _inline_single_use(_walk(schema, _input_node))


def compact_output_schema(schema: Schema) -> Schema:
    """A result schema that says the same in fewer tokens; null stays wherever a value may be null."""
    return _inline_single_use(_walk(schema, _output_node))


def _walk(node: Any, rewrite: Callable[[Schema], Schema]) -> Any:
    """``rewrite`` applied to every subschema, innermost first."""
    if not isinstance(node, dict):
        return node
    out: Schema = {}
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _walk(sub, rewrite) for name, sub in value.items()}
        elif key in _SCHEMA_ONE:
            out[key] = _walk(value, rewrite)
        elif key in _SCHEMA_MANY and isinstance(value, list):
            out[key] = [_walk(sub, rewrite) for sub in value]
        else:
            out[key] = value
    return rewrite(out)


def _common(node: Schema) -> Schema:
    node = {k: v for k, v in node.items() if k != "title"}
    if node.get("additionalProperties") is True:
        del node["additionalProperties"]  # the default
    return node


def _input_node(node: Schema) -> Schema:
    node = _common(node)
    if node.get("default") in ({}, []):
        del node["default"]  # an empty default says only "optional", which leaving it out says too
    options = node.get("anyOf")
    if "default" in node and node["default"] is None:
        del node["default"]
        if isinstance(options, list) and _NULL in options:
            rest = [o for o in options if o != _NULL]
            siblings = {k: v for k, v in node.items() if k != "anyOf"}
            node = _merge(rest[0], siblings) if len(rest) == 1 else {**siblings, "anyOf": rest}
    return _nullable(node)


def _output_node(node: Schema) -> Schema:
    node = _common(node)
    node.pop("default", None)  # describes an input; a result always carries its value
    return _nullable(node)


def _nullable(node: Schema) -> Schema:
    """``anyOf [{"type": T, …}, {"type": "null"}]`` → ``{"type": [T, "null"], …}``."""
    options = node.get("anyOf")
    if not (isinstance(options, list) and len(options) == 2 and _NULL in options):
        return node
    (other,) = [o for o in options if o != _NULL]
    kind = other.get("type")
    if not isinstance(kind, str) or {"anyOf", "oneOf", "allOf", "$ref", "const"} & other.keys():
        return node
    merged = _merge(other, {k: v for k, v in node.items() if k != "anyOf"})
    merged["type"] = [kind, "null"]
    if "enum" in merged and None not in merged["enum"]:
        merged["enum"] = [*merged["enum"], None]
    return merged


def _merge(inner: Schema, outer: Schema) -> Schema:
    """``inner`` with the keywords written beside it; two descriptions are both kept, outer first."""
    merged = {**inner, **outer}
    if "description" in inner and "description" in outer and inner["description"] != outer["description"]:
        merged["description"] = f"{outer['description']}; {inner['description']}"
    return merged


def _inline_single_use(schema: Schema) -> Schema:
    """Every ``$defs`` entry referenced once (and not from inside itself) written where it is used."""
    while True:
        defs = schema.get("$defs")
        if not isinstance(defs, dict) or not defs:
            return schema
        counts: dict[str, int] = {}
        _count_refs(schema, counts)
        once = {
            name for name, body in defs.items() if counts.get(name, 0) == 1 and not _refers_to(body, name)
        }
        if not once:
            return schema
        name = sorted(once)[0]
        body = defs[name]
        remaining = {k: v for k, v in defs.items() if k != name}
        schema = {k: v for k, v in schema.items() if k != "$defs"}
        if remaining:
            schema["$defs"] = remaining
        schema = _replace_ref(schema, name, body)


def _count_refs(node: Any, counts: dict[str, int]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS_PREFIX):
            name = ref[len(_DEFS_PREFIX) :]
            counts[name] = counts.get(name, 0) + 1
        for value in node.values():
            _count_refs(value, counts)
    elif isinstance(node, list):
        for value in node:
            _count_refs(value, counts)


def _refers_to(node: Any, name: str) -> bool:
    counts: dict[str, int] = {}
    _count_refs(node, counts)
    return name in counts


def _replace_ref(node: Any, name: str, body: Schema) -> Any:
    if isinstance(node, dict):
        if node.get("$ref") == _DEFS_PREFIX + name:
            return _merge(body, {k: v for k, v in node.items() if k != "$ref"})
        return {k: _replace_ref(v, name, body) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_ref(v, name, body) for v in node]
    return node


def opaque(description: str | None = None, *, kind: str = "string") -> WithJsonSchema:
    """Advertise an opaque argument (an id, a path, a URL) as a plain string, without its length and
    character limits.

    A model copies ids from earlier results and names files it was given; a pattern tells it nothing.
    The limits still guard the tool, which validates against the ``Field`` constraints beside this
    marker, never against the advertised schema, and refuses a malformed value with its own error
    before any upstream call.
    """
    schema: Schema = {"type": kind}
    if description:
        schema["description"] = description
    return WithJsonSchema(schema)
