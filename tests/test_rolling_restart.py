"""Rolling restarts of a real `mediamux serve --transport http --sandbox` process: SIGTERM drains.

While jobs are in flight the process is sent SIGTERM. It must report not-ready at once, finish (or stop
and mark) what it is submitting within MEDIAMUX_DRAIN_S, send waiting callers back with their job ids,
and exit 0 — and afterwards the journal must hold every job, the emulators' own persisted state must
show each submission exactly once, and a restart on the same home must finish every job without
submitting anything again.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mediamux.jobs.journal import Journal
from tests.test_e2e import (
    HTTP_TOKEN,
    HttpServer,
    free_port,
    raw_call,
    rpc_result,
    serve_cmd,
    server_env,
    stop,
    wait_until_healthy,
)

LEGACY = "2025-11-25"
LEGACY_HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": LEGACY}
VIDEO = "kling-v2.1-master-t2v"  # about 10 s of real time in the emulator: running when SIGTERM comes
VIDEOS = 12
TEST_TIMEOUT_S = 90


class Replica:
    """One `mediamux serve` process on a home that outlives it."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.env = server_env(root, MEDIAMUX_HTTP_TOKEN=HTTP_TOKEN, MEDIAMUX_SANDBOX_SLOW_RENDERS="1", **env)
        self.server: HttpServer | None = None
        self.runs = 0

    def start(self) -> HttpServer:
        port = free_port()
        self.runs += 1
        errlog = self.root / f"server-{self.runs}.stderr"
        with errlog.open("wb") as sink:
            proc = subprocess.Popen(
                serve_cmd("--transport", "http", "--port", str(port)),
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        self.server = HttpServer(f"http://127.0.0.1:{port}", port, proc, errlog)
        return self.server

    def journal(self) -> list[Any]:
        journal = Journal(self.root / "home" / "mediamux.sqlite3")
        try:
            return journal.list(limit=200)
        finally:
            journal.close()

    def emulated_muapi_jobs(self) -> set[str]:
        """Request ids of every job the MuAPI emulator accepted (kept in its state folder)."""
        folder = self.root / "home" / "sandbox" / "muapi" / "jobs"
        return {json.loads(p.read_text())["id"] for p in folder.glob("*.json")}


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    made = Replica(tmp_path, MEDIAMUX_DRAIN_S="30")
    yield made
    if made.server is not None:
        stop(made.server.proc)


def structured(response: httpx2.Response) -> dict[str, Any]:
    """A tool result's structured content, with whether it is an error and the error's class."""
    assert response.status_code == 200, response.text
    result = rpc_result(response)
    error = (result.get("_meta") or {}).get("mediamux/error") or {}
    return dict(result.get("structuredContent") or {}) | {
        "_is_error": result.get("isError", False),
        "_error_class": error.get("class"),
        "_text": " ".join(block.get("text", "") for block in result.get("content", [])),
    }


async def legacy_session(http: httpx2.AsyncClient, server: HttpServer) -> str:
    """A 2025-11-25 session on ``server`` (what a load balancer pins by Mcp-Session-Id)."""
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "drain", "version": "0"},
        },
    }
    answer = await http.post(server.mcp_url, json=hello, headers=LEGACY_HEADERS)
    session = answer.headers["mcp-session-id"]
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    await http.post(server.mcp_url, json=done, headers=LEGACY_HEADERS | {"Mcp-Session-Id": session})
    return session


async def legacy_call(
    http: httpx2.AsyncClient, server: HttpServer, session: str, name: str, arguments: dict[str, Any]
) -> httpx2.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }
    return await http.post(server.mcp_url, json=body, headers=LEGACY_HEADERS | {"Mcp-Session-Id": session})


async def healthz(http: httpx2.AsyncClient, server: HttpServer) -> tuple[int, dict[str, Any]] | None:
    try:
        answer = await http.get(f"{server.base_url}/healthz")
    except httpx2.TransportError:
        return None  # stopped listening
    return answer.status_code, answer.json()


