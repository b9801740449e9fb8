"""The v1 filter language and the feature_search stage, over the emulator's documents.

Filters (``LogicalOperator``): ``{"AND" | "OR" | "NOT": [condition | group], "case_sensitive"?}`` with
conditions ``{field, operator, value}``. NOT holds when all its conditions are false. Operators and the
readings chosen where the contract gives only names (GUESSES):

- ``eq ne gt lt gte lte in nin is_null exists``: as in the v0 quickstart (missing fields match ``ne``/``nin``
  and no comparison; ``eq``/``in`` on a list field match any element; ``exists``/``is_null`` take true or
  false, true when omitted).
- ``contains``: a substring of a string field, or an element of a list field. ``starts_with``,
  ``ends_with``: of a string field. ``regex``: Python ``re.search`` on a string field.
- ``text``: every word of the value occurs in the field; ``words``: at least one does; ``phrase``: the words
  occur together in that order.
- Geo operators are named by the contract but not emulated: a filter using one is refused with 422.

Feature search: ``lexical: true`` scores term matches (BM25-like) over every string field of a document and
drops documents without a match; otherwise documents are ranked by the cosine similarity of hashed
bag-of-words vectors of their transcription, description and OCR text, which needs the collection's
embedding index. Several searches are fused by reciprocal rank (k = 60). Everything is deterministic.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from mediamux.sandbox.mixpeek import _MISSING, _compare, _equal, fulltext_score, lookup, semantic_score

OPERATORS = frozenset(
    {
        "eq", "ne", "gt", "lt", "gte", "lte", "in", "nin", "contains", "starts_with", "ends_with", "regex",
        "exists", "is_null", "text", "phrase", "words",
    }
)  # fmt: skip
GEO = frozenset({"geo_radius", "geo_bounding_box", "geo_polygon"})
RRF_K = 60


class FilterCondition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    operator: str = "eq"
    value: Any = None


class LogicalOperator(BaseModel):
    model_config = ConfigDict(extra="forbid")
    AND: list[FilterCondition | LogicalOperator] | None = None
    OR: list[FilterCondition | LogicalOperator] | None = None
    NOT: list[FilterCondition | LogicalOperator] | None = None
    case_sensitive: bool = False


LogicalOperator.model_rebuild()


def filter_problems(logic: LogicalOperator, where: list[str | int]) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    for key in ("AND", "OR", "NOT"):
        for i, item in enumerate(getattr(logic, key) or []):
            at = [*where, key, i]
            if isinstance(item, LogicalOperator):
                problems += filter_problems(item, at)
            elif item.operator in GEO:
                problems.append(
                    {
                        "loc": [*at, "operator"],
                        "msg": "geo filters are not available here",
                        "type": "value_error",
                    }
                )
            elif item.operator not in OPERATORS:
                problems.append(
                    {
                        "loc": [*at, "operator"],
                        "msg": f"Input should be one of {sorted(OPERATORS)}",
                        "type": "enum",
                    }
                )
    return problems


def _words(text: str, case_sensitive: bool) -> list[str]:
    return re.findall(r"\w+", text if case_sensitive else text.lower())


def condition_matches(cond: FilterCondition, doc: dict[str, Any], case_sensitive: bool) -> bool:
    found, op, value = lookup(doc, cond.field), cond.operator, cond.value
    if op == "eq":
        return _equal(found, value, case_sensitive)
    if op == "ne":
        return not _equal(found, value, case_sensitive)
    if op in ("gt", "gte", "lt", "lte"):
        return found is not _MISSING and _compare(found, value, op)
    if op in ("in", "nin"):
        hit = any(
            _equal(found, option, case_sensitive)
            for option in (value if isinstance(value, list) else [value])
        )
        return hit if op == "in" else not hit
    if op == "is_null":
        return (found is _MISSING or found is None) == (True if value is None else bool(value))
    if op == "exists":
        return (found is not _MISSING) == (True if value is None else bool(value))
    if op == "contains" and isinstance(found, list):
        return any(_equal(item, value, case_sensitive) for item in found)
    if not isinstance(found, str) or not isinstance(value, str):
        return False
    haystack, needle = (found, value) if case_sensitive else (found.lower(), value.lower())
    if op == "contains":
        return needle in haystack
    if op == "starts_with":
        return haystack.startswith(needle)
    if op == "ends_with":
        return haystack.endswith(needle)
    if op == "regex":
        return re.search(value, found, 0 if case_sensitive else re.IGNORECASE) is not None
    words, wanted = _words(found, case_sensitive), _words(value, case_sensitive)
    if op == "text":
        return all(w in words for w in wanted)
    if op == "words":
        return any(w in words for w in wanted)
    # phrase: the words, together and in order
    return (
        any(words[i : i + len(wanted)] == wanted for i in range(len(words) - len(wanted) + 1))
        if wanted
        else False
    )


def matches(logic: LogicalOperator, doc: dict[str, Any], inherited: bool | None = None) -> bool:
    case = (
        logic.case_sensitive if inherited is None or "case_sensitive" in logic.model_fields_set else inherited
    )

    def holds(item: FilterCondition | LogicalOperator) -> bool:
        if isinstance(item, LogicalOperator):
            return matches(item, doc, case)
        return condition_matches(item, doc, case)

    if logic.AND is not None and not all(holds(i) for i in logic.AND):
        return False
    if logic.OR and not any(holds(i) for i in logic.OR):
        return False
    return not (logic.NOT and any(holds(i) for i in logic.NOT))


def searchable_text(doc: dict[str, Any]) -> str:
    return " ".join(str(doc.get(k) or "") for k in ("transcription", "description", "ocr_text"))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() if not str(k).startswith("_") for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def score(doc: dict[str, Any], query: str, *, lexical: bool) -> float | None:
    """The document's score for one search; None when a lexical search does not match it."""
    if lexical:
        found = fulltext_score(
            query, " ".join(s for k, v in doc.items() if k != "thumbnail_url" for s in _strings(v))
        )
        return found if found > 0 else None
    return semantic_score(query, searchable_text(doc))


def fuse(rankings: list[list[tuple[str, float]]]) -> dict[str, float]:
    """Reciprocal rank fusion of several searches' (document id, score) lists, best first."""
    if len(rankings) == 1:
        return dict(rankings[0])
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, (doc_id, _) in enumerate(ranking, start=1):
            fused[doc_id] = round(fused.get(doc_id, 0.0) + 1.0 / (RRF_K + rank), 6)
    return fused
