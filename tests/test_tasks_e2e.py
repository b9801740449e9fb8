"""MCP tasks end to end: the real ``mediamux serve`` over stdio and Streamable HTTP, both generations.

Real processes, real time, the MuAPI emulator over loopback: a ``flux-schnell-image`` job takes about
4 s, and ``MEDIAMUX_TASK_SYNC_S=0.2`` makes every such call a task. Clients poll at the interval each
task asks for, bounded.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from mediamux.registry import make_sandbox
from tests.tasks_support import (
    TASKS,
    Created,
    DeclareTasks,
    RawLegacy,
    legacy_over_stdio,
    legacy_settle,
    start_task,
    tasks_cancel,
    tasks_get,
)
from tests.test_e2e import (
    HttpServer,
    free_port,
    serve_cmd,
    server_env,
    stop,
    wait_until_healthy,
)

SYNC = {"MEDIAMUX_TASK_SYNC_S": "0.2"}
IMAGE = {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron at dawn"}}


def image(prompt: str) -> dict[str, Any]:
    """A distinct image job: the HTTP tests share a server, whose duplicate guard would reuse a job."""
    return {"endpoint": "flux-schnell-image", "params": {"prompt": prompt}}


STUCK = {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron that never lands [stuck]"}}
VIDEO = {"endpoint": "kling-v2.1-master-t2v", "params": {"prompt": "a long pan over the hills"}}
SPAWN_S = 20
JOB_S = 40  # an image job end to end, with room for a slow CI box
MODERN = "2026-07-28"


def envelope(*, declare: bool = True) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "mediamux-tasks-e2e", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS: {}}} if declare else {},
    }


async def settle(client: Client, task_id: str) -> dict[str, Any]:
    """tasks/get at the interval the task asks for, until it ends (bounded)."""
    with anyio.fail_after(JOB_S):
        while True:
            task = await tasks_get(client, task_id)
            if task["status"] != "working":
                return task
            await anyio.sleep(min(task["pollIntervalMs"], 500) / 1000)


def assert_completed_image(task: dict[str, Any]) -> None:
    assert task["status"] == "completed", task
    result = task["result"]
    assert result.get("isError") is not True
    saved = result["structuredContent"]["result"]["saved"]
    assert saved and Path(saved[0]["path"]).stat().st_size == saved[0]["size_bytes"] > 0
    # The inline result names the server as the call's own 2026 result would (hosts such as the MCP
    # Inspector hand it on as the tool result).
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mediamux", result.get("_meta")


# -- stdio ------------------------------------------------------------------------------------------


def stdio(root: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=serve_cmd()[0], args=serve_cmd()[1:], env=server_env(root, **SYNC), cwd=root
    )


async def test_stdio_2026_task_is_created_polled_completed_and_another_cancelled(tmp_path: Path) -> None:
    with anyio.fail_after(SPAWN_S + 2 * JOB_S):
        async with Client(stdio(tmp_path), extensions=[DeclareTasks()]) as client:
            created = await start_task(client, "muapi_generate", IMAGE)
            done = await settle(client, created.task_id)
            stuck = await start_task(client, "muapi_generate", STUCK)
            ack = await tasks_cancel(client, stuck.task_id)
            cancelled = await tasks_get(client, stuck.task_id)

    assert isinstance(created, Created) and created.task_id.startswith("job_")
    assert_completed_image(done)
    assert ack["resultType"] == "complete" and "status" not in ack
    assert cancelled["status"] == "cancelled"


async def test_stdio_legacy_task_reports_its_status_and_its_result(tmp_path: Path) -> None:
    errors = tmp_path / "server.stderr"
    with anyio.fail_after(SPAWN_S + JOB_S), errors.open("wb") as errlog:
        async with (
            await anyio.open_process(
                serve_cmd(), env=server_env(tmp_path, **SYNC), cwd=tmp_path, stderr=errlog
            ) as proc,
            legacy_over_stdio(proc) as client,
        ):
            assert client.init_result["capabilities"]["tasks"]["requests"] == {"tools": {"call": {}}}
            created = await client.request(
                "tools/call", {"name": "muapi_generate", "arguments": IMAGE, "task": {"ttl": 600000}}
            )
            task_id = created["task"]["taskId"]
            told = await client.wait_for_notification("notifications/tasks/status")
            while told["params"]["status"] == "working":
                told = await client.wait_for_notification("notifications/tasks/status")
            result = await client.request("tasks/result", {"taskId": task_id})
            listed = await client.request("tasks/list", {})
            await proc.stdin.aclose()  # type: ignore[union-attr]

    assert created["task"]["status"] == "working"
    assert told["params"]["taskId"] == task_id and told["params"]["status"] == "completed"
    assert told["params"]["ttl"] is None  # unlimited, said as null rather than left out
    assert result["structuredContent"]["status"] == "completed"
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
    assert task_id in [t["taskId"] for t in listed["tasks"]]


async def test_stdio_task_started_before_a_restart_completes_after_it(tmp_path: Path) -> None:
    with anyio.fail_after(2 * SPAWN_S + JOB_S):
        async with Client(stdio(tmp_path), extensions=[DeclareTasks()]) as first:
            created = await start_task(first, "muapi_generate", VIDEO)
        # The first process (and its emulator) is gone; the second opens the same home.
        async with Client(stdio(tmp_path), extensions=[DeclareTasks()]) as second:
            found = await tasks_get(second, created.task_id)
            done = await settle(second, created.task_id)

    assert isinstance(created, Created)
    assert found["status"] == "working"
    assert done["status"] == "completed"
    assert done["result"]["structuredContent"]["result"]["saved"][0]["path"].endswith(".mp4")


# -- HTTP -------------------------------------------------------------------------------------------


def spawn_http(root: Path, **env: str) -> HttpServer:
    port = free_port()
    errors = root / f"server-{port}.stderr"
    with errors.open("wb") as errlog:
        proc = subprocess.Popen(
            serve_cmd("--transport", "http", "--port", str(port), sandbox="MUAPI_BASE_URL" not in env),
            env=server_env(root, **SYNC, **env),
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errlog,
        )
    return HttpServer(f"http://127.0.0.1:{port}", port, proc, errors)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    server = spawn_http(tmp_path_factory.mktemp("tasks-http"))
    try:
        anyio.run(wait_until_healthy, server)
        yield server
    finally:
        stop(server.proc)


def messages(response: httpx2.Response) -> list[dict[str, Any]]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        # A 2025-11-25 stream opens with a priming event whose data is empty (SSE resumability): skip it.
        lines = response.text.splitlines()
        return [json.loads(line[5:]) for line in lines if line.startswith("data:") and line[5:].strip()]
    return [response.json()]


def answer(response: httpx2.Response) -> dict[str, Any]:
    return next(m for m in messages(response) if "result" in m or "error" in m)


async def post(
    http: httpx2.AsyncClient,
    url: str,
    method: str,
    params: dict[str, Any],
    *,
    declare: bool = True,
    name: str | None = None,
) -> httpx2.Response:
    """One stateless 2026-07-28 request framed as a client must frame it (Mcp-Name = the named param)."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": method,
    }
    named = name if name is not None else params.get("taskId", params.get("name"))
    if named is not None:
        headers["Mcp-Name"] = named
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": method,
        "params": {**params, "_meta": envelope(declare=declare)},
    }
    return await http.post(url, json=body, headers=headers)


