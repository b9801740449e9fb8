"""LangChain (``langchain-mcp-adapters``) against ``mediamux serve --sandbox``, from an ``mcp`` 1.x client.

The adapters pin ``mcp`` < 2, so this runs in its own virtualenv (``.interop/langchain``) and also
proves that a 1.x client, which speaks only the 2025-11-25 initialize handshake, still gets the whole
server. Tools are loaded both ways a LangChain app does it (``MultiServerMCPClient.get_tools`` and
``load_mcp_tools`` on an open session) and invoked as an agent would, with a ``ToolCall``.

That virtualenv does not have mediamux: the server is the project's ``.venv/bin/mediamux``.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import pytest
from _support import CALL_TIMEOUT_S, CORE_TOOLS, HttpServer, generate_args, missing

try:
    from langchain_core.messages import ToolCall, ToolMessage
    from langchain_core.tools import BaseTool
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langchain_mcp_adapters.resources import load_mcp_resources
    from langchain_mcp_adapters.tools import load_mcp_tools
except ImportError:  # pragma: no cover - depends on the virtualenv
    missing("langchain-mcp-adapters", "run this file with .interop/langchain/bin/python")

pytestmark = pytest.mark.anyio

LEGACY_ERA = "2025-11-25"


def stdio_connection(mediamux_bin: Path, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    return {
        "transport": "stdio",
        "command": str(mediamux_bin),
        "args": ["serve", "--sandbox"],
        "env": env,
        "cwd": str(cwd),
    }


def http_connection(server: HttpServer, headers: dict[str, str]) -> dict[str, Any]:
    return {"transport": "streamable_http", "url": server.mcp_url, "headers": headers, "timeout": 30}


async def invoke(tool: BaseTool, arguments: dict[str, Any]) -> ToolMessage:
    """Invoke a tool the way an agent's tool node does: with a ToolCall, getting a ToolMessage back."""
    with anyio.fail_after(CALL_TIMEOUT_S):
        message = await tool.ainvoke(
            ToolCall(name=tool.name, args=arguments, id=f"call_{tool.name}", type="tool_call")
        )
    assert isinstance(message, ToolMessage), message
    return message


def structured(message: ToolMessage) -> dict[str, Any]:
    assert message.status != "error", message.content
    artifact = message.artifact
    assert isinstance(artifact, dict), message
    return dict(artifact["structured_content"])


async def check_tools(tools: list[BaseTool], label: str) -> None:
    by_name = {t.name: t for t in tools}
    assert set(by_name) >= CORE_TOOLS
    for tool in tools:
        assert tool.description, tool.name
        schema = (
            tool.args_schema if isinstance(tool.args_schema, dict) else tool.args_schema.model_json_schema()
        )
        assert schema["type"] == "object", tool.name

    balance = structured(await invoke(by_name["muapi_get_balance"], {}))
    assert balance["balance_usd"] > 0

    message = await invoke(by_name["muapi_generate"], generate_args(f"an otter ({label})"))
    job = structured(message)
    assert job["status"] in ("queued", "running"), job
    assert job["cost"]["usd"] > 0
    text = "\n".join(block["text"] for block in message.content if block.get("type") == "text")  # type: ignore[union-attr]
    assert job["job_id"] in text  # the model sees the job id in the text it reads

    again = structured(await invoke(by_name["jobs_get"], {"job_id": job["job_id"]}))
    assert (again["job_id"], again["provider_job_id"]) == (job["job_id"], job["provider_job_id"])

    # A tool error comes back as an error ToolMessage the agent can read, not as an exception.
    unknown = await invoke(by_name["jobs_get"], {"job_id": "job_does_not_exist"})
    assert unknown.status == "error"
    assert "not_found" in str(unknown.content), unknown.content


# -- stdio -------------------------------------------------------------------------------------------


async def test_mcp_client_is_1x() -> None:
    assert version("mcp").startswith("1."), version("mcp")


async def test_stdio_get_tools_and_invoke(
    mediamux_bin: Path, server_env: dict[str, str], tmp_path: Path
) -> None:
    client = MultiServerMCPClient({"mediamux": stdio_connection(mediamux_bin, server_env, tmp_path)})
    with anyio.fail_after(CALL_TIMEOUT_S):
        tools = await client.get_tools()  # a new session (a new server process) per call, as shipped
    await check_tools(tools, "stdio, MultiServerMCPClient")


async def test_stdio_session_is_2025_11_25_and_serves_tools_and_resources(
    mediamux_bin: Path, server_env: dict[str, str], tmp_path: Path
) -> None:
    client = MultiServerMCPClient({"mediamux": stdio_connection(mediamux_bin, server_env, tmp_path)})
    with anyio.fail_after(CALL_TIMEOUT_S):
        async with client.session("mediamux", auto_initialize=False) as session:
            init = await session.initialize()
            tools = await load_mcp_tools(session)
            await check_tools(tools, "stdio, load_mcp_tools")
            blobs = await load_mcp_resources(session, uris=["mediamux://costs"])

    assert init.protocolVersion == LEGACY_ERA
    assert init.serverInfo.name == "mediamux"
    assert init.capabilities.tools is not None
    assert init.capabilities.resources is not None
    ledger = json.loads(blobs[0].as_string())
    assert ledger["session"]["providers"]["muapi"]["entries"] == 1


# -- Streamable HTTP with the bearer token -----------------------------------------------------------


async def test_http_get_tools_and_invoke(http_server: HttpServer) -> None:
    client = MultiServerMCPClient({"mediamux": http_connection(http_server, http_server.auth_headers)})
    with anyio.fail_after(CALL_TIMEOUT_S):
        async with client.session("mediamux", auto_initialize=False) as session:
            init = await session.initialize()
        tools = await client.get_tools()
    assert init.protocolVersion == LEGACY_ERA
    await check_tools(tools, "http")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-the-token"}])
async def test_http_without_the_right_token_loads_nothing(
    http_server: HttpServer, headers: dict[str, str]
) -> None:
    client = MultiServerMCPClient({"mediamux": http_connection(http_server, headers)})
    with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(Exception) as raised:  # noqa: PT011
        await client.get_tools()
    assert "401" in repr(raised.value) or "nauthorized" in repr(raised.value), raised.value
