"""The OpenAI Agents SDK (``openai-agents``) against ``mediamux serve --sandbox``, with no model calls.

An agent reaches MCP tools through ``MCPServerStdio`` / ``MCPServerStreamableHttp``: the runner lists
the server's tools, converts each into a ``FunctionTool`` (with a strict JSON schema where it can) and,
when the model picks one, calls ``FunctionTool.on_invoke_tool`` with the model's JSON arguments. These
tests drive exactly that path by hand, so no API key and no model are needed.

Runs in ``.interop/agents`` (openai-agents with the ``mcp`` 2.x it resolves to), which does not
have mediamux: the server is the project's ``.venv/bin/mediamux``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from _support import CALL_TIMEOUT_S, CORE_TOOLS, HttpServer, generate_args, missing

try:
    from agents import Agent, RunContextWrapper
    from agents.mcp import MCPServer, MCPServerStdio, MCPServerStreamableHttp, MCPUtil
    from agents.tool import FunctionTool
    from agents.tool_context import ToolContext
except ImportError:  # pragma: no cover - depends on the virtualenv
    missing("openai-agents", "run this file with .interop/agents/bin/python")

pytestmark = pytest.mark.anyio

SESSION_TIMEOUT_S = 30  # the SDK's per-request read timeout (its default of 5 s is tight for a cold CI box)


def stdio_server(mediamux_bin: Path, env: dict[str, str], cwd: Path) -> MCPServerStdio:
    return MCPServerStdio(
        {"command": str(mediamux_bin), "args": ["serve", "--sandbox"], "env": env, "cwd": str(cwd)},
        name="mediamux",
        client_session_timeout_seconds=SESSION_TIMEOUT_S,
        use_structured_content=True,
    )


def http_server_params(server: HttpServer, headers: dict[str, str]) -> MCPServerStreamableHttp:
    return MCPServerStreamableHttp(
        {"url": server.mcp_url, "headers": headers, "timeout": SESSION_TIMEOUT_S},
        name="mediamux-http",
        client_session_timeout_seconds=SESSION_TIMEOUT_S,
        use_structured_content=True,
    )


@pytest.fixture
async def stdio(mediamux_bin: Path, server_env: dict[str, str], tmp_path: Path) -> AsyncIterator[MCPServer]:
    server = stdio_server(mediamux_bin, server_env, tmp_path)
    with anyio.fail_after(CALL_TIMEOUT_S):
        await server.connect()
    try:
        yield server
    finally:
        with anyio.fail_after(CALL_TIMEOUT_S):
            await server.cleanup()  # closes the session and ends the server process


@pytest.fixture
async def http(http_server: HttpServer) -> AsyncIterator[MCPServer]:
    server = http_server_params(http_server, http_server.auth_headers)
    with anyio.fail_after(CALL_TIMEOUT_S):
        await server.connect()
    try:
        yield server
    finally:
        with anyio.fail_after(CALL_TIMEOUT_S):
            await server.cleanup()


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict), result
    return dict(result.structured_content)


async def check_list_and_call(server: MCPServer, label: str) -> None:
    """What MCPServer.list_tools / call_tool give an agent: the catalog, a free read, a paid job."""
    with anyio.fail_after(CALL_TIMEOUT_S):
        tools = {t.name: t for t in await server.list_tools()}
        balance = structured(await server.call_tool("muapi_get_balance", {}))
        job = structured(await server.call_tool("muapi_generate", generate_args(f"a heron ({label})")))
        again = structured(await server.call_tool("jobs_get", {"job_id": job["job_id"]}))
        costs = await server.read_resource("mediamux://costs")

    assert set(tools) >= CORE_TOOLS
    assert all(t.description for t in tools.values())
    assert balance["balance_usd"] > 0
    assert balance["currency"] == "usd"
    assert job["status"] in ("queued", "running"), job
    assert job["job_id"].startswith("job_")
    assert job["cost"]["usd"] > 0
    assert (again["job_id"], again["provider"], again["operation"]) == (job["job_id"], "muapi", "generate")
    ledger = json.loads(costs.contents[0].text)  # type: ignore[union-attr]
    assert ledger["session"]["usd"] == pytest.approx(job["cost"]["usd"])


async def check_function_tools(server: MCPServer, label: str) -> None:
    """The conversion an Agent's runner does, then a tool call the way the runner makes it."""
    run_context = RunContextWrapper(context=None)
    agent = Agent(name="interop", mcp_servers=[server])
    with anyio.fail_after(CALL_TIMEOUT_S):
        listed = await server.list_tools()
        function_tools = await MCPUtil.get_all_function_tools(
            [server], convert_schemas_to_strict=True, run_context=run_context, agent=agent
        )
        # Agent.get_all_tools is what Runner calls each turn; it must see the same tools.
        agent_tools = await agent.get_all_tools(run_context)

    by_name = {t.name: t for t in function_tools}
    assert set(by_name) == {t.name for t in listed}
    assert {t.name for t in agent_tools} >= CORE_TOOLS
    for tool in function_tools:
        assert isinstance(tool, FunctionTool)
        assert tool.params_json_schema["type"] == "object", tool.name

    async def invoke(name: str, arguments: dict[str, Any]) -> Any:
        args = json.dumps(arguments)
        context = ToolContext(
            context=None, tool_name=name, tool_call_id=f"call_{name}", tool_arguments=args, agent=agent
        )
        with anyio.fail_after(CALL_TIMEOUT_S):
            return await by_name[name].on_invoke_tool(context, args)

    balance = json.loads(await invoke("muapi_get_balance", {}))
    assert balance["balance_usd"] > 0
    job = json.loads(await invoke("muapi_generate", generate_args(f"a kingfisher ({label}, function tool)")))
    assert job["status"] in ("queued", "running"), job
    listed_jobs = json.loads(await invoke("jobs_list", {}))
    assert job["job_id"] in {j["job_id"] for j in listed_jobs["jobs"]}
    # A tool error reaches the model as text it can act on, not as a crashed run.
    unknown = await invoke("jobs_get", {"job_id": "job_does_not_exist"})
    text = unknown["text"] if isinstance(unknown, dict) else str(unknown)
    assert "not_found" in text and "job_does_not_exist" in text, unknown


# -- stdio -------------------------------------------------------------------------------------------


async def test_stdio_list_tools_and_call(stdio: MCPServer) -> None:
    await check_list_and_call(stdio, "stdio")


async def test_stdio_function_tools_as_an_agent_sees_them(stdio: MCPServer) -> None:
    await check_function_tools(stdio, "stdio")


# -- Streamable HTTP with the bearer token -----------------------------------------------------------


async def test_http_list_tools_and_call(http: MCPServer) -> None:
    await check_list_and_call(http, "http")


async def test_http_function_tools_as_an_agent_sees_them(http: MCPServer) -> None:
    await check_function_tools(http, "http")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-the-token"}])
async def test_http_without_the_right_token_cannot_connect(
    http_server: HttpServer, headers: dict[str, str]
) -> None:
    server = http_server_params(http_server, headers)

    async def connect_and_list() -> None:
        await server.connect()
        await server.list_tools()

    try:
        # The SDK surfaces the 401 as an exception (an ExceptionGroup around an MCPError today).
        with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(Exception):  # noqa: PT011,B017
            await connect_and_list()
    finally:
        with anyio.fail_after(CALL_TIMEOUT_S):
            await server.cleanup()
