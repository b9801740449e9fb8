"""Small readers and checks every provider client shares, so each rule is written once."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mediamux.providers.errors import InvalidRequest

if TYPE_CHECKING:
    from mediamux.providers.transport import Transport

M = TypeVar("M", bound=BaseModel)


class Tolerant(BaseModel):
    """Base of the response models: a field a provider adds later is kept, never a reason to fail a read."""

    model_config = ConfigDict(extra="allow")


def read_each(
    model: type[M], items: Iterable[Any], transport: Transport, operation: str, what: str
) -> list[M]:
    """Each item of a listing read as ``model``.

    An item that cannot be read fails the listing as the provider's fault, naming the item and the
    field: a bare ValidationError would reach the model as pydantic's text, and dropping the item
    would hand it a listing with something missing.
    """
    read = []
    for index, item in enumerate(items):
        try:
            read.append(model.model_validate(item))
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in error.get("loc", ()))
            raise transport.malformed(operation, f"{what} {index}: {field}: {error['msg']}") from None
    return read


def number(value: object) -> float | None:
    """A number from a provider's answer, or None where there is none to read.

    Integers, floats and numeric strings ("12", " 1.5 ") are read: the APIs send either. Booleans
    are not numbers here (``True`` is no duration), and NaN or infinity is no measurement and cannot
    be written as JSON.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        result = float(value)
    except (ValueError, OverflowError):
        return None
    return result if math.isfinite(result) else None


SEGMENT_RULE: Final = "a letter or digit, then letters, digits, '_' or '-'; at most 128 characters"
DOTTED_SEGMENT_RULE: Final = (
    "a letter or digit, then letters, digits, '_', '-', '.' or ':'; at most 128 characters"
)
_SEGMENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_DOTTED_SEGMENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def path_segment(
    value: str, what: str, *, title: str, provider: str, operation: str, dotted: bool = False
) -> str:
    """An id from a caller, a resource URI or a provider's answer, as one URL path segment.

    The rule: a letter or digit, then letters, digits, '_' or '-', at most 128 characters. Every id
    the provider documents fits it (muse.ai: base62 and hex; Mixpeek: UUIDs; MuAPI: "abc123xyz"),
    and nothing that fits can leave its segment: no separator, no '.' or '..', no query, fragment
    or percent escape. So the value is used as given, never stripped or escaped, and anything else
    is refused before a request is made.

    ``dotted`` also lets '.' and ':' through after the first character, for an id whose format no
    document pins down and which the provider hands back to be polled with (MuAPI's request_id,
    NOTES unknown 27): refusing a real one would strand a paid job, and neither character changes a
    path that does not start with the segment.
    """
    pattern, rule = (_DOTTED_SEGMENT, DOTTED_SEGMENT_RULE) if dotted else (_SEGMENT, SEGMENT_RULE)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidRequest(
            f"{title} {operation}: {str(value)[:100]!r} is not a valid {what} ({rule})",
            provider=provider,
            operation=operation,
        )
    return value
