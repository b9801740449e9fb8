"""End to end: the real ``mediamux serve --sandbox`` process over stdio and Streamable HTTP, both eras.

Every test spawns ``python -m mediamux serve`` as a subprocess with a scrubbed environment (no provider
keys, no MEDIAMUX_* settings from the developer) and its own state folder. The MuAPI emulator runs
inside that process on REAL time, so a ``flux-schnell-image`` job takes about 4 s; tests that only need
a "running" answer pass ``wait_s: 0``.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

ERAS = ["auto", "legacy"]  # 2026-07-28 (server/discover) and 2025-11-25 (initialize handshake)
HTTP_TOKEN = "test-token-123"
IMAGE_ENDPOINT = "flux-schnell-image"  # the fastest emulated job (~4 s of real time)

SPAWN_TIMEOUT_S = 20  # interpreter start + imports + sandbox start, with room for a slow CI box
GENERATE_TIMEOUT_S = 30  # one image job end to end, including the spawn
READY_POLL_S = 0.05  # readiness loop only


# -- helpers ------------------------------------------------------------------------------------


def serve_cmd(*extra: str, sandbox: bool = True) -> list[str]:
    return [sys.executable, "-m", "mediamux", "serve", *(["--sandbox"] if sandbox else []), *extra]


def server_env(root: Path, **extra: str) -> dict[str, str]:
    """The parent's environment minus provider keys and mediamux settings, plus an isolated home."""
    env = {
        k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("MEDIAMUX_")
    }
    env["MEDIAMUX_HOME"] = str(root / "home")
    env["MEDIAMUX_ALLOWED_DIRS"] = str(root)
    env.update(extra)
    return env


def stdio_params(root: Path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=serve_cmd()[1:], env=server_env(root), cwd=root)


def ephemeral_low() -> int:
    """The first port the kernel hands out for port 0 (Linux's default when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port below the ephemeral range, for a server that must be told its port.

    A port the kernel picked for port 0 and that was then released can be handed out again to
    anyone binding port 0 (every emulator, and other pytest-xdist workers do it all the time) before
    the server binds it; the kernel never hands out ports below the range.
    """
    low = ephemeral_low()
    candidates = range(max(1024, low - 12_000), low)
    for port in random.sample(candidates, k=min(200, len(candidates))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port between {candidates.start} and {candidates.stop}")


@dataclass
class ProgressLog:
    events: list[tuple[float, float | None, str | None]] = field(default_factory=list)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))

    @property
    def messages(self) -> list[str]:
        return [m for _, _, m in self.events if m]


def generate_args(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"endpoint": IMAGE_ENDPOINT, "params": {"prompt": prompt}, **extra}


def assert_completed_generation(result: Any, progress: ProgressLog) -> dict[str, Any]:
    assert not result.is_error, result.content
    data = result.structured_content
    assert data is not None
    assert data["status"] == "completed", data
    usd = data["cost"]["usd"]
    assert isinstance(usd, int | float)
    assert not isinstance(usd, bool)
    assert usd > 0
    assert len(progress.messages) >= 2, progress.events
    saved = data["result"]["saved"]
    assert saved, data["result"]
    for item in saved:
        path = Path(item["path"])
        assert path.is_file()
        assert path.stat().st_size == item["size_bytes"] > 0
    return data


def text_of(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


# -- 1. stdio, both eras ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_stdio_generate_reports_progress_cost_and_saves_output(tmp_path: Path, mode: str) -> None:
    progress = ProgressLog()
    with anyio.fail_after(GENERATE_TIMEOUT_S):
        async with Client(stdio_params(tmp_path), mode=mode) as client:  # type: ignore[arg-type]
            assert client.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"muapi_generate", "jobs_wait"} <= names

            result = await client.call_tool(
                "muapi_generate",
                generate_args(f"a lighthouse at dusk over stdio ({mode})"),
                progress_callback=progress,
            )
            data = assert_completed_generation(result, progress)
            outputs_dir = (tmp_path / "home" / "outputs").resolve()
            assert all(Path(s["path"]).resolve().parent == outputs_dir for s in data["result"]["saved"])

            costs = await client.read_resource("mediamux://costs")
            ledger = json.loads(costs.contents[0].text)  # type: ignore[union-attr]
    assert ledger["session"]["usd"] == pytest.approx(data["cost"]["usd"])
    assert ledger["session"]["providers"]["muapi"]["entries"] == 1
    assert ledger["all_time"]["usd"] == pytest.approx(data["cost"]["usd"])


