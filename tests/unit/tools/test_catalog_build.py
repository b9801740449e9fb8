"""Tools are built from their registrations without a server: order, text, icon, hints."""

from __future__ import annotations

from typing import Annotated

import pytest
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mediamux.tools.base import Toolset
from mediamux.tools.catalog import ALWAYS_LOAD_META_KEY, PLAIN_MARK, build_tools, icon

marked = Toolset(id="jobs", title="Jobs", description="jobs", mark=("M0 0h16v16H0z", "#000"))
plain = Toolset(id="plain", title="Plain", description="no mark of its own")


class Echo(BaseModel):
    said: str


@plain.tool(title="Say it", read_only=True)
async def plain_say(
    text: Annotated[str, Field(max_length=9)], ctx: Context
) -> Annotated[CallToolResult, Echo]:
    """Says the text
    back, unchanged.   Free."""
    raise NotImplementedError


@marked.tool(title="Wait", read_only=True)
async def jobs_wait(ctx: Context) -> Annotated[CallToolResult, Echo]:
    """Waits. Free."""
    raise NotImplementedError


@pytest.mark.unit
def test_tools_are_built_in_name_order_with_one_line_descriptions_titles_and_icons() -> None:
    tools = build_tools([*plain.specs, *marked.specs])

    assert [t.name for t in tools] == ["jobs_wait", "plain_say"]
    wait, say = tools
    assert say.description == "Says the text back, unchanged. Free."
    assert say.title == "Say it" and say.annotations is not None and say.annotations.title == "Say it"
    assert say.icons == [icon(PLAIN_MARK)] and wait.icons == [icon(marked.mark or PLAIN_MARK)]
    assert say.parameters == {
        "type": "object",
        "properties": {"text": {"maxLength": 9, "type": "string"}},
        "required": ["text"],
    }


@pytest.mark.unit
def test_only_the_jobs_toolset_advertises_results_and_only_core_tools_ask_to_stay_loaded() -> None:
    wait, say = build_tools([*plain.specs, *marked.specs])

    assert wait.output_schema is not None and "title" not in wait.output_schema
    assert say.output_schema is None
    assert wait.meta == {ALWAYS_LOAD_META_KEY: True} and say.meta is None