async def test_http_2026_task_over_the_sdk_client(http_server: HttpServer) -> None:
    with anyio.fail_after(JOB_S):
        async with (
            httpx2.AsyncClient(timeout=30.0) as http,
            Client(
                streamable_http_client(http_server.mcp_url, http_client=http), extensions=[DeclareTasks()]
            ) as client,
        ):
            created = await start_task(client, "muapi_generate", image("a heron over HTTP"))
            done = await settle(client, created.task_id)  # the SDK sends Mcp-Name = taskId

    assert isinstance(created, Created)
    assert_completed_image(done)


async def test_http_task_methods_check_the_routing_header_and_the_declaration(
    http_server: HttpServer,
) -> None:
    url = http_server.mcp_url
    with anyio.fail_after(JOB_S):
        async with httpx2.AsyncClient(timeout=30.0) as http:
            created = answer(
                await post(http, url, "tools/call", {"name": "muapi_generate", "arguments": STUCK})
            )
            task_id = created["result"]["taskId"]
            matched = await post(http, url, "tasks/get", {"taskId": task_id})
            wrong = await post(http, url, "tasks/get", {"taskId": task_id}, name="job_someone-elses")
            undeclared = await post(http, url, "tasks/get", {"taskId": task_id}, declare=False)
            unknown = await post(http, url, "tasks/get", {"taskId": "job_nobody-has-this"})
            gone = await post(http, url, "tasks/list", {})
            await post(http, url, "tasks/cancel", {"taskId": task_id})

    assert created["result"]["resultType"] == "task"
    assert matched.status_code == 200 and answer(matched)["result"]["status"] == "working"
    assert wrong.status_code == 400 and answer(wrong)["error"]["code"] == -32020
    assert undeclared.status_code == 400 and answer(undeclared)["error"]["code"] == -32021
    assert answer(unknown)["error"]["code"] == -32602
    assert answer(gone)["error"]["code"] == -32601


