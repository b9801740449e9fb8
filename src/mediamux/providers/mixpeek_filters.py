"""Mixpeek search filters: one reader for what callers write, one writer per API generation.

Callers write either generation's shape and get the same meaning:

* v1 (``mixpeek-v1.md``): ``{"AND" | "OR" | "NOT": [{"field", "operator", "value"} | group], "case_sensitive"?}``
  with the operators ``eq ne gt lt gte lte in nin contains starts_with ends_with regex exists is_null text
  phrase words`` and three geo operators;
* v0 (the quickstart): conditions name the field ``key`` and a group may be ``NOR``, which is v1's ``NOT``
  (its conditions must all be false).

A bare condition is read as a group of one, and a condition without an operator as ``eq``: the tolerant
readings of the documents' silence. Everything else is checked here, before any request: a misspelt group
key, an operator the target generation lacks, a value that cannot fit its operator. The error names where
in the filter the problem is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from mediamux.providers.errors import InvalidRequest

Generation = Literal["v0", "v1"]

V0_OPERATORS: Final = frozenset(
    {"eq", "ne", "gt", "lt", "gte", "lte", "in", "nin", "is_null", "text", "exists"}
)
GEO_OPERATORS: Final = frozenset({"geo_radius", "geo_bounding_box", "geo_polygon"})
V1_OPERATORS: Final = (
    V0_OPERATORS | {"contains", "starts_with", "ends_with", "regex", "phrase", "words"} | GEO_OPERATORS
)
GROUP_KEYS: Final = ("AND", "OR", "NOT", "NOR")
MAX_CONDITIONS = 100
MAX_DEPTH = 8
FIELD_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True)
class Condition:
    field: str
    operator: str
    value: Any


@dataclass(frozen=True)
class Group:
    """``all_of`` AND ``any_of`` (when given) AND none of ``none_of``."""

    all_of: tuple[Condition | Group, ...] | None = None
    any_of: tuple[Condition | Group, ...] | None = None
    none_of: tuple[Condition | Group, ...] | None = None
    case_sensitive: bool | None = None

    def to_v1(self) -> dict[str, Any]:
        return self._dump("field", "NOT")

    def to_v0(self) -> dict[str, Any]:
        return self._dump("key", "NOR")

    def _dump(self, field_key: str, negation: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, items in (("AND", self.all_of), ("OR", self.any_of), (negation, self.none_of)):
            if items is not None:
                out[name] = [
                    item._dump(field_key, negation)
                    if isinstance(item, Group)
                    else {field_key: item.field, "operator": item.operator, "value": item.value}
                    for item in items
                ]
        if self.case_sensitive is not None:
            out["case_sensitive"] = self.case_sensitive
        return out


@dataclass
class _Reading:
    generation: Generation
    operation: str
    conditions: int = 0
    problems: list[str] = field(default_factory=list)


def parse_filters(raw: Any, generation: Generation, *, operation: str = "search") -> Group:
    """Read a caller's filter (either generation's shape) for ``generation``.

    Raises:
        InvalidRequest: what is wrong and where, before anything is sent.
    """
    reading = _Reading(generation, operation)
    group = _group(raw, "filters", 1, reading)
    if reading.problems:
        raise InvalidRequest(
            f"Mixpeek {operation}: invalid filters: " + "; ".join(reading.problems[:5]),
            provider="mixpeek",
            operation=operation,
        )
    assert group is not None
    return group


def _group(raw: Any, where: str, depth: int, reading: _Reading) -> Group | None:
    if not isinstance(raw, dict):
        reading.problems.append(f"{where}: expected an object with AND, OR or NOT, got {type(raw).__name__}")
        return None
    if depth > MAX_DEPTH:
        reading.problems.append(f"{where}: groups nest at most {MAX_DEPTH} deep")
        return None
    if not any(k in raw for k in GROUP_KEYS) and ("field" in raw or "key" in raw):
        condition = _condition(raw, where, reading)
        return Group(all_of=(condition,)) if condition is not None else None
    unknown = [k for k in raw if k not in (*GROUP_KEYS, "case_sensitive")]
    if unknown:
        reading.problems.append(
            f"{where}: unknown key {unknown[0]!r} (a group takes AND, OR, NOT (or NOR) and case_sensitive, "
            "in those spellings)"
        )
        return None
    if "NOT" in raw and "NOR" in raw:
        reading.problems.append(f"{where}: NOT and NOR mean the same; give one of them")
        return None
    case = raw.get("case_sensitive")
    if case is not None and not isinstance(case, bool):
        reading.problems.append(f"{where}.case_sensitive: expected true or false")
    parts: dict[str, tuple[Condition | Group, ...] | None] = {}
    for key in GROUP_KEYS:
        if key not in raw:
            continue
        items = raw[key]
        if not isinstance(items, list) or not items:
            reading.problems.append(f"{where}.{key}: needs at least one condition (a non-empty list)")
            continue
        read: list[Condition | Group] = []
        for i, item in enumerate(items):
            at = f"{where}.{key}[{i}]"
            found: Condition | Group | None
            if isinstance(item, dict) and not any(k in item for k in GROUP_KEYS):
                found = _condition(item, at, reading)
            else:
                found = _group(item, at, depth + 1, reading)
            if found is not None:
                read.append(found)
        parts["NOT" if key == "NOR" else key] = tuple(read)
    if not parts and not reading.problems:
        reading.problems.append(f"{where}: a group needs at least one condition under AND, OR or NOT")
    return Group(
        all_of=parts.get("AND"),
        any_of=parts.get("OR"),
        none_of=parts.get("NOT"),
        case_sensitive=case if isinstance(case, bool) else None,
    )


def _condition(raw: dict[str, Any], where: str, reading: _Reading) -> Condition | None:
    reading.conditions += 1
    if reading.conditions > MAX_CONDITIONS:
        if reading.conditions == MAX_CONDITIONS + 1:
            reading.problems.append(f"at most {MAX_CONDITIONS} conditions in one filter")
        return None
    unknown = [k for k in raw if k not in ("field", "key", "operator", "value")]
    if unknown:
        reading.problems.append(
            f"{where}: unknown key {unknown[0]!r} (a condition takes field (or key), operator and value)"
        )
        return None
    if "field" in raw and "key" in raw and raw["field"] != raw["key"]:
        reading.problems.append(f"{where}: field and key name different fields; give one of them")
        return None
    spelled = "field" if "field" in raw else "key"
    name = raw.get(spelled)
    if not isinstance(name, str) or len(name) > 200 or not FIELD_RE.fullmatch(name):
        reading.problems.append(
            f"{where}.{spelled}: {str(name)[:60]!r} is not a field path like metadata.lang"
        )
        return None
    operator = raw.get("operator", "eq")
    allowed = V1_OPERATORS if reading.generation == "v1" else V0_OPERATORS
    if operator not in allowed:
        known = operator in V1_OPERATORS
        reading.problems.append(
            f"{where}.operator: the {reading.generation} API has no {operator!r} operator"
            if known
            else f"{where}.operator: {str(operator)[:40]!r} is not an operator; one of {', '.join(sorted(allowed))}"
        )
        return None
    value = raw.get("value")
    problem = _value_problem(operator, value)
    if problem is not None:
        reading.problems.append(f"{where}.value: operator {operator!r} {problem}")
        return None
    if operator in ("exists", "is_null") and value is None:
        value = True
    return Condition(field=name, operator=operator, value=value)


def _value_problem(operator: str, value: Any) -> str | None:
    scalar = (str, int, float, bool)
    if operator in ("in", "nin"):
        if not isinstance(value, list) or not value or not all(isinstance(v, scalar) for v in value):
            return "needs a non-empty list of values"
    elif operator in ("gt", "lt", "gte", "lte"):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return "needs a number or a date string"
    elif operator in ("text", "phrase", "words", "starts_with", "ends_with", "regex"):
        if not isinstance(value, str) or not value.strip():
            return "needs a non-empty string"
        if operator == "regex":
            try:
                re.compile(value)
            except re.error as exc:
                return f"needs a valid regular expression ({exc})"
    elif operator in ("exists", "is_null"):
        if value is not None and not isinstance(value, bool):
            return "takes true or false"
    elif operator in GEO_OPERATORS:
        if not isinstance(value, dict) or not value:
            return "needs an object describing the area"
    elif operator in ("eq", "ne", "contains") and isinstance(value, dict):
        return "needs a value, not an object"
    return None


__all__ = ["GROUP_KEYS", "V0_OPERATORS", "V1_OPERATORS", "Condition", "Generation", "Group", "parse_filters"]