async def test_sigterm_with_jobs_in_flight_loses_none_and_submits_each_once(replica: Replica) -> None:
    server = replica.start()
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {HTTP_TOKEN}"}, timeout=60.0)
    waited: list[dict[str, Any]] = []
    health: list[tuple[int, dict[str, Any]]] = []
    async with http:
        with anyio.fail_after(TEST_TIMEOUT_S):
            await wait_until_healthy(server)
            session = await legacy_session(http, server)
            # Two renders that take about 6 s each: submissions in flight when the signal comes.
            renders = [
                structured(
                    await raw_call(
                        http, server.mcp_url, "muzaic_generate_music", {"duration": s, "wait_s": 0}
                    )
                )
                for s in (60, 61)
            ]
            assert [r["_is_error"] for r in renders] == [False, False], renders

            async def wait_for_video(i: int) -> None:
                args = {"endpoint": VIDEO, "params": {"prompt": f"a slow pan, take {i}"}, "wait_s": 120}
                waited.append(structured(await raw_call(http, server.mcp_url, "muapi_generate", args)))

            async with anyio.create_task_group() as tg:
                for i in range(VIDEOS):
                    tg.start_soon(wait_for_video, i)
                # Every video accepted by the provider (and so journaled), all callers still waiting.
                while len({j for j in replica.emulated_muapi_jobs()}) < VIDEOS:
                    await anyio.sleep(0.05)
                signalled = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                while (seen := await healthz(http, server)) is not None and seen[0] == 200:
                    await anyio.sleep(0.02)
                assert seen is not None, "stopped listening before reporting the drain"
                health.append(seen)
                # New work during the drain is refused before anything is sent: a request with no session
                # at the HTTP level (a balancer retries it on another replica), a pinned session's in the
                # tool's own words.
                new = {"endpoint": VIDEO, "params": {"prompt": "new"}}
                elsewhere = await raw_call(http, server.mcp_url, "muapi_generate", new)
                refused = structured(await legacy_call(http, server, session, "muapi_generate", new))
            released_after_s = time.monotonic() - signalled
            code = await anyio.to_thread.run_sync(server.proc.wait)
            stopped_after_s = time.monotonic() - signalled

    # Not ready at once, and said so.
    assert health == [(503, health[0][1])]
    assert health[0][1] | {"version": ""} == {
        "status": "draining",
        "ready": False,
        "draining": True,
        "version": "",
    }
    assert (elsewhere.status_code, elsewhere.headers["retry-after"]) == (503, "1")
    assert refused["_is_error"] and refused["_error_class"] == "rate_limited", refused
    assert "nothing was sent to MuAPI" in refused["_text"]
    # Waiting callers were sent back at once with their job ids, not held for the drain.
    assert released_after_s < 5
    assert len(waited) == VIDEOS
    for answer in waited:
        assert not answer["_is_error"] and answer["status"] in ("queued", "running"), answer
        assert answer["note"].startswith("this server is restarting")
    # The renders in flight finished within the drain, then the process exited cleanly.
    assert code == 0, server.stderr()
    assert stopped_after_s < 30
    assert "draining: waiting up to 30 s for" in server.stderr()

    journal = replica.journal()
    videos = [r for r in journal if r.provider == "muapi"]
    music = [r for r in journal if r.provider == "muzaic"]
    assert {r.job_id for r in videos} == {a["job_id"] for a in waited}
    assert all(r.submit_state == "accepted" and r.provider_job_id for r in videos)
    assert {r.provider_job_id for r in videos} == replica.emulated_muapi_jobs()  # each submitted once
    assert {r.job_id for r in music} == {r["job_id"] for r in renders}
    assert all(r.status == "completed" and r.result and r.result["saved"] for r in music)

    # The next start finishes every job from the journal, submitting nothing again.
    server = replica.start()
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {HTTP_TOKEN}"}, timeout=60.0) as http:
        with anyio.fail_after(TEST_TIMEOUT_S):
            await wait_until_healthy(server)
            finished = [
                structured(
                    await raw_call(http, server.mcp_url, "jobs_wait", {"job_id": r.job_id, "wait_s": 60})
                )
                for r in journal
            ]
            tokens = structured(await raw_call(http, server.mcp_url, "muzaic_get_account", {}))
    assert [f["status"] for f in finished] == ["completed"] * len(journal)
    assert len(replica.emulated_muapi_jobs()) == VIDEOS
    assert tokens["tokens_used"] == 121  # the 60 s and 61 s renders, each charged once


async def test_a_render_longer_than_the_drain_is_stopped_marked_uncertain_and_never_repeated(
    tmp_path: Path,
) -> None:
    replica = Replica(tmp_path, MEDIAMUX_DRAIN_S="1")
    server = replica.start()
    args = {"duration": 300, "wait_s": 0}  # about 30 s of rendering
    try:
        async with httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {HTTP_TOKEN}"}, timeout=60.0
        ) as http:
            with anyio.fail_after(TEST_TIMEOUT_S):
                await wait_until_healthy(server)
                started = structured(await raw_call(http, server.mcp_url, "muzaic_generate_music", args))
                assert not started["_is_error"], started
                signalled = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                code = await anyio.to_thread.run_sync(server.proc.wait)
                stopped_after_s = time.monotonic() - signalled

                (record,) = replica.journal()
                server = replica.start()
                await wait_until_healthy(server)
                retried = structured(await raw_call(http, server.mcp_url, "muzaic_generate_music", args))
                tokens = structured(await raw_call(http, server.mcp_url, "muzaic_get_account", {}))
    finally:
        stop(server.proc)

    assert code == 0, server.stderr()
    assert stopped_after_s < 15  # the 1 s drain, the stop grace, the shutdown: not the 30 s render
    assert record.job_id == started["job_id"]
    assert (record.status, record.submit_state) == ("cancelled", "uncertain")
    # The identical call returns the uncertain job instead of rendering (and paying) again.
    assert retried["job_id"] == record.job_id and retried["deduplicated"] is True
    assert tokens["tokens_used"] == 0  # the emulator never finished (or charged) the abandoned render