async def test_http_listen_with_task_ids_streams_each_change_of_the_task(http_server: HttpServer) -> None:
    url = http_server.mcp_url
    seen: list[dict[str, Any]] = []
    with anyio.fail_after(JOB_S):
        async with httpx2.AsyncClient(timeout=30.0) as http:
            created = answer(
                await post(http, url, "tools/call", {"name": "muapi_generate", "arguments": IMAGE})
            )
            task_id = created["result"]["taskId"]
            body = {
                "jsonrpc": "2.0",
                "id": 9,
                "method": "subscriptions/listen",
                "params": {"notifications": {"taskIds": [task_id, "job_unknown-one"]}, "_meta": envelope()},
            }
            headers = {
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": MODERN,
                "Mcp-Method": "subscriptions/listen",
            }
            async with http.stream("POST", url, json=body, headers=headers) as stream:
                async for line in stream.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    seen.append(json.loads(line[5:]))
                    if (
                        seen[-1].get("method") == "notifications/tasks"
                        and seen[-1]["params"]["status"] != "working"
                    ):
                        break

    ack, *updates = seen
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["notifications"]["taskIds"] == [task_id]  # the unknown id is not honored
    assert all(u["method"] == "notifications/tasks" and u["params"]["taskId"] == task_id for u in updates)
    assert all(u["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 9 for u in updates)
    assert updates[0]["params"]["status"] == "working"
    final = updates[-1]["params"]
    assert final["status"] == "completed" and final["result"]["structuredContent"]["status"] == "completed"
    assert final["ttlMs"] is None


async def test_http_listen_for_tasks_without_the_extension_is_refused(http_server: HttpServer) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "subscriptions/listen",
        "params": {"notifications": {"taskIds": ["job_x"]}, "_meta": envelope(declare=False)},
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "subscriptions/listen",
    }
    with anyio.fail_after(10):
        async with httpx2.AsyncClient(timeout=10.0) as http:
            refused = await http.post(http_server.mcp_url, json=body, headers=headers)

    assert answer(refused)["error"]["code"] == -32021


class _HttpLegacy(RawLegacy):
    def __init__(self, http: httpx2.AsyncClient, url: str) -> None:
        super().__init__()
        self._http = http
        self._url = url
        self._session: str | None = None

    async def _send(self, message: dict[str, Any]) -> None:
        headers = {"Accept": "application/json, text/event-stream"}
        if self._session is not None:
            headers |= {"Mcp-Session-Id": self._session, "MCP-Protocol-Version": "2025-11-25"}
        response = await self._http.post(self._url, json=message, headers=headers)
        self._session = response.headers.get("mcp-session-id", self._session)
        if response.status_code == 202:
            return
        for received in messages(response):
            self._received(received)


async def test_http_legacy_task_is_created_polled_and_its_result_fetched(http_server: HttpServer) -> None:
    with anyio.fail_after(JOB_S):
        async with httpx2.AsyncClient(timeout=30.0) as http:
            client = _HttpLegacy(http, http_server.mcp_url)
            init = await client.initialize()
            created = await client.request(
                "tools/call",
                {
                    "name": "muapi_generate",
                    "arguments": {**IMAGE, "params": {"prompt": "a legacy heron"}},
                    "task": {},
                },
            )
            task_id = created["task"]["taskId"]
            done = await legacy_settle(client, task_id)
            result = await client.request("tasks/result", {"taskId": task_id})

    assert init["capabilities"]["tasks"]["requests"]["tools"] == {"call": {}}
    assert done["status"] == "completed"
    assert result["structuredContent"]["job_id"] == task_id


# -- two replicas, one journal ------------------------------------------------------------------------


@asynccontextmanager
async def shared_emulator() -> AsyncIterator[dict[str, str]]:
    """One MuAPI emulator both replicas talk to, as they would talk to MuAPI itself."""
    box = make_sandbox(only=("muapi",))
    try:
        async with box.running() as urls:
            yield {"MUAPI_API_KEY": box.keys["muapi"], "MUAPI_BASE_URL": urls["muapi"] + "/api/v1"}
    finally:
        box.close()


async def test_a_second_replica_on_the_same_journal_answers_and_completes_the_task(tmp_path: Path) -> None:
    async with shared_emulator() as provider:
        env = {**provider, "MEDIAMUX_TOOLSETS": "muapi,jobs"}
        one, two = spawn_http(tmp_path, **env), spawn_http(tmp_path, **env)
        try:
            with anyio.fail_after(SPAWN_S + JOB_S):
                await wait_until_healthy(one)
                await wait_until_healthy(two)
                async with httpx2.AsyncClient(timeout=30.0) as http:
                    created = answer(
                        await post(
                            http, one.mcp_url, "tools/call", {"name": "muapi_generate", "arguments": IMAGE}
                        )
                    )
                    task_id = created["result"]["taskId"]
                    first = answer(await post(http, two.mcp_url, "tasks/get", {"taskId": task_id}))["result"]
                    while True:
                        task = answer(await post(http, two.mcp_url, "tasks/get", {"taskId": task_id}))[
                            "result"
                        ]
                        if task["status"] != "working":
                            break
                        await anyio.sleep(task["pollIntervalMs"] / 1000)
                    also = answer(await post(http, one.mcp_url, "tasks/get", {"taskId": task_id}))["result"]
        finally:
            stop(one.proc)
            stop(two.proc)

    assert created["result"]["resultType"] == "task"
    assert first["taskId"] == task_id and first["status"] == "working"
    assert task["status"] == also["status"] == "completed"
    assert task["result"]["structuredContent"]["job_id"] == task_id


async def test_the_sdk_refuses_nothing_a_host_without_tasks_sends(http_server: HttpServer) -> None:
    """The fallback over the wire: no extension declared, the call waits and answers as before."""
    with anyio.fail_after(JOB_S):
        async with (
            httpx2.AsyncClient(timeout=30.0) as http,
            Client(streamable_http_client(http_server.mcp_url, http_client=http)) as client,
        ):
            result = await client.call_tool("muapi_generate", {**image("a heron, no tasks"), "wait_s": 0})
            with pytest.raises(MCPError) as refused:
                await tasks_get(client, result.structured_content["job_id"])

    assert result.structured_content["status"] in ("queued", "running")
    assert refused.value.error.code == -32021
