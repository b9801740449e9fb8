"""Profiles: an HTTP connection chooses its toolsets and read-only mode by its URL (``/mcp/muapi+jobs``,
``/mcp/muapi/readonly``) or by headers (X-MCP-Toolsets, X-MCP-Readonly), on top of what the process
enables. Everything here goes over real HTTP on loopback, in both protocol eras; a 2025-11-25 session
keeps the profile it was opened with.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from mediamux.config import toolset_ids
from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.server import profiles
from mediamux.server.app import MediamuxServer
from mediamux.server.http import MCP_PATH, build_http_app
from mediamux.server.profiles import Profile, ProfileError

TIMEOUT_S = 30.0
ENABLED = ("muapi", "museai", "muzaic", "mixpeek", "jobs")


@asynccontextmanager
async def serving(server: MediamuxServer) -> AsyncIterator[str]:
    """The server's HTTP app on loopback; yields its origin."""
    settings = server.mediamux_settings
    assert settings is not None
    async with serve_on_loopback(build_http_app(server, settings, host="127.0.0.1", port=0)) as origin:
        yield origin


@asynccontextmanager
async def connected(url: str, era: str, headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(timeout=TIMEOUT_S, headers=headers or {}) as http,
        Client(streamable_http_client(url, http_client=http), mode=era) as client,  # type: ignore[arg-type]
    ):
        yield client


async def names(client: Client) -> list[str]:
    with anyio.fail_after(TIMEOUT_S):
        return [t.name for t in (await client.list_tools()).tools]


async def call(client: Client, name: str, args: dict[str, Any] | None = None) -> CallToolResult:
    with anyio.fail_after(TIMEOUT_S):
        return await client.call_tool(name, args or {})


def text(result: CallToolResult) -> str:
    return "".join(getattr(b, "text", "") for b in result.content)


def of_toolsets(server: MediamuxServer, *wanted: str) -> set[str]:
    return {name for name, toolset in server.tool_toolsets.items() if toolset in wanted}


# -- over HTTP, both eras ----------------------------------------------------------------------------


@pytest.mark.both_eras
async def test_a_path_profile_offers_its_toolsets_in_the_catalog_order_and_refuses_the_rest(
    make_server: Callable[..., MediamuxServer], era: str
) -> None:
    server = make_server()
    async with serving(server) as origin:
        async with connected(origin + MCP_PATH, era) as full:
            everything = await names(full)
        async with connected(f"{origin}{MCP_PATH}/jobs+muapi", era) as narrow:
            listed = await names(narrow)
            again = await names(narrow)
            balance = await call(narrow, "muapi_get_balance")
            outside = await call(narrow, "museai_list_videos")
            # Refused for what it is before its arguments are looked at.
            outside_bad_args = await call(narrow, "museai_get_video", {"svid": 42})

    assert set(listed) == of_toolsets(server, "muapi", "jobs") and listed == again
    assert listed == [n for n in everything if n in set(listed)]  # the full catalog's order, filtered
    assert set(everything) == set(server.tool_toolsets)
    assert not balance.is_error, text(balance)
    for refused in (outside, outside_bad_args):
        assert refused.is_error and text(refused).startswith("[not_found]")
    message = text(outside)
    assert "museai_list_videos is not offered on this connection" in message
    assert "toolsets muapi, jobs" in message and f"{MCP_PATH}/museai" in message


@pytest.mark.both_eras
async def test_readonly_by_path_or_header_composes_with_the_toolsets(
    make_server: Callable[..., MediamuxServer], era: str
) -> None:
    server = make_server()
    muapi_reads = {
        n for n in of_toolsets(server, "muapi") if server._tool_manager.get_tool(n).annotations.read_only_hint
    }
    async with serving(server) as origin:
        async with connected(f"{origin}{MCP_PATH}/muapi/readonly", era) as by_path:
            from_path = set(await names(by_path))
            refused = await call(by_path, "muapi_generate", {"endpoint": "flux-dev-image", "params": {}})
        headers = {"X-MCP-Toolsets": "muapi", "X-MCP-Readonly": "yes"}
        async with connected(origin + MCP_PATH, era, headers) as by_header:
            from_header = set(await names(by_header))
        async with connected(origin + MCP_PATH, era, {"X-MCP-Readonly": "off"}) as not_readonly:
            unaffected = set(await names(not_readonly))

    assert from_path == from_header == muapi_reads and "muapi_generate" not in from_path
    assert refused.is_error and "this connection is read-only" in text(refused)
    assert f"{MCP_PATH}/muapi for it" in text(refused)
    assert unaffected == set(server.tool_toolsets)