# -- 2. stdout is protocol only ---------------------------------------------------------------------


async def test_stdio_stdout_carries_only_jsonrpc_messages(tmp_path: Path) -> None:
    def frame(message: dict[str, Any]) -> bytes:
        return (json.dumps({"jsonrpc": "2.0", **message}) + "\n").encode()

    lines: list[bytes] = []

    def parse(line: bytes) -> dict[str, Any]:
        lines.append(line)
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        assert isinstance(message, dict), f"non-protocol bytes on stdout: {line[:200]!r}"
        assert message.get("jsonrpc") == "2.0", f"not a JSON-RPC 2.0 message: {line[:200]!r}"
        return message

    async def read_until_response(stdout: BufferedByteReceiveStream, request_id: int) -> dict[str, Any]:
        while True:
            message = parse(await stdout.receive_until(b"\n", 1 << 20))
            if message.get("id") == request_id and ("result" in message or "error" in message):
                return message

    stderr_path = tmp_path / "server.stderr"  # a file, so logs can never fill a pipe and stall the server
    with anyio.fail_after(SPAWN_TIMEOUT_S), stderr_path.open("wb") as errlog:
        async with await anyio.open_process(
            serve_cmd(), env=server_env(tmp_path), cwd=tmp_path, stderr=errlog
        ) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            stdout = BufferedByteReceiveStream(proc.stdout)

            await proc.stdin.send(
                frame(
                    {
                        "id": 1,
                        "method": "initialize",
                        "params": {
                            "protocolVersion": "2025-11-25",
                            "capabilities": {},
                            "clientInfo": {"name": "mediamux-e2e", "version": "0"},
                        },
                    }
                )
            )
            init = await read_until_response(stdout, 1)
            await proc.stdin.send(frame({"method": "notifications/initialized"}))
            await proc.stdin.send(frame({"id": 2, "method": "tools/list", "params": {}}))
            await proc.stdin.send(
                frame(
                    {
                        "id": 3,
                        "method": "tools/call",
                        "params": {"name": "muapi_get_balance", "arguments": {}},
                    }
                )
            )
            listed = await read_until_response(stdout, 2)
            called = await read_until_response(stdout, 3)
            await proc.stdin.aclose()

            # Whatever the server writes while shutting down must be protocol too.
            try:
                while True:
                    parse(await stdout.receive_until(b"\n", 1 << 20))
            except (anyio.EndOfStream, anyio.IncompleteRead):
                pass
            rest = stdout.buffer
            returncode = await proc.wait()

    assert init["result"]["protocolVersion"] == "2025-11-25"
    assert init["result"]["serverInfo"]["name"] == "mediamux"
    assert "muapi_get_balance" in {t["name"] for t in listed["result"]["tools"]}
    assert called["result"].get("isError") is not True, called
    assert called["result"]["structuredContent"]["balance_usd"] > 0
    assert rest.strip() == b"", f"unterminated bytes on stdout: {rest[:200]!r}"
    assert len(lines) >= 3
    assert returncode == 0, stderr_path.read_text(errors="replace")


# -- HTTP server fixture ---------------------------------------------------------------------------


@dataclass
class HttpServer:
    base_url: str
    port: int
    proc: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


async def wait_until_healthy(server: HttpServer, timeout_s: float = SPAWN_TIMEOUT_S) -> dict[str, Any]:
    """Readiness loop: GET /healthz (no token needed) until it answers 200, bounded."""
    with anyio.fail_after(timeout_s):
        async with httpx2.AsyncClient(timeout=2.0) as http:
            while True:
                if server.proc.poll() is not None:
                    raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.stderr()}")
                try:
                    response = await http.get(f"{server.base_url}/healthz")
                except httpx2.TransportError:
                    response = None
                if response is not None and response.status_code == 200:
                    return dict(response.json())
                await anyio.sleep(READY_POLL_S)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """One token-protected sandbox server for the HTTP tests of this module (spawning costs ~1 s)."""
    root = tmp_path_factory.mktemp("http")
    port = free_port()
    stderr_path = root / "server.stderr"
    with stderr_path.open("wb") as errlog:
        proc = subprocess.Popen(
            serve_cmd("--transport", "http", "--port", str(port)),
            env=server_env(root, MEDIAMUX_HTTP_TOKEN=HTTP_TOKEN),
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errlog,
        )
    server = HttpServer(f"http://127.0.0.1:{port}", port, proc, stderr_path)
    try:
        health = anyio.run(wait_until_healthy, server)
        assert health["status"] == "ok"
        yield server
    finally:
        stop(proc)


