"""The catalog a host receives is small, ordered, complete and true.

Issue 13 asks for at most 6,000 model-visible tokens for all tools (name, description and input
schema, o200k), at most 20,000 for the whole ``tools/list`` payload, and no tool above 400. Each
tool's count is pinned in ``tests/snapshots/token-budget.json`` (regenerated with
``UPDATE_SNAPSHOTS=1``, so a reviewer sees what a change costs); the limits are pinned here, where
regenerating the file cannot raise them.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from jsonschema import Draft202012Validator
from mcp import Client

from mediamux.server.app import MediamuxServer, toolset
from mediamux.tools.catalog import ALWAYS_LOAD, ALWAYS_LOAD_META_KEY
from tests.test_muapi_tools import call, text
from tests.tokens import compact, count, visible

BUDGET = Path(__file__).parent / "snapshots" / "token-budget.json"
MAX_TOOL_TOKENS = 400
MAX_VISIBLE_TOKENS = 6_000
MAX_PAYLOAD_TOKENS = 20_000
MAX_INSTRUCTIONS_TOKENS = 250
# Characters RFC 3986 allows in a URI (unreserved, reserved and the percent sign of an escape).
URI_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")


async def listed(server: MediamuxServer) -> list[dict[str, Any]]:
    """Each tool as the wire carried it (fields the server did not send are left out)."""
    async with Client(server) as client:
        with anyio.fail_after(20):
            tools = (await client.list_tools()).tools
    return [tool.model_dump(mode="json", by_alias=True, exclude_unset=True) for tool in tools]


async def connected(server: MediamuxServer) -> tuple[Any, str]:
    """The server's implementation info and instructions, as a client sees them after initialize."""
    async with Client(server) as client:
        with anyio.fail_after(20):
            await client.list_tools()
        return client.server_info, client.instructions or ""