@pytest.mark.both_eras
async def test_the_header_and_the_path_each_only_narrow_and_the_process_settings_bound_both(
    make_server: Callable[..., MediamuxServer], era: str
) -> None:
    server = make_server(MEDIAMUX_READ_ONLY="true")
    async with serving(server) as origin:
        async with connected(origin + MCP_PATH, era, {"X-MCP-Toolsets": "Muzaic , jobs"}) as header:
            by_header = set(await names(header))
        url = f"{origin}{MCP_PATH}/muzaic+muapi+jobs"
        async with connected(url, era, {"X-MCP-Toolsets": "muzaic,jobs,museai"}) as both:
            by_both = set(await names(both))
            # Read-only everywhere: the process registered no tool that spends, so it is an unknown
            # tool here (-32602), with the reason it is not offered.
            with pytest.raises(MCPError, match="MEDIAMUX_READ_ONLY"):
                await call(both, "muzaic_generate_music", {"duration": 10})

    assert by_header == by_both == of_toolsets(server, "muzaic", "jobs")
    assert all(server._tool_manager.get_tool(n).annotations.read_only_hint for n in by_both)


@pytest.mark.both_eras
async def test_a_token_of_the_http_transport_still_guards_every_profile(
    make_server: Callable[..., MediamuxServer], era: str
) -> None:
    server = make_server(MEDIAMUX_HTTP_TOKEN="s3cret-token-for-the-test")
    async with serving(server) as origin:
        async with httpx2.AsyncClient(timeout=TIMEOUT_S) as http:
            bare = await http.post(f"{origin}{MCP_PATH}/nosuchtoolset", json={})
        auth = {"Authorization": "Bearer s3cret-token-for-the-test"}
        async with connected(f"{origin}{MCP_PATH}/jobs", era, auth) as client:
            listed = set(await names(client))

    # Without the token nothing is said about toolsets, not even that one does not exist.
    assert bare.status_code == 401
    assert listed == of_toolsets(server, "jobs")


