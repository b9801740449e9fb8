"""Clients for MCP tasks in tests: the SDK's Client where it can say it, raw JSON-RPC where it cannot.

* 2026-07-28: ``Client(..., extensions=[DeclareTasks()])`` declares the extension on every request
  and accepts a ``resultType: "task"`` answer (``call_tool(..., allow_claimed=True)`` returns it as
  ``Created``); ``tasks_get`` / ``tasks_cancel`` send the methods with the Mcp-Name header.
* 2025-11-25: the SDK client validates a ``tools/call`` answer as a CallToolResult, so a
  ``CreateTaskResult`` cannot reach a test through it. ``RawLegacy`` speaks JSON-RPC itself, in
  memory (the SDK's in-process transport) or over a subprocess's stdin/stdout.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client
from mcp.client._memory import InMemoryTransport
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.shared.message import SessionMessage
from mcp_types import Request, RequestParams, Result
from mcp_types.jsonrpc import JSONRPCError, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse
from pydantic import ConfigDict, TypeAdapter

TASKS = "io.modelcontextprotocol/tasks"
ANY = TypeAdapter(dict[str, Any])
TERMINAL = ("completed", "failed", "cancelled")


class Created(Result):
    """A 2026-07-28 CreateTaskResult as the client receives it (every wire field kept)."""

    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = "task"
    task_id: str
    status: str


class DeclareTasks(ClientExtension):
    """Declares the tasks extension; a task answer is returned to the test, not resolved."""

    identifier = TASKS

    def claims(self) -> Sequence[ResultClaim[Any]]:
        async def resolve(created: Created, cctx: ClaimContext) -> Any:
            raise AssertionError("tests drive tasks by hand: call_tool(..., allow_claimed=True)")

        return [ResultClaim(result_type="task", model=Created, resolve=resolve)]


class TaskIdParams(RequestParams):
    task_id: str


class TasksGet(Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    name_param = "taskId"


class TasksCancel(Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    name_param = "taskId"


class TasksResult(Request[TaskIdParams, Literal["tasks/result"]]):
    method: Literal["tasks/result"] = "tasks/result"


class TasksList(Request[RequestParams, Literal["tasks/list"]]):
    method: Literal["tasks/list"] = "tasks/list"


async def start_task(client: Client, name: str, arguments: dict[str, Any]) -> Any:
    """A tools/call that may become a task: the Created handle, or the plain CallToolResult."""
    with anyio.fail_after(30):
        return await client.session.call_tool(name, arguments, allow_claimed=True)


async def tasks_get(client: Client, task_id: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        return await client.session.send_request(TasksGet(params=TaskIdParams(task_id=task_id)), ANY)


async def tasks_cancel(client: Client, task_id: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        return await client.session.send_request(TasksCancel(params=TaskIdParams(task_id=task_id)), ANY)


# -- raw JSON-RPC, for what the SDK client refuses to carry ------------------------------------------


class RawRpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.error = error


class RawLegacy:
    """A 2025-11-25 client that reads and writes JSON-RPC messages as plain dicts."""

    def __init__(self) -> None:
        self._next_id = 0
        self.notifications: list[dict[str, Any]] = []
        self._responses: dict[int, dict[str, Any]] = {}
        self._arrived = anyio.Event()
        self.init_result: dict[str, Any] = {}

    async def _send(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def _received(self, message: dict[str, Any]) -> None:
        if "id" in message and ("result" in message or "error" in message):
            self._responses[message["id"]] = message
        elif "method" in message and "id" not in message:
            self.notifications.append(message)
        self._arrived.set()
        self._arrived = anyio.Event()

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, timeout_s: float = 30
    ) -> Any:
        self._next_id += 1
        request_id = self._next_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self._send(message)
        with anyio.fail_after(timeout_s):
            while request_id not in self._responses:
                await self._arrived.wait()
        answer = self._responses.pop(request_id)
        if "error" in answer:
            raise RawRpcError(answer["error"])
        return answer["result"]

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._send(message)

    async def initialize(self, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": capabilities or {},
                "clientInfo": {"name": "mediamux-tests", "version": "0"},
            },
        )
        await self.notify("notifications/initialized")
        self.init_result = result
        return result

    async def wait_for_notification(self, method: str, *, timeout_s: float = 30) -> dict[str, Any]:
        with anyio.fail_after(timeout_s):
            while True:
                for note in self.notifications:
                    if note["method"] == method:
                        self.notifications.remove(note)
                        return note
                await self._arrived.wait()


class _MemoryLegacy(RawLegacy):
    def __init__(self, write: Any) -> None:
        super().__init__()
        self._write = write

    async def _send(self, message: dict[str, Any]) -> None:
        if "id" in message:
            wire: Any = JSONRPCRequest.model_validate(message)
        else:
            wire = JSONRPCNotification.model_validate(message)
        await self._write.send(SessionMessage(message=wire))


@asynccontextmanager
async def legacy_in_memory(server: Any) -> AsyncIterator[RawLegacy]:
    """A raw 2025-11-25 client of an in-process server, already initialized."""
    async with InMemoryTransport(server) as (read, write), anyio.create_task_group() as tg:
        client = _MemoryLegacy(write)

        async def pump() -> None:
            async for item in read:
                if isinstance(item, Exception):
                    raise item
                wire = item.message
                if isinstance(wire, JSONRPCResponse | JSONRPCError | JSONRPCNotification | JSONRPCRequest):
                    client._received(wire.model_dump(by_alias=True, mode="json", exclude_unset=True))

        tg.start_soon(pump)
        await client.initialize()
        try:
            yield client
        finally:
            tg.cancel_scope.cancel()


class _StdioLegacy(RawLegacy):
    def __init__(self, stdin: Any) -> None:
        super().__init__()
        self._stdin = stdin

    async def _send(self, message: dict[str, Any]) -> None:
        await self._stdin.send((json.dumps(message) + "\n").encode())


@asynccontextmanager
async def legacy_over_stdio(process: Any) -> AsyncIterator[RawLegacy]:
    """A raw 2025-11-25 client of a spawned ``mediamux serve`` (stdio), already initialized."""
    client = _StdioLegacy(process.stdin)
    stdout = BufferedByteReceiveStream(process.stdout)
    async with anyio.create_task_group() as tg:

        async def pump() -> None:
            try:
                while True:
                    client._received(json.loads(await stdout.receive_until(b"\n", 1 << 22)))
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
                return

        tg.start_soon(pump)
        await client.initialize()
        try:
            yield client
        finally:
            tg.cancel_scope.cancel()


async def legacy_settle(client: RawLegacy, task_id: str, *, timeout_s: float = 60) -> dict[str, Any]:
    """Poll tasks/get (legacy) until the task ends, at the interval it asks for (bounded)."""
    with anyio.fail_after(timeout_s):
        while True:
            task: dict[str, Any] = await client.request("tasks/get", {"taskId": task_id})
            if task["status"] in TERMINAL:
                return task
            await anyio.sleep(min(task.get("pollInterval") or 100, 500) / 1000)