def keywords(schema: Any) -> set[str]:
    """Every keyword used anywhere in a schema (property names are names, not keywords)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            if key in ("properties", "$defs", "patternProperties"):
                for sub in value.values():
                    found |= keywords(sub)
            elif key not in ("enum", "const", "default", "examples", "required"):
                found |= keywords(value)
    elif isinstance(schema, list):
        for sub in schema:
            found |= keywords(sub)
    return found


def owner(name: str) -> str:
    return name.split("_", 1)[0]


# -- size -----------------------------------------------------------------------------------------


async def test_each_tool_costs_what_the_budget_file_says(
    make_server: Callable[..., MediamuxServer],
) -> None:
    tools = await listed(make_server(MEDIAMUX_TOOLSETS="all"))
    current = {
        "tokenizer": "o200k_base",
        "all_tools_visible": count(compact({"tools": [visible(t) for t in tools]})),
        "whole_payload": count(compact({"tools": tools})),
        "tools": {t["name"]: count(compact(visible(t))) for t in sorted(tools, key=lambda t: t["name"])},
    }
    rendered = json.dumps(current, indent=1) + "\n"

    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        BUDGET.write_text(rendered, encoding="utf-8")

    assert rendered == BUDGET.read_text(encoding="utf-8"), (
        "a tool's definition changed size; review what it costs, then regenerate with UPDATE_SNAPSHOTS=1 "
        "and commit tests/snapshots/token-budget.json"
    )


async def test_the_catalog_stays_within_the_limits_issue_13_sets(
    make_server: Callable[..., MediamuxServer],
) -> None:
    tools = await listed(make_server(MEDIAMUX_TOOLSETS="all"))

    over = {t["name"]: n for t in tools if (n := count(compact(visible(t)))) > MAX_TOOL_TOKENS}
    assert over == {}
    assert count(compact({"tools": [visible(t) for t in tools]})) <= MAX_VISIBLE_TOKENS
    assert count(compact({"tools": tools})) <= MAX_PAYLOAD_TOKENS


@pytest.mark.unit
def test_the_token_counter_is_o200k() -> None:
    import quicktok

    # Ids that only o200k_base gives these strings (cl100k_base splits and numbers them otherwise).
    assert quicktok.get_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]
    assert count('{"type":"object"}') == 5


# -- shape ----------------------------------------------------------------------------------------


async def test_every_advertised_schema_is_valid_json_schema_2020_12(
    make_server: Callable[..., MediamuxServer],
) -> None:
    for tool in await listed(make_server(MEDIAMUX_TOOLSETS="all")):
        Draft202012Validator.check_schema(tool["inputSchema"])
        assert tool["inputSchema"]["type"] == "object", tool["name"]
        if "outputSchema" in tool:
            Draft202012Validator.check_schema(tool["outputSchema"])
        assert "title" not in keywords(tool["inputSchema"]), tool["name"]


async def test_tools_are_listed_in_name_order_whatever_order_the_toolsets_are_named_in(
    make_server: Callable[..., MediamuxServer],
) -> None:
    one = await listed(make_server(MEDIAMUX_TOOLSETS="jobs,muzaic,muapi"))
    other = await listed(make_server(MEDIAMUX_TOOLSETS="muapi,muzaic,jobs"))

    names = [t["name"] for t in one]
    assert names == sorted(names)
    assert compact(one) == compact(other)


async def test_every_tool_has_a_title_and_its_toolsets_icon(
    make_server: Callable[..., MediamuxServer],
) -> None:
    tools = await listed(make_server(MEDIAMUX_TOOLSETS="all"))

    icons: dict[str, set[str]] = {}
    for tool in tools:
        assert tool["title"] and tool["title"] == tool["annotations"]["title"], tool["name"]
        [icon] = tool["icons"]
        icons.setdefault(owner(tool["name"]), set()).add(icon["src"])
    assert all(len(srcs) == 1 for srcs in icons.values()), icons
    every = [src for srcs in icons.values() for src in srcs]
    assert len(set(every)) == len(icons) == 5  # one per toolset, each its own


async def test_the_server_has_an_icon_and_every_icon_is_a_small_self_contained_svg(
    make_server: Callable[..., MediamuxServer],
) -> None:
    server = make_server(MEDIAMUX_TOOLSETS="all")
    info, _ = await connected(server)
    [server_icon] = info.icons
    sources = {server_icon.src} | {t["icons"][0]["src"] for t in await listed(server)}

    for src in sources:
        assert URI_CHARS.match(src), src
        assert src.startswith("data:image/svg+xml,") and len(src) < 300
        svg = ET.fromstring(urllib.parse.unquote(src.removeprefix("data:image/svg+xml,")))  # noqa: S314 - our own icons
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        assert svg.get("viewBox") == "0 0 16 16"
        # Drawn with paths only: no text, images, links or scripts to fetch or run.
        assert {child.tag.split("}")[1] for child in svg.iter()} <= {"svg", "path"}


async def test_only_the_core_job_tools_ask_claude_code_to_keep_them_loaded(
    make_server: Callable[..., MediamuxServer],
) -> None:
    tools = await listed(make_server(MEDIAMUX_TOOLSETS="all"))

    always = {t["name"] for t in tools if (t.get("_meta") or {}).get(ALWAYS_LOAD_META_KEY) is True}
    assert always == ALWAYS_LOAD == {"jobs_wait", "jobs_get", "jobs_list"}


# -- output schemas ------------------------------------------------------------------------------


@pytest.mark.providers("muzaic")
async def test_job_tools_advertise_the_envelope_their_results_match(
    client: Client, make_server: Callable[..., MediamuxServer]
) -> None:
    schemas = {t["name"]: t.get("outputSchema") for t in await listed(make_server())}
    assert {name for name, schema in schemas.items() if schema} == {
        spec.name for spec in toolset("jobs").specs
    }

    started = await call(client, "muzaic_generate_music", {"duration": 6})
    job_id = started.structured_content["job_id"]
    results = {
        "jobs_wait": await call(client, "jobs_wait", {"job_id": job_id}),
        "jobs_get": await call(client, "jobs_get", {"job_id": job_id}),
        "jobs_list": await call(client, "jobs_list", {}),
        "jobs_costs": await call(client, "jobs_costs", {}),
        "jobs_cancel": await call(client, "jobs_cancel", {"job_id": job_id}),
    }

    for name, result in results.items():
        assert not result.is_error, text(result)
        errors = list(Draft202012Validator(schemas[name]).iter_errors(result.structured_content))
        assert errors == [], (name, [e.message for e in errors])


@pytest.mark.providers("muzaic")
async def test_a_tool_without_an_advertised_schema_still_returns_structured_content(client: Client) -> None:
    result = await call(client, "muzaic_generate_music", {"duration": 6})

    assert not result.is_error, text(result)
    assert result.structured_content["status"] == "completed"
    # The text block carries the same data, for hosts that read only text.
    assert json.loads(text(result).split("\n", 1)[1]) == result.structured_content


@pytest.mark.providers("muapi")
async def test_an_explicit_null_for_an_optional_argument_is_still_accepted(client: Client) -> None:
    # The schema now shows an optional argument as its plain type; a caller that sends null anyway
    # (as the old schema allowed) is served the same as one that leaves it out.
    with_null = await call(client, "muapi_list_models", {"category": None, "query": None})
    without = await call(client, "muapi_list_models", {})

    assert not with_null.is_error, text(with_null)
    assert with_null.structured_content == without.structured_content


# -- instructions --------------------------------------------------------------------------------


async def test_instructions_say_what_each_toolset_does_where_files_are_read_and_how_to_resume(
    make_server: Callable[..., MediamuxServer], files_dir: Path
) -> None:
    _, instructions = await connected(make_server(MEDIAMUX_TOOLSETS="all", MEDIAMUX_DEDUP_WINDOW_S="90"))

    assert count(instructions) <= MAX_INSTRUCTIONS_TOKENS
    for toolset_id in ("muapi", "museai", "muzaic", "mixpeek", "jobs"):
        assert f"{toolset_id}_*: " in instructions
    assert str(files_dir.resolve()) in instructions
    assert "jobs_wait" in instructions and "job_id" in instructions
    assert "wait_s" in instructions and "new_job" in instructions
    assert "within 90 s" in instructions


async def test_instructions_name_only_what_this_server_offers(
    make_server: Callable[..., MediamuxServer],
) -> None:
    _, instructions = await connected(make_server(MEDIAMUX_TOOLSETS="museai,jobs", MEDIAMUX_READ_ONLY="1"))

    assert "museai_*" in instructions and "jobs_*" in instructions
    assert "muapi_*" not in instructions and "mixpeek_*" not in instructions
    assert "new_job" not in instructions and "Read-only" in instructions


async def test_instructions_stay_short_however_many_folders_are_allowed(
    make_server: Callable[..., MediamuxServer], tmp_path: Path
) -> None:
    folders = []
    for i in range(9):
        folder = tmp_path / f"a-rather-long-folder-name-for-media-number-{i}"
        folder.mkdir()
        folders.append(str(folder))

    _, instructions = await connected(
        make_server(MEDIAMUX_TOOLSETS="all", MEDIAMUX_ALLOWED_DIRS=os.pathsep.join(folders))
    )

    assert folders[0] in instructions and folders[8] not in instructions
    assert re.search(r" or \d more folders", instructions)
    assert count(instructions) <= MAX_INSTRUCTIONS_TOKENS
