"""The listing helper: text tables that fit, pages that shrink to them, and cursors that are ours."""

from __future__ import annotations

import json

import pytest

from mediamux.errors import InputError
from mediamux.tools.pages import (
    TEXT_LIMIT,
    Column,
    cell,
    fit,
    json_page,
    make_cursor,
    moment,
    offset_of,
    read_cursor,
)

COLUMNS = (Column("id", 12), Column("title", 40))


def rows(count: int, title: str = "a title of some length") -> list[tuple[object, ...]]:
    return [(f"id{i:04d}", f"{title} {i}") for i in range(count)]


def after(total: int, kind: str = "t") -> object:
    return lambda n: make_cursor(kind, o=n) if n < total else None


def test_a_page_that_fits_keeps_every_row_and_says_nothing_more() -> None:
    shown = fit(head=lambda n: f"{n} things", columns=COLUMNS, rows=rows(5), next_cursor=after(5))

    assert shown.count == 5 and shown.next_cursor is None
    assert shown.text.splitlines() == [
        "5 things",
        "id | title",
        *[f"id{i:04d} | a title of some length {i}" for i in range(5)],
    ]


def test_a_long_list_shrinks_to_the_limit_and_its_cursor_continues_after_the_last_row_shown() -> None:
    shown = fit(head=lambda n: f"1–{n} of 500", columns=COLUMNS, rows=rows(500), next_cursor=after(500))

    assert len(shown.text) <= TEXT_LIMIT
    lines = shown.text.splitlines()
    assert lines[0] == f"1–{shown.count} of 500" and len(lines) == shown.count + 3
    assert lines[-1] == f'more: call again with cursor="{shown.next_cursor}"'
    assert offset_of("t", shown.next_cursor) == shown.count
    # One more row would not have fitted.
    bigger = fit(
        head=lambda n: f"1–{n} of 500",
        columns=COLUMNS,
        rows=rows(shown.count + 1),
        next_cursor=after(500),
        limit=10**6,
    )
    assert len(bigger.text) > TEXT_LIMIT


def test_cells_are_cut_to_their_width_and_kept_on_one_line() -> None:
    assert cell("x" * 50, 10) == "x" * 9 + "…"
    assert cell("two\nlines | and a pipe", 40) == "two lines / and a pipe"
    assert [cell(v, 10) for v in (None, "", True, False, 0.123456789, 3, {"a": 1})] == [
        "–",
        "–",
        "yes",
        "no",
        "0.1235",
        "3",
        '{"a":1}',
    ]


def test_a_row_too_wide_for_the_block_alone_is_cut_and_the_last_line_survives() -> None:
    wide = tuple(Column(f"c{i}", 400) for i in range(8))
    shown = fit(
        head=lambda n: "head",
        columns=wide,
        rows=[tuple("y" * 400 for _ in range(8))] * 3,
        next_cursor=after(3),
    )

    assert shown.count == 1 and len(shown.text) == TEXT_LIMIT
    assert shown.text.splitlines()[2].endswith("…") and shown.text.endswith(f'cursor="{shown.next_cursor}"')


def test_a_provider_page_keeps_every_item_and_names_the_rows_without_room() -> None:
    shown = fit(
        head=lambda n: f"{n} results",
        columns=COLUMNS,
        rows=rows(200),
        next_cursor=lambda n: "3",
        keep_all=True,
        more=lambda page: f"more: call again with page={page}",
    )

    lines = shown.text.splitlines()
    assert shown.count == 200 and shown.next_cursor == "3" and len(shown.text) <= TEXT_LIMIT
    assert lines[0] == "200 results" and lines[-1] == "more: call again with page=3"
    assert lines[-2].startswith(f"rows {len(lines) - 4 + 1}–200 of this page: in structuredContent only")


def test_notes_follow_the_head_line() -> None:
    shown = fit(
        head=lambda n: "head", columns=COLUMNS, rows=rows(1), next_cursor=after(1), notes=["one", "two"]
    )

    assert shown.text.splitlines()[:3] == ["head", "one", "two"]


def test_a_cursor_is_ours_and_names_its_listing() -> None:
    cursor = make_cursor("jobs", o=40, j="job_abc")

    assert read_cursor("jobs", cursor) == {"k": "jobs", "o": 40, "j": "job_abc"}
    assert read_cursor("jobs", None) == {} and offset_of("jobs", "") == 0
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor  # safe in a URI query


@pytest.mark.parametrize(
    "cursor",
    [
        "%%%",
        "bm90IGpzb24",  # "not json"
        make_cursor("models", o=3),  # another listing's
        make_cursor("jobs", o=-1),
        make_cursor("jobs", o="3"),
        make_cursor("jobs", o=10**9),
    ],
)
def test_a_cursor_that_is_not_this_listings_is_an_input_error_naming_the_argument(cursor: str) -> None:
    with pytest.raises(InputError) as refused:
        read_cursor("jobs", cursor)

    assert refused.value.arguments == ("cursor",)
    assert refused.value.message.startswith("cursor: not a cursor of this listing; pass the next_cursor")


def test_times_are_shown_in_utc_to_the_second() -> None:
    assert moment("2026-12-02T10:11:12.5+02:00") == "2026-12-02 08:11:12"
    assert moment("2026-12-02T10:11:12Z") == "2026-12-02 10:11:12"
    assert moment(None) is None and moment("yesterday") == "yesterday"


def test_a_resource_page_holds_what_fits_and_links_the_next() -> None:
    items = [{"id": i, "text": "z" * 90} for i in range(100)]

    def next_uri(n: int) -> str | None:
        return f"x://things?cursor={make_cursor('x', o=n)}" if n < len(items) else None

    text = json_page(items, key="things", next_uri=next_uri, extra={"total": 100})
    body = json.loads(text)

    assert len(text) <= 2000 and body["total"] == 100
    assert body["things"] == items[: len(body["things"])] and body["next"] == next_uri(len(body["things"]))
    assert json.loads(json_page(items[:2], key="things", next_uri=lambda n: None)) == {"things": items[:2]}
    assert json.loads(json_page([], key="things", next_uri=lambda n: None)) == {"things": []}