def authed_http() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers={"Authorization": f"Bearer {HTTP_TOKEN}"}, timeout=20.0)


MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "mediamux-e2e", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


async def raw_call(
    http: httpx2.AsyncClient, url: str, name: str, arguments: dict[str, Any], **headers: str
) -> httpx2.Response:
    """One stateless 2026-07-28 tools/call POST, as the SDK client frames it, with extra headers."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments, "_meta": MODERN_META},
    }
    return await http.post(
        url,
        json=body,
        headers={
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": "tools/call",
            "Mcp-Name": name,
            **headers,
        },
    )


def rpc_result(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC result of a plain JSON or SSE response."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            # A 2025-11-25 stream opens with a priming event whose data is empty (resumability).
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if "result" in message or "error" in message:
                    return dict(message["result"])
        raise AssertionError(f"no JSON-RPC response in the SSE body: {response.text[:500]}")
    return dict(response.json()["result"])


async def job_count(http: httpx2.AsyncClient, server: HttpServer) -> int:
    response = await raw_call(http, server.mcp_url, "jobs_list", {"limit": 200})
    assert response.status_code == 200, response.text
    return len(rpc_result(response)["structuredContent"]["jobs"])


# -- 3. HTTP with a bearer token, both eras -------------------------------------------------------------


async def test_http_mcp_requires_the_bearer_token(http_server: HttpServer) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}}
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28"}
    with anyio.fail_after(10):
        async with httpx2.AsyncClient(timeout=5.0) as http:
            health = await http.get(f"{http_server.base_url}/healthz")
            missing = await http.post(http_server.mcp_url, json=body, headers=headers)
            wrong = await http.post(
                http_server.mcp_url, json=body, headers={**headers, "Authorization": "Bearer not-the-token"}
            )
            not_bearer = await http.post(
                http_server.mcp_url, json=body, headers={**headers, "Authorization": HTTP_TOKEN}
            )
    assert health.status_code == 200
    for response in (missing, wrong, not_bearer):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].lower().startswith("bearer")
        assert response.json()["error"] == "unauthorized"
        assert HTTP_TOKEN not in response.text


@pytest.mark.parametrize("mode", ERAS)
async def test_http_generate_with_token_streams_progress(http_server: HttpServer, mode: str) -> None:
    progress = ProgressLog()
    with anyio.fail_after(GENERATE_TIMEOUT_S):
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {HTTP_TOKEN}"}, timeout=30.0)
        async with (
            http,
            Client(streamable_http_client(http_server.mcp_url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
        ):
            assert client.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"muapi_generate", "jobs_wait", "jobs_get"} <= names
            # A prompt per era: the shared server would otherwise return the first era's job (dedup).
            result = await client.call_tool(
                "muapi_generate",
                generate_args(f"a red fox in snow over HTTP ({mode})"),
                progress_callback=progress,
            )
    data = assert_completed_generation(result, progress)
    assert data["deduplicated"] is False


# -- 4. no token, no public bind ---------------------------------------------------------------------


async def test_http_refuses_non_loopback_bind_without_token(tmp_path: Path) -> None:
    port = free_port()
    with anyio.fail_after(SPAWN_TIMEOUT_S):
        completed = await anyio.run_process(
            serve_cmd("--transport", "http", "--host", "0.0.0.0", "--port", str(port), sandbox=False),
            env=server_env(tmp_path),
            cwd=tmp_path,
            check=False,
        )
    stderr = completed.stderr.decode(errors="replace")
    assert completed.returncode != 0
    assert "MEDIAMUX_HTTP_TOKEN" in stderr
    assert completed.stdout == b""
    # Nothing was left listening.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


# -- 5. Host / Origin checks ----------------------------------------------------------------------------


async def test_http_rejects_foreign_origin_and_host_before_any_tool_runs(http_server: HttpServer) -> None:
    url = http_server.mcp_url
    with anyio.fail_after(20):
        async with authed_http() as http:
            before = await job_count(http, http_server)
            # Control: the same raw request from an allowed origin reaches the tool and journals a job.
            control = await raw_call(
                http,
                url,
                "muapi_generate",
                generate_args("origin check control", wait_s=0),
                Origin=f"http://127.0.0.1:{http_server.port}",
            )
            evil_origin = await raw_call(
                http,
                url,
                "muapi_generate",
                generate_args("from a foreign origin", wait_s=0),
                Origin="http://evil.example",
            )
            evil_host = await raw_call(
                http,
                url,
                "muapi_generate",
                generate_args("through a foreign host name", wait_s=0),
                Host="evil.example",
            )
            after = await job_count(http, http_server)

    assert control.status_code == 200, control.text
    assert rpc_result(control)["structuredContent"]["status"] in ("queued", "running")
    assert evil_origin.status_code == 403, evil_origin.text
    assert evil_host.status_code == 421, evil_host.text
    # The control request journaled one job; neither refused request reached muapi_generate.
    assert after == before + 1


# -- 6. the journal outlives the process ----------------------------------------------------------------


async def test_job_started_over_stdio_is_readable_after_restart(tmp_path: Path) -> None:
    params = stdio_params(tmp_path)
    with anyio.fail_after(SPAWN_TIMEOUT_S):
        async with Client(params) as first:
            started = await first.call_tool(
                "muapi_generate", generate_args("a job that outlives its server", wait_s=0)
            )
    assert not started.is_error, text_of(started)
    job = started.structured_content
    assert job is not None
    assert job["status"] in ("queued", "running"), job
    assert job["job_id"].startswith("job_")
    assert job["provider_job_id"]

    with anyio.fail_after(SPAWN_TIMEOUT_S):
        async with Client(params) as second:
            got = await second.call_tool("jobs_get", {"job_id": job["job_id"]})
            listed = await second.call_tool("jobs_list", {})
    assert not got.is_error, text_of(got)
    again = got.structured_content
    assert again is not None
    assert again["job_id"] == job["job_id"]
    assert again["provider_job_id"] == job["provider_job_id"]
    assert (again["provider"], again["operation"]) == ("muapi", "generate")
    assert again["submitted_at"] == job["submitted_at"]
    assert [j["job_id"] for j in listed.structured_content["jobs"]] == [job["job_id"]]  # type: ignore[index]


# -- 7. the sandbox outlives the process too ----------------------------------------------------------------

VIDEO_ENDPOINT = "kling-v2.1-master-t2v"  # $1.40 a video, about 10 s of real time in the emulator
VIDEO_USD = 1.40
VIDEO_TIMEOUT_S = 60  # two spawns and a 10 s job, with room for a slow CI box


async def test_a_video_job_outlives_a_sandbox_restart_and_is_charged_once(tmp_path: Path) -> None:
    """The issue: after a restart the sandbox forgot the job (expired, charge kept) and a retry paid again."""
    params = stdio_params(tmp_path)
    args = {"endpoint": VIDEO_ENDPOINT, "params": {"prompt": "a long pan over the hills"}, "wait_s": 0}
    with anyio.fail_after(VIDEO_TIMEOUT_S):
        async with Client(params) as first:
            started = await first.call_tool("muapi_generate", args)
        assert not started.is_error, text_of(started)
        job = started.structured_content
        assert job is not None and job["status"] in ("queued", "running"), job

        async with Client(params) as second:
            waited = await second.call_tool("jobs_wait", {"job_id": job["job_id"], "wait_s": 40})
            retried = await second.call_tool("muapi_generate", {**args, "wait_s": 40})
            wallet = await second.call_tool("muapi_get_balance", {})
            costs = await second.read_resource("mediamux://costs")

    assert not waited.is_error, text_of(waited)
    done = waited.structured_content
    assert done is not None and done["status"] == "completed", done
    saved = done["result"]["saved"]
    assert saved and Path(saved[0]["path"]).read_bytes()[4:8] == b"ftyp"
    assert (retried.structured_content or {})["job_id"] == job["job_id"]  # the duplicate guard, not a new job
    assert (wallet.structured_content or {})["balance_usd"] == pytest.approx(25.0 - VIDEO_USD)
    ledger = json.loads(costs.contents[0].text)  # type: ignore[union-attr]
    assert ledger["all_time"]["usd"] == pytest.approx(VIDEO_USD)
    assert ledger["all_time"]["providers"]["muapi"]["entries"] == 1
