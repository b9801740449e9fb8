"""Results that fit: every list or search result pages through its items.

A listing's text block is a short table of the fields an agent acts on (ids, titles, times, scores),
at most :data:`TEXT_LIMIT` characters including its head line and a last line that says how to get
more (``call again with cursor="…"``). Its ``structuredContent`` holds the same items with every field.
Where mediamux slices the list itself, a page holds as many items as the table has room for (up to
``limit``), so text and structured content always agree and the cursor continues right after the last
item shown. Where the provider pages (Mixpeek's ``page``/``page_size``), the page is the provider's;
rows the table has no room for are named, and stay in ``structuredContent``.

Cursors are ours, opaque to the caller (base64url JSON naming the listing they belong to): a provider's
own paging URL, which only our credentials can open, never reaches a result. Resources page the same way,
through ``?cursor=`` URIs (:func:`json_page`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from mcp_types import CallToolResult, ResourceLink, TextContent
from pydantic import BaseModel, Field

from mediamux.errors import InputError
from mediamux.tools.schemas import opaque

TEXT_LIMIT: Final = 2000  # characters of a listing's text block
RESOURCE_LIMIT: Final = 2000  # characters of a listing resource's JSON
MAX_OFFSET: Final = 100_000
NONE: Final = "–"

# Advertised as a bare string: what a cursor is, is said once in the server instructions.
Cursor = Annotated[str | None, Field(max_length=512), opaque()]


# -- cursors -------------------------------------------------------------------------------------


def make_cursor(kind: str, **state: Any) -> str:
    raw = json.dumps({"k": kind, **state}, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def read_cursor(kind: str, cursor: str | None, *, argument: str = "cursor") -> dict[str, Any]:
    """The state a cursor of listing ``kind`` carries; {} for the first page."""
    if not cursor:
        return {}
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        state = None
    offset = state.get("o", 0) if isinstance(state, dict) else None
    if (
        not isinstance(state, dict)
        or state.get("k") != kind
        or not isinstance(offset, int)
        or not 0 <= offset <= MAX_OFFSET
    ):
        raise InputError(
            "not a cursor of this listing",
            arguments=(argument,),
            advice="pass the next_cursor this listing returned last, or leave it out for the first page",
        )
    return state


def offset_of(kind: str, cursor: str | None, *, argument: str = "cursor") -> int:
    return int(read_cursor(kind, cursor, argument=argument).get("o", 0))


def next_offset(kind: str, start: int, total: int) -> Callable[[int], str | None]:
    """For a listing sliced from ``total`` items at ``start``: the cursor after the first ``n`` shown."""
    return lambda n: make_cursor(kind, o=start + n) if start + n < total else None


def span(start: int, n: int, total: int) -> str:
    """What a head line adds when a page holds part of a listing: ``; 27–52 here``."""
    return f"; {start + 1}–{start + n} here" if n and (start or n < total) else ""


# -- the text table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    width: int = 40  # characters a cell may take; longer values end in "…"


def cell(value: object, width: int) -> str:
    if value is None or value == "":
        text = NONE
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.4g}" if math.isfinite(value) else str(value)
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def seconds(start: float | None, end: float | None = None) -> str:
    """A time or span in seconds, as a table shows it: ``12.5–20 s``."""
    if start is None:
        return NONE
    return f"{start:g}–{end:g} s" if end is not None else f"{start:g} s"


def moment(iso: str | None) -> str | None:
    """An ISO 8601 time as a table shows it: ``2026-12-02 10:11:12`` (UTC; the structured copy keeps
    the original)."""
    if not iso:
        return None
    try:
        parsed = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def _line(cells: Sequence[str]) -> str:
    return " | ".join(cells)


def more_line(cursor: str | None) -> str | None:
    return f'more: call again with cursor="{cursor}"' if cursor else None


@dataclass
class Shown:
    """A page as fitted: how many of the candidate items it holds, its cursor, and its text block."""

    count: int
    next_cursor: str | None
    text: str

    def result(self, view: BaseModel, *, links: Sequence[ResourceLink] = ()) -> CallToolResult:
        """The page's result: this text block, the structured page, and links to the items."""
        return CallToolResult(
            content=[TextContent(type="text", text=self.text), *links],
            structured_content=view.model_dump(mode="json", by_alias=True),
        )


def fit(
    *,
    head: Callable[[int], str],
    columns: Sequence[Column],
    rows: Sequence[Sequence[object]],
    next_cursor: Callable[[int], str | None],
    keep_all: bool = False,
    more: Callable[[str | None], str | None] = more_line,
    cut_note: Callable[[int, int], str] | None = None,
    notes: Sequence[str] = (),
    limit: int = TEXT_LIMIT,
) -> Shown:
    """Fit ``rows`` (one per candidate item, in order) into a text block of at most ``limit`` characters.

    ``head(n)`` is the first line (then ``notes``, one short line each) and ``next_cursor(n)`` the cursor that continues after the first ``n``
    candidates (None at the end); ``more`` words the last line from it. Without ``keep_all`` the page
    shrinks to the rows that fit. With it (the provider fixed the page) every candidate stays in the
    page and the rows without room are named by ``cut_note(shown, total)`` instead.
    """
    widths = [c.width for c in columns]
    lines = [_line([cell(v, w) for v, w in zip(row, widths, strict=True)]) for row in rows]
    header = _line([c.name for c in columns])

    def text(n: int) -> str:
        parts = [head(n if not keep_all else len(rows)), *(cell(note, limit // 4) for note in notes)]
        if rows:
            parts += [header, *lines[:n]]
        if keep_all and n < len(rows):
            parts.append((cut_note or _cut_note)(n, len(rows)))
        last = more(next_cursor(len(rows) if keep_all else n))
        if last:
            parts.append(last)
        return "\n".join(parts)

    shown = len(rows)
    # Grow one row at a time: head and last line change by a few digits with n, so measure each (the
    # loop stops at the limit, so it never builds more than a couple of thousand characters a step).
    for n in range(1, len(rows) + 1):
        if len(text(n)) > limit:
            shown = n - 1
            break
    shown = max(shown, 1) if rows else 0
    if shown and len(text(shown)) > limit:  # one row alone does not fit, though its cells are short
        over = len(text(shown)) - limit
        lines[0] = lines[0][: max(1, len(lines[0]) - over - 1)] + "…"
    body = text(shown)
    count = len(rows) if keep_all else shown
    return Shown(count=count, next_cursor=next_cursor(count), text=body)


def _cut_note(shown: int, total: int) -> str:
    return f"rows {shown + 1}–{total} of this page: in structuredContent only (no room here)"


# -- resources -----------------------------------------------------------------------------------


def json_page(
    items: Sequence[Any],
    *,
    key: str,
    next_uri: Callable[[int], str | None],
    extra: dict[str, Any] | None = None,
    limit: int = RESOURCE_LIMIT,
) -> str:
    """A listing resource's JSON, ``{...extra, key: [...], "next": uri}``: as many of ``items`` (the
    candidates, in order) as fit in ``limit`` characters, at least one. ``next_uri(n)`` is the URI
    that reads on after the first ``n``, None at the end."""

    def render(n: int) -> str:
        body: dict[str, Any] = {**(extra or {}), key: list(items[:n])}
        after = next_uri(n)
        if after is not None:
            body["next"] = after
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    shown = len(items)
    for n in range(1, len(items) + 1):
        if len(render(n)) > limit:
            shown = n - 1
            break
    return render(max(shown, 1) if items else 0)
