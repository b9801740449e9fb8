"""The HTTP server cannot be held open by clients that never finish a request.

Half-sent request heads used to be waited on for ever: 1,100 of them exhausted 1,024 file
descriptors. Now a head must arrive within a deadline, and at the connection cap the connection
that has waited longest for its head makes room. Shown in-process with a short deadline, and on a
real ``mediamux serve --transport http`` process whose descriptor limit is lowered to 256.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
import pytest

from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.server.http import HEAD_TIMEOUT_S, connection_limits, guarded_protocol
from tests.test_e2e import HttpServer, free_port, serve_cmd, server_env, stop, wait_until_healthy

pytestmark = pytest.mark.faults

HALF_HEAD = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


async def ok(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def half_sent(
    port: int, count: int, *, send: bytes = HALF_HEAD
) -> AsyncIterator[list[anyio.abc.SocketStream]]:
    """``count`` connections to 127.0.0.1 that each send ``send`` (part of a request head) and stop."""
    streams: list[anyio.abc.SocketStream] = []
    try:
        for _ in range(count):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            streams.append(stream)
            if send:
                await stream.send(send)
        yield streams
    finally:
        for stream in streams:
            await stream.aclose()


async def wait_until_closed(streams: list[anyio.abc.SocketStream], at_least: int) -> int:
    """Wait until the server has closed ``at_least`` of ``streams``; how many it closed by then."""
    closed = 0
    done = anyio.Event()

    async def watch(stream: anyio.abc.SocketStream) -> None:
        nonlocal closed
        try:
            while await stream.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        closed += 1
        if closed >= at_least:
            done.set()

    async with anyio.create_task_group() as tg:
        for stream in streams:
            tg.start_soon(watch, stream)
        await done.wait()
        tg.cancel_scope.cancel()
    return closed


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_connections_that_never_complete_a_request_head_are_closed_at_the_deadline() -> None:
    protocol = guarded_protocol(max_connections=1000, head_timeout_s=0.3)
    async with (
        serve_on_loopback(ok, http=protocol) as url,
        half_sent(port_of(url), 40) as halves,
        half_sent(port_of(url), 40, send=b"") as silent,
    ):
        with anyio.fail_after(10):
            async with httpx2.AsyncClient() as http:
                served = await http.get(f"{url}/healthz")
            closed = await wait_until_closed(halves + silent, at_least=80)

    assert served.status_code == 200
    assert closed == 80


async def test_at_the_connection_cap_half_sent_requests_make_room_for_a_real_one() -> None:
    # A deadline far beyond this test: only the cap can be what closes connections here.
    protocol = guarded_protocol(max_connections=20, head_timeout_s=600)
    async with serve_on_loopback(ok, http=protocol) as url, half_sent(port_of(url), 100) as halves:
        with anyio.fail_after(10):
            async with httpx2.AsyncClient() as http:
                served = await http.get(f"{url}/healthz")
            closed = await wait_until_closed(halves, at_least=81)

    assert served.status_code == 200
    assert closed >= 81  # 100 half-sent + 1 real connection, at most 20 open at once


@pytest.mark.parametrize("descriptors", [256, 1024, 4096, 1 << 20])
def test_the_cap_and_three_accept_bursts_leave_over_half_the_descriptors_for_everything_else(
    descriptors: int,
) -> None:
    cap, burst = connection_limits(descriptors)

    assert cap + 3 * burst < descriptors // 2
    assert cap >= 64  # even at macOS's default of 256, room for many MCP clients


def low_descriptor_limit() -> None:
    # 256 descriptors: the cap becomes 64 connections, and 300 held ones would exhaust them all.
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


@pytest.fixture
def starved_server(tmp_path: Path) -> Iterator[HttpServer]:
    """``mediamux serve --transport http`` (token required) in a process limited to 256 descriptors."""
    if sys.platform == "win32":
        pytest.skip("descriptor limits are set with setrlimit")
    port = free_port()
    stderr_path = tmp_path / "server.stderr"
    with stderr_path.open("wb") as errlog:
        proc = subprocess.Popen(
            serve_cmd("--transport", "http", "--port", str(port), sandbox=False),
            env=server_env(tmp_path, MEDIAMUX_HTTP_TOKEN="limits-token"),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errlog,
            preexec_fn=low_descriptor_limit,
        )
    try:
        yield HttpServer(f"http://127.0.0.1:{port}", port, proc, stderr_path)
    finally:
        stop(proc)


async def test_a_real_server_outlives_hundreds_of_half_sent_requests_and_still_serves(
    starved_server: HttpServer,
) -> None:
    server = starved_server
    await wait_until_healthy(server)
    async with half_sent(server.port, 300) as halves:
        with anyio.fail_after(15):
            async with httpx2.AsyncClient(timeout=5.0) as http:
                health = await http.get(f"{server.base_url}/healthz")
                refused = await http.post(server.mcp_url, json={})
            # The cap closed most at once; the head deadline closes the rest.
            made_room = await wait_until_closed(halves, at_least=300 - 64)
        with anyio.fail_after(HEAD_TIMEOUT_S + 10):
            closed = await wait_until_closed(halves, at_least=300)

    assert server.proc.poll() is None, server.stderr()
    assert health.status_code == 200
    assert refused.status_code == 401  # a complete request is still judged: no token, no entry
    assert made_room >= 300 - 64
    assert closed == 300
    assert "Too many open files" not in server.stderr()


async def test_a_burst_of_connections_queued_while_the_server_was_busy_does_not_exhaust_its_descriptors(
    starved_server: HttpServer,
) -> None:
    server = starved_server
    await wait_until_healthy(server)
    streams: list[anyio.abc.SocketStream] = []

    async def connect_half_sent() -> None:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        streams.append(stream)
        await stream.send(HALF_HEAD)

    # A stopped process stands for an event loop stalled for a moment: connections queue up in the
    # kernel and reach the server all at once when it resumes.
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        with anyio.move_on_after(1.0):
            async with anyio.create_task_group() as tg:
                for _ in range(300):
                    tg.start_soon(connect_half_sent)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    try:
        with anyio.fail_after(15):
            async with httpx2.AsyncClient(timeout=10.0) as http:
                health = await http.get(f"{server.base_url}/healthz")
    finally:
        for stream in streams:
            await stream.aclose()

    assert health.status_code == 200
    assert "Too many open files" not in server.stderr()


def test_the_server_keeps_idle_connections_longer_than_http_clients_keep_theirs() -> None:
    """A client reuses an idle connection only before its own expiry; if the server closed it at the
    same moment, the request on it would fail unretried. So the server outlasts the clients."""
    import httpx2

    from mediamux.server.http import uvicorn_limits

    common_client_expiries_s = (
        httpx2.Limits().keepalive_expiry or 0.0,
        4.0,
        15.0,
    )  # httpx (SDK), undici, aiohttp
    assert uvicorn_limits()["timeout_keep_alive"] > max(common_client_expiries_s)
