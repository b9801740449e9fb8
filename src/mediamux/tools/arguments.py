"""A call's arguments that fail the tool's schema, told the way every other error is told.

The SDK validates arguments against a model it builds from each tool's signature, before the tool
runs, and reports pydantic's own text: type codes, the whole input echoed back, union branches by
their internal names and a pydantic.dev link per error. ``describe`` turns that ValidationError
into ``argument: what is wrong, got what``, one clause per argument, so a model reads the same
shape whether the schema or the tool body refused the call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from mediamux.errors import FIX_ARGUMENTS

MAX_ARGUMENTS = 5

# A union reports one error per branch; a branch whose type did not match says nothing useful
# when another branch, of the type that was given, says what is actually wrong.
_TYPE_MISMATCH = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}
_BOUNDS = {
    "less_than_equal": ("at most", "le"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "greater_than": ("more than", "gt"),
}
_LENGTHS = {
    "string_too_short": ("at least", "min_length", "character"),
    "string_too_long": ("at most", "max_length", "character"),
    "too_short": ("at least", "min_length", "item"),
    "too_long": ("at most", "max_length", "item"),
}
# A unit at the start of a field's description ("Seconds of music", "Whole US dollars to add").
_UNIT = re.compile(r"^(seconds|whole US dollars|US dollars|bytes|percent)\b", re.IGNORECASE)
_GOT_MAX_CHARS = 40


def describe(exc: ValidationError, schema: Mapping[str, Any] | None = None) -> tuple[str, list[str]]:
    """The message for an invalid call, and the top-level arguments it names."""
    problems: dict[str, list[tuple[str, bool]]] = {}
    for error in exc.errors(include_url=False):
        loc = tuple(error.get("loc", ()))
        # A dict key that fails its pattern is reported at "[key]": it is the key, not a field.
        is_key = bool(loc) and loc[-1] == "[key]"
        path, field = _locate(
            loc[:-1] if is_key else loc, schema or {}, keep_last=error.get("type") == "extra_forbidden"
        )
        text, mismatch = _problem(error, field)
        problems.setdefault(path or "arguments", []).append((f"key {text}" if is_key else text, mismatch))
    for path, found in list(problems.items()):
        # "must be a whole number" from one branch of a union, beside what is wrong inside the
        # list the caller did give (another branch), is the misleading half: drop it.
        deeper = any(
            other.startswith(path + ".") and any(not mismatch for _, mismatch in errs)
            for other, errs in problems.items()
        )
        if deeper and all(mismatch for _, mismatch in found):
            del problems[path]
    clauses = []
    for path, found in list(problems.items())[:MAX_ARGUMENTS]:
        meaningful = [text for text, mismatch in found if not mismatch]
        phrases = meaningful or [text for text, _ in found]
        clauses.append(f"{path}: {' or '.join(dict.fromkeys(phrases))}")
    if len(problems) > MAX_ARGUMENTS:
        clauses.append(f"and {len(problems) - MAX_ARGUMENTS} more")
    arguments = list(dict.fromkeys(path.split(".")[0] for path in problems))
    return "; ".join([*clauses, FIX_ARGUMENTS]), arguments


def _problem(error: Any, field: Mapping[str, Any]) -> tuple[str, bool]:
    """What is wrong with one value, and whether it is only "not of this branch's type"."""
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "missing":
        return "required", False
    if kind in _TYPE_MISMATCH:
        return _with_got(f"must be {_TYPE_MISMATCH[kind]}", value), True
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        unit = _unit(field)
        return _with_got(f"{words} {_number(ctx.get(key))}{' ' + unit if unit else ''}", value), False
    if kind in _LENGTHS:
        words, key, noun = _LENGTHS[kind]
        limit = ctx.get(key)
        return f"{words} {limit} {noun}{'' if limit == 1 else 's'}", False
    if kind == "string_pattern_mismatch":
        return _with_got(f"must match {ctx.get('pattern')}", value), False
    if kind in ("literal_error", "enum"):
        return _with_got(f"one of {ctx.get('expected')}", value), False
    if kind == "extra_forbidden":
        return "not a field this takes", False
    message = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message[:1].lower() + message[1:], False


def _with_got(text: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"{text}, got {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"{text}, got {_number(value)}"
    if isinstance(value, str) and len(value) <= _GOT_MAX_CHARS:
        return f"{text}, got {value!r}"
    return text


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _unit(field: Mapping[str, Any]) -> str:
    found = _UNIT.match(str(field.get("description", "")))
    if found is None:
        return ""
    word = found.group(1)
    return word[:1].lower() + word[1:]


# -- where in the schema an error points -----------------------------------------------------------


def _locate(
    loc: tuple[Any, ...], schema: Mapping[str, Any], *, keep_last: bool = False
) -> tuple[str, Mapping[str, Any]]:
    """The argument's path as the caller wrote it, and its schema.

    pydantic's ``loc`` also names the union branch it tried (``constrained-int``,
    ``function-after[…]``, a model's name); a part that is no field at this point of the schema is
    one of those, and is left out of the path.
    """
    defs = schema.get("$defs") or {}
    node: Mapping[str, Any] = schema
    path: list[str] = []
    for index, part in enumerate(loc):
        child = _child(node, part, defs)
        if child is None:
            # Named anyway: an argument the schema does not list (or no schema), or the unknown
            # field an extra_forbidden error is about.
            if not path or (keep_last and index == len(loc) - 1):
                path.append(str(part))
            continue
        path.append(str(part))
        node = child
    return ".".join(path), _resolve(node, defs)


def _child(node: Mapping[str, Any], part: Any, defs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for option in _options(node, defs):
        if isinstance(part, int):
            prefix = option.get("prefixItems")
            if isinstance(prefix, list) and part < len(prefix):
                return prefix[part]
            if isinstance(option.get("items"), Mapping):
                return option["items"]
            continue
        properties = option.get("properties")
        if isinstance(properties, Mapping) and part in properties:
            return properties[part]
        if isinstance(properties, Mapping):
            continue
        # A dict argument: its values' schema, under any key.
        for keyed in (option.get("patternProperties") or {}).values():
            if isinstance(keyed, Mapping):
                return keyed
        extra = option.get("additionalProperties")
        if isinstance(extra, Mapping):
            return extra
    return None


def _options(node: Mapping[str, Any], defs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    node = _resolve(node, defs)
    found = [node]
    for key in ("anyOf", "oneOf", "allOf"):
        for option in node.get(key) or []:
            if isinstance(option, Mapping):
                found += _options(option, defs)
    return found


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = 0
    while isinstance(node.get("$ref"), str) and seen < 20:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = defs.get(name)
        if not isinstance(target, Mapping):
            break
        # A $ref beside a description (pydantic puts the field's description next to the ref) keeps it.
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        seen += 1
    return node