# -- refusals, as plain HTTP answers -----------------------------------------------------------------

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "profile-test", "version": "1"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def rpc_body(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message of a plain JSON or a one-event SSE answer."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [ln[5:].strip() for ln in response.text.splitlines() if ln.startswith("data:")]
        return dict(json.loads(data[-1]))
    return dict(response.json())


@pytest.mark.parametrize(
    ("path", "headers", "status", "error", "says"),
    [
        (
            "/muapi+nope",
            {},
            404,
            "unknown_toolset",
            "unknown toolset(s) 'nope'; choose from muapi, jobs, all",
        ),
        ("/muapi/extra/readonly", {}, 404, "unknown_profile", "no such MCP endpoint"),
        ("", {"X-MCP-Toolsets": "muapi,nope"}, 400, "unknown_toolset", "the X-MCP-Toolsets header names"),
        ("/muapi", {"X-MCP-Toolsets": "jobs"}, 400, "invalid_profile", "no toolset in common"),
        ("/museai", {}, 404, "toolset_not_enabled", "museai, which this server does not enable"),
    ],
)
async def test_a_profile_the_server_cannot_serve_is_refused_with_a_clear_json_error(
    make_server: Callable[..., MediamuxServer],
    path: str,
    headers: dict[str, str],
    status: int,
    error: str,
    says: str,
) -> None:
    server = make_server(MEDIAMUX_TOOLSETS="muapi,jobs")
    async with serving(server) as origin, httpx2.AsyncClient(timeout=TIMEOUT_S) as http:
        with anyio.fail_after(TIMEOUT_S):
            answer = await http.post(
                f"{origin}{MCP_PATH}{path}", json=INITIALIZE, headers={**ACCEPT, **headers}
            )

    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["error"]["data"] == {"error": error}
    assert says in body["error"]["message"]


async def test_a_2025_session_keeps_the_profile_it_was_opened_with(
    make_server: Callable[..., MediamuxServer],
) -> None:
    server = make_server()
    async with serving(server) as origin, httpx2.AsyncClient(timeout=TIMEOUT_S) as http:

        async def post(path: str, message: dict[str, Any], session: str | None = None) -> httpx2.Response:
            headers = {**ACCEPT, "MCP-Protocol-Version": "2025-11-25"}
            if session is not None:
                headers["Mcp-Session-Id"] = session
            with anyio.fail_after(TIMEOUT_S):
                return await http.post(f"{origin}{MCP_PATH}{path}", json=message, headers=headers)

        opened = await post("/muapi+jobs", INITIALIZE)
        session = opened.headers["mcp-session-id"]
        await post("/muapi+jobs", {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        switched = await post("/museai", listing, session)
        spelled_otherwise = await post("/jobs+muapi", listing, session)
        unnamed = await post("", listing, session)
        readonly_added = await post("/muapi+jobs/readonly", listing, session)

    assert opened.status_code == 200
    assert switched.status_code == 404 and readonly_added.status_code == 404
    refusal = switched.json()["error"]
    assert refusal["data"] == {"error": "profile_changed"}
    assert "opened with toolsets muapi, jobs (/mcp/muapi+jobs)" in refusal["message"]
    assert "open a new session at /mcp/museai" in refusal["message"]
    wanted = of_toolsets(server, "muapi", "jobs")
    for answer in (spelled_otherwise, unnamed):
        assert answer.status_code == 200
        assert {t["name"] for t in rpc_body(answer)["result"]["tools"]} == wanted


async def test_an_unprofiled_connection_and_an_in_process_client_see_every_tool(
    make_server: Callable[..., MediamuxServer],
) -> None:
    server = make_server()
    async with Client(server) as client:  # type: ignore[arg-type]
        in_process = set(await names(client))

    assert in_process == set(server.tool_toolsets) and set(server.tool_toolsets.values()) == set(ENABLED)


# -- the profile a request names (no server) -----------------------------------------------------------


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in values.items()]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("rest", "sent", "expected"),
    [
        ("", {}, None),
        ("/", {}, None),
        ("/readonly", {}, Profile(None, True)),
        ("/muapi+jobs", {}, Profile(("muapi", "jobs"))),
        ("/jobs+muapi+jobs", {}, Profile(("muapi", "jobs"))),
        ("/JOBS,muapi/ReadOnly", {}, Profile(("muapi", "jobs"), True)),
        ("/all", {}, profiles.FULL),
        ("/muapi+museai+muzaic+mixpeek+jobs", {}, profiles.FULL),
        ("", {"X_MCP_Toolsets": "mixpeek, jobs"}, Profile(("mixpeek", "jobs"))),
        ("", {"X_MCP_Toolsets": " , "}, None),
        ("", {"X_MCP_Readonly": "OFF"}, profiles.FULL),
        ("", {"X_MCP_Readonly": "1"}, Profile(None, True)),
        ("/readonly", {"X_MCP_Readonly": "false"}, Profile(None, True)),  # only ever narrows
        ("/muapi+jobs", {"X_MCP_Toolsets": "jobs,muzaic"}, Profile(("jobs",))),
    ],
)
def test_the_profile_a_request_names(rest: str, sent: dict[str, str], expected: Profile | None) -> None:
    assert profiles.requested(rest, headers(**sent), ENABLED, base=MCP_PATH) == expected


@pytest.mark.unit
def test_every_toolset_can_be_named_and_each_profile_has_a_url_that_names_it_again() -> None:
    for toolset in toolset_ids():
        chosen = profiles.requested(f"/{toolset}/readonly", [], ENABLED, base=MCP_PATH)
        assert chosen == Profile((toolset,), True)
        assert profiles.requested(chosen.path("")[len("") :], [], ENABLED, base="") == chosen


@pytest.mark.unit
def test_a_long_or_empty_selection_is_refused() -> None:
    with pytest.raises(ProfileError) as many:
        profiles.requested("/" + "+".join(["jobs"] * 40), [], ENABLED, base=MCP_PATH)
    with pytest.raises(ProfileError) as empty:
        profiles.requested("/+", [], ENABLED, base=MCP_PATH)
    assert many.value.status == empty.value.status == 404
    assert "names no toolset" in empty.value.description


@pytest.mark.unit
def test_outside_a_profiled_request_nothing_is_hidden() -> None:
    assert profiles.current() is None
    assert profiles.hidden("muapi", read_only_tool=False) is None
    with profiles.serving(Profile(("jobs",), True)):
        assert profiles.hidden("jobs", read_only_tool=True) is None
        assert "belongs to the muapi toolset" in (profiles.hidden("muapi", read_only_tool=True) or "")
        assert "read-only" in (profiles.hidden("jobs", read_only_tool=False) or "")
    assert profiles.current() is None
