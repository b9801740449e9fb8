"""What models see is reviewed like code: the tool catalog is pinned to a committed snapshot.

A change to any tool's name, description, input or output schema, or annotations fails this test
until the snapshot is regenerated (``UPDATE_SNAPSHOTS=1 pytest tests/test_tool_surface.py``)
and the diff is committed with the change, where a reviewer sees exactly what models will see.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mediamux.server.app import MediamuxServer

SNAPSHOT = Path(__file__).parent / "snapshots" / "tools.json"

# Tools that spend money (or provider credits/tokens) when called.
PAID = {
    "muapi_generate",
    "muapi_topup",
    "museai_transcribe",
    "museai_align",
    "museai_detect_sounds",
    "museai_detect_colors",
    "museai_detect_faces",
    "museai_detect_objects",
    "museai_detect_text",
    "museai_auto_subtitles",
    "muzaic_generate_music",
    "muzaic_create_soundtrack",
    "muzaic_regenerate",
    "mixpeek_index_url",
    "mixpeek_index_file",
}


async def catalog(server: MediamuxServer) -> list[dict[str, Any]]:
    async with Client(server) as client:
        with anyio.fail_after(20):
            tools = (await client.list_tools()).tools
    entries = []
    for tool in sorted(tools, key=lambda t: t.name):
        data = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
        data.pop("_meta", None)
        entries.append(data)
    return entries


async def test_the_tool_catalog_matches_the_reviewed_snapshot(
    make_server: Callable[..., MediamuxServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANG", "C")
    current = await catalog(make_server(MEDIAMUX_TOOLSETS="all"))
    rendered = json.dumps(current, indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(rendered, encoding="utf-8")
    expected = SNAPSHOT.read_text(encoding="utf-8")

    assert rendered == expected, (
        "the tool catalog changed; review the difference, then regenerate with "
        "UPDATE_SNAPSHOTS=1 and commit tests/snapshots/tools.json"
    )


async def test_the_catalog_does_not_depend_on_configuration_or_data(
    make_server: Callable[..., MediamuxServer], sandbox: Any
) -> None:
    sandbox.muapi.balance_usd = 0.0  # upstream state must not leak into descriptions
    plain = await catalog(make_server(MEDIAMUX_TOOLSETS="all"))
    configured = await catalog(
        make_server(MEDIAMUX_TOOLSETS="all", MEDIAMUX_BUDGET_USD="3", MEDIAMUX_DEDUP_WINDOW_S="5")
    )

    assert plain == configured


async def test_every_paid_tool_is_annotated_as_such_and_says_what_it_costs(
    make_server: Callable[..., MediamuxServer],
) -> None:
    tools = {t["name"]: t for t in await catalog(make_server(MEDIAMUX_TOOLSETS="all"))}

    assert tools.keys() >= PAID
    for name in PAID:
        annotations = tools[name]["annotations"]
        assert annotations["readOnlyHint"] is False, name
        assert annotations["idempotentHint"] is False, name
        assert annotations["openWorldHint"] is True, name
        description = tools[name]["description"].lower()
        assert "paid" in description or "spends" in description or "$" in description, name
    for name, tool in tools.items():
        if name not in PAID and tool["annotations"]["readOnlyHint"] is False:
            # Writes that cost nothing say so, so a model can tell them from paid work.
            assert (
                "free" in tool["description"].lower() or "no per-call charge" in tool["description"].lower()
            ), name
