"""2025-11-25 sessions behind a load balancer: affinity on Mcp-Session-Id, or MEDIAMUX_HTTP_STATELESS.

Two real `mediamux serve --transport http` replicas. A 2025-11-25 session begins with `initialize` on one
replica; the balancer may send its next request to the other. With the default (stateful) transport the
session lives in the replica that created it, so the other answers 404 — which is why the balancer must
pin requests by Mcp-Session-Id. With MEDIAMUX_HTTP_STATELESS=true there is no session to lose: any
replica answers any request.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.test_e2e import (
    HTTP_TOKEN,
    HttpServer,
    free_port,
    rpc_result,
    serve_cmd,
    server_env,
    stop,
    wait_until_healthy,
)

LEGACY = "2025-11-25"
TIMEOUT_S = 60


def spawn(root: Path, **env: str) -> HttpServer:
    root.mkdir()
    port = free_port()
    errlog = root / "server.stderr"
    with errlog.open("wb") as sink:
        proc = subprocess.Popen(
            serve_cmd("--transport", "http", "--port", str(port), sandbox=False),
            env=server_env(root, MEDIAMUX_HTTP_TOKEN=HTTP_TOKEN, **env),
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    return HttpServer(f"http://127.0.0.1:{port}", port, proc, errlog)


@pytest.fixture(params=["stateful", "stateless"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, list[HttpServer]]]:
    mode = str(request.param)
    env = {"MEDIAMUX_HTTP_STATELESS": "true"} if mode == "stateless" else {}
    servers = [spawn(tmp_path / name, **env) for name in ("a", "b")]
    try:
        yield mode, servers
    finally:
        for server in servers:
            stop(server.proc)


async def post(
    http: httpx2.AsyncClient, server: HttpServer, body: dict[str, Any], session: str | None
) -> httpx2.Response:
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": LEGACY}
    if session is not None:
        headers["Mcp-Session-Id"] = session
    return await http.post(server.mcp_url, json=body, headers=headers)


async def test_a_2025_session_moved_to_another_replica_needs_affinity_unless_stateless(
    replicas: tuple[str, list[HttpServer]],
) -> None:
    mode, (a, b) = replicas
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "lb-test", "version": "0"},
        },
    }
    listed = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "jobs_list", "arguments": {}},
    }
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {HTTP_TOKEN}"}, timeout=20.0) as http:
        with anyio.fail_after(TIMEOUT_S):
            await wait_until_healthy(a)
            await wait_until_healthy(b)
            started = await post(http, a, initialize, None)
            session = started.headers.get("mcp-session-id")
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await post(http, a, initialized, session)
            same = await post(http, a, listed, session)
            moved = await post(http, b, listed, session)

    assert started.status_code == 200 and rpc_result(started)["protocolVersion"] == LEGACY
    assert rpc_result(same)["structuredContent"]["jobs"] == []
    if mode == "stateful":
        assert session  # the session lives in replica a ...
        assert moved.status_code == 404  # ... so replica b cannot serve it: pin by Mcp-Session-Id
    else:
        assert session is None  # nothing to pin
        assert moved.status_code == 200, moved.text
        assert rpc_result(moved)["structuredContent"]["jobs"] == []
