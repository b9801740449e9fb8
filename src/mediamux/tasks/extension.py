"""MCP tasks for every job tool, in both protocol eras, on the SDK's extension seam.

**2026-07-28** (``io.modelcontextprotocol/tasks``, SEP-2663). A request that declares the extension
and calls a job tool gets the tool's own answer when the job ends within ``sync_s`` (the tool's
wait is capped through ``SYNC_WINDOW_S``), else a ``CreateTaskResult`` whose ``taskId`` is the
job id. ``tasks/get`` reads the job from the journal (a finished task carries the tool result,
isError and all); ``tasks/cancel`` acknowledges and cancels the job; ``tasks/update`` acknowledges
(a job never waits on input); ``notifications/tasks`` ride ``subscriptions/listen`` for the
``taskIds`` a client names. ``tasks/result`` and ``tasks/list`` do not exist in this era (-32601).

**2025-11-25** (SEP-1686, experimental). The client asks with ``params.task``. The SDK routes
``tasks/*`` as extension methods on a legacy connection, but its per-version sieve would turn a
``CreateTaskResult`` into an invalid ``tools/call`` result, so that answer, the ``tasks``
capability and ``execution.taskSupport`` are set by a server middleware, which runs after the
sieve. ``tasks/result`` blocks until the job ends; ``tasks/list`` lists the journal's jobs;
``notifications/tasks/status`` goes to the session that created the task.

A request that declares nothing (or a tool that is not a job tool) runs exactly as before.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import anyio
from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.server import require_client_extension
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.inbound import decode_header_value
from mcp.shared.subscriptions import (
    SUBSCRIPTION_ID_META_KEY,
    ServerEvent,
    event_matches,
    event_to_notification,
)
from mcp_types import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    SERVER_INFO_META_KEY,
    CallToolRequestParams,
    RequestParams,
    SubscriptionFilter,
    SubscriptionsAcknowledgedNotification,
    SubscriptionsAcknowledgedNotificationParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field

from mediamux.principals import current_principal

# The extension is made before a stdio server's first answer; the board and the job engine it drives
# are imported when a task is first touched, after that answer.
if TYPE_CHECKING:
    from mediamux.jobs.engine import JobEngine
    from mediamux.tasks.board import Render, TaskBoard, TaskState

logger = logging.getLogger("mediamux.tasks")

TASKS = "io.modelcontextprotocol/tasks"
LEGACY = "2025-11-25"  # the one handshake version that defines tasks
MODERN = frozenset(MODERN_PROTOCOL_VERSIONS)
RELATED_TASK = "io.modelcontextprotocol/related-task"
IMMEDIATE_RESPONSE = "io.modelcontextprotocol/model-immediate-response"
LIST_PAGE = 50
MAX_LISTED_TASK_IDS = 100

EngineOf = Callable[[Any], "JobEngine"]


class TaskIdParams(RequestParams):
    task_id: str


class UpdateTaskParams(TaskIdParams):
    input_responses: dict[str, Any] = Field(default_factory=dict)


class ListTasksParams(RequestParams):
    cursor: str | None = None


class _Raw(BaseModel):
    """A notification sent exactly as built: the SDK drops null fields when it dumps a typed one,
    and a task's ``ttl``/``ttlMs`` is null on purpose (unlimited)."""

    method: str
    params: dict[str, Any]

    def model_dump(self, **_: Any) -> dict[str, Any]:
        return {"method": self.method, "params": self.params}


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    capabilities = ctx.session.client_capabilities
    declared = capabilities.extensions if capabilities is not None else None
    return declared is not None and TASKS in declared


def running_job(result: Any, *, finished_too: bool = False) -> str | None:
    """The job id a job tool's answer names, when the job is still going (or, with ``finished_too``,
    whatever its status); None for any other answer."""
    if isinstance(result, dict):
        data = result.get("structuredContent")
    else:
        data = getattr(result, "structured_content", None)
    if not isinstance(data, dict):
        return None
    job_id, status = data.get("job_id"), data.get("status")
    if not isinstance(job_id, str) or not isinstance(status, str):
        return None
    if finished_too or status in ("queued", "running", "saving_outputs"):
        return job_id
    return None


def not_found(task_id: str) -> MCPError:
    return MCPError(
        code=INVALID_PARAMS, message="Failed to retrieve task: Task not found", data={"taskId": task_id}
    )


class TasksExtension(Extension):
    identifier = TASKS

    def __init__(
        self,
        *,
        render: Render,
        job_tools: Collection[str],
        engine_of: EngineOf,
        sync_s: float = 1.5,
        required: Collection[str] = (),
    ) -> None:
        self._render = render
        self.job_tools = frozenset(job_tools)
        self.required = frozenset(required) & self.job_tools
        self.sync_s = sync_s
        # The server's 2026 identity stamp, once installed on a server (see install).
        self._server_info: Callable[[], Any] | None = None
        self._engine_of = engine_of
        # Legacy sessions that created a task hear its status changes.
        self._legacy: dict[str, list[tuple[Any, Any]]] = {}
        self._legacy_status: dict[str, str] = {}

    @functools.cached_property
    def board(self) -> TaskBoard:
        from mediamux.tasks.board import TaskBoard

        board = TaskBoard(self._render)
        board.watch(self._tell_legacy)
        return board

    # -- wiring ---------------------------------------------------------------------------------

    def install(self, server: MCPServer[Any], bus: SubscriptionBus) -> None:
        """Add the legacy middleware, and the taskIds filter to ``subscriptions/listen``."""
        server.middleware.append(self.legacy_middleware)
        self._server_info = lambda: server._lowlevel_server.server_info_stamp
        # MCPServer registers the SDK's listen handler; it knows no taskIds, so listens that name
        # some are served here and the rest are handed to it unchanged. The SDK offers no public
        # way to extend it (Notifier uses the same lowlevel API for resources/subscribe).
        lowlevel = server._lowlevel_server
        entry = lowlevel.get_request_handler("subscriptions/listen")
        if entry is not None:
            listen = TaskListen(self, entry.handler, bus)
            lowlevel.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, listen)

    def methods(self) -> list[MethodBinding]:
        legacy = frozenset({LEGACY})
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel),
            MethodBinding("tasks/update", UpdateTaskParams, self._update, protocol_versions=MODERN),
            MethodBinding("tasks/result", TaskIdParams, self._result, protocol_versions=legacy),
            MethodBinding("tasks/list", ListTasksParams, self._list, protocol_versions=legacy),
        ]

    def engine(self, ctx: ServerRequestContext[Any, Any]) -> JobEngine:
        return self._engine_of(ctx.lifespan_context)

    # -- 2026-07-28: tools/call -----------------------------------------------------------------

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.protocol_version not in MODERN or params.name not in self.job_tools:
            return await call_next(ctx)  # a legacy task is made by legacy_middleware
        if not declares_tasks(ctx):
            if params.name in self.required:
                require_client_extension(ctx, TASKS)
            return await call_next(ctx)
        result = await self._within_window(ctx, call_next)
        job_id = running_job(result)
        if job_id is None:
            return result
        engine = self.engine(ctx)
        # Read back before answering: the task must resolve for tasks/get once the client has its id.
        state = await self.board.get(engine, job_id)
        if state.terminal:
            return result
        self.board.follow(engine, job_id)
        return {"resultType": "task", **state.modern(detailed=False)}

    async def _within_window(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
        from mediamux.jobs.engine import SYNC_WINDOW_S

        token = SYNC_WINDOW_S.set(self.sync_s)
        try:
            return await call_next(ctx)
        finally:
            SYNC_WINDOW_S.reset(token)

    # -- tasks/* (both eras where they exist) ---------------------------------------------------

    async def _task(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> TaskState:
        """The task, checked for the era's rules, and followed while it runs."""
        from mediamux.tasks.board import TaskNotFound

        if ctx.protocol_version in MODERN:
            require_client_extension(ctx, TASKS)
            check_routing_header(ctx, task_id)
        engine = self.engine(ctx)
        try:
            state = await self.board.get(engine, task_id)
        except TaskNotFound:
            raise not_found(task_id) from None
        if not state.terminal:
            self.board.follow(engine, task_id)
        return state

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        state = await self._task(ctx, params.task_id)
        if ctx.protocol_version in MODERN:
            task = state.modern()
            inline = task.get("result")
            if isinstance(inline, dict) and self._server_info is not None:
                # The result a call made as a task ends with names the server, as the same call's own
                # 2026 result would: hosts (the MCP Inspector among them) hand it on as that result.
                meta = dict(inline.get("_meta") or {})
                meta.setdefault(SERVER_INFO_META_KEY, self._server_info())
                task["result"] = {**inline, "_meta": meta}
            return {"resultType": "complete", **task}
        return state.legacy()

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams) -> dict[str, Any]:
        # A job never waits on the client, so no input is outstanding: responses are ignored, as
        # SEP-2663 asks for keys that are not outstanding.
        await self._task(ctx, params.task_id)
        return {"resultType": "complete"}

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        from mediamux.tasks.board import TaskBusy

        state = await self._task(ctx, params.task_id)
        engine = self.engine(ctx)
        modern = ctx.protocol_version in MODERN
        if state.terminal:
            if modern:
                return {"resultType": "complete"}  # idempotent: only unknown ids are refused
            raise MCPError(
                code=INVALID_PARAMS, message=f"Cannot cancel task: it is already {state.legacy()['status']}"
            )
        try:
            state = await self.board.cancel(engine, params.task_id)
        except TaskBusy as exc:
            if not modern:
                raise MCPError(code=INVALID_PARAMS, message=f"Cannot cancel task yet: {exc}") from None
            self.board.cancel_soon(engine, params.task_id)  # cooperative: done once it can be
        return {"resultType": "complete"} if modern else state.legacy()

    async def _result(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        await self._task(ctx, params.task_id)
        state = await self.board.settled(self.engine(ctx), params.task_id)
        if state.error is not None:
            raise MCPError(code=state.error["code"], message=state.error["message"])
        result = state.result_wire() or {"content": [], "isError": True}
        meta = dict(result.get("_meta") or {})
        meta[RELATED_TASK] = {"taskId": state.task_id}
        return {**result, "_meta": meta}

    async def _list(self, ctx: ServerRequestContext[Any, Any], params: ListTasksParams) -> dict[str, Any]:
        # Every job is a task (its id resolves with tasks/get), so the list is the journal's, as
        # jobs_list shows it: newest first, a page at a time.
        offset = parse_cursor(params.cursor)
        engine = self.engine(ctx)
        # Only the caller's own: another principal's tasks are not theirs to know of.
        records = engine.journal.list(limit=offset + LIST_PAGE + 1, principal=current_principal())
        page = records[offset : offset + LIST_PAGE]
        out: dict[str, Any] = {"tasks": [self.board.state_of(engine, r).legacy() for r in page]}
        if len(records) > offset + LIST_PAGE:
            out["nextCursor"] = make_cursor(offset + LIST_PAGE)
        return out

    # -- 2025-11-25: what the SDK's result sieve would refuse -----------------------------------

    async def legacy_middleware(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.request_id is None:
            return await call_next(ctx)
        if ctx.method == "initialize":
            result = await call_next(ctx)
            if isinstance(result, dict) and result.get("protocolVersion") == LEGACY:
                capabilities = dict(result.get("capabilities") or {})
                capabilities["tasks"] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
                result = {**result, "capabilities": capabilities}
            return result
        if ctx.protocol_version != LEGACY:
            return await call_next(ctx)
        if ctx.method == "tools/list":
            return self._mark_task_tools(await call_next(ctx))
        if ctx.method == "tools/call":
            return await self._legacy_call(ctx, call_next)
        return await call_next(ctx)

    def _mark_task_tools(self, result: Any) -> Any:
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return result
        tools = []
        for tool in result["tools"]:
            if isinstance(tool, dict) and tool.get("name") in self.job_tools:
                support = "required" if tool["name"] in self.required else "optional"
                tool = {**tool, "execution": {"taskSupport": support}}
            tools.append(tool)
        return {**result, "tools": tools}

    async def _legacy_call(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
        params = ctx.params or {}
        name = params.get("name")
        if name not in self.job_tools:
            return await call_next(ctx)
        if params.get("task") is None:
            if name in self.required:
                raise MCPError(code=METHOD_NOT_FOUND, message=f"{name} runs only as a task: send params.task")
            return await call_next(ctx)
        wire = await self._within_window(ctx, call_next)
        job_id = running_job(wire, finished_too=True)
        if job_id is None:
            return wire  # refused before any job existed: the answer says why
        engine = self.engine(ctx)
        state = await self.board.get(engine, job_id)
        if not state.terminal:
            if engine.task_group is not None:
                self._legacy.setdefault(job_id, []).append((ctx.session, engine.task_group))
            self.board.follow(engine, job_id)
        out: dict[str, Any] = {"task": state.legacy()}
        said = next((b.get("text") for b in wire.get("content") or [] if isinstance(b, dict)), None)
        if isinstance(said, str) and said:
            out["_meta"] = {IMMEDIATE_RESPONSE: said.split("\n", 1)[0]}
        return out

    def _tell_legacy(self, state: TaskState) -> None:
        sessions = self._legacy.get(state.task_id)
        if not sessions:
            return
        task = state.legacy()
        if self._legacy_status.get(state.task_id) == task["status"]:
            return  # status changes only, as notifications/tasks/status promises
        self._legacy_status[state.task_id] = task["status"]
        if state.terminal:
            self._legacy.pop(state.task_id, None)
            self._legacy_status.pop(state.task_id, None)
        note = _Raw(method="notifications/tasks/status", params=task)
        for session, group in list(sessions):
            try:
                group.start_soon(_send_quietly, session, note)
            except RuntimeError:  # that server run has ended, and its session with it
                sessions.remove((session, group))


async def _send_quietly(session: Any, note: _Raw) -> None:
    try:
        await session.send_notification(note)
    except Exception:  # the client may be gone; polling still works
        logger.debug("could not send %s", note.method, exc_info=True)


def check_routing_header(ctx: ServerRequestContext[Any, Any], task_id: str) -> None:
    """Over HTTP, a tasks/* request names its task in Mcp-Name too (load balancers route on it)."""
    headers = getattr(ctx.request, "headers", None)
    if headers is None:
        return
    named = decode_header_value(headers.get("mcp-name"))
    if named is None or named.strip() != task_id:
        raise MCPError(code=HEADER_MISMATCH, message="Mcp-Name header does not match params.taskId")


def make_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"tasks:{offset}".encode()).decode()


def parse_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        offset = int(number)
    except (binascii.Error, UnicodeError, ValueError):
        raise MCPError(
            code=INVALID_PARAMS, message="Invalid cursor: pass back a nextCursor unchanged"
        ) from None
    if kind != "tasks" or offset < 0:
        raise MCPError(code=INVALID_PARAMS, message="Invalid cursor: pass back a nextCursor unchanged")
    return offset


class TaskListen:
    """``subscriptions/listen`` with SEP-2663's ``taskIds``: each named task's changes arrive as
    ``notifications/tasks`` (a full DetailedTask), beside whatever else the stream asked for."""

    def __init__(self, tasks: TasksExtension, inner: Any, bus: SubscriptionBus) -> None:
        self._tasks = tasks
        self._inner = inner
        self._bus = bus

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams
    ) -> SubscriptionsListenResult:
        from mediamux.tasks.board import TaskNotFound, TaskState

        asked = (params.notifications.model_extra or {}).get("taskIds")
        if asked is None:
            result: SubscriptionsListenResult = await self._inner(ctx, params)
            return result
        require_client_extension(ctx, TASKS)
        if not isinstance(asked, list) or not all(isinstance(t, str) for t in asked):
            raise MCPError(code=INVALID_PARAMS, message="notifications.taskIds must be a list of task ids")
        if ctx.request_id is None:
            raise MCPError(code=INVALID_PARAMS, message="subscriptions/listen requires a request id")
        engine = self._tasks.engine(ctx)
        board = self._tasks.board
        states: dict[str, TaskState] = {}
        for task_id in dict.fromkeys(asked):
            if len(states) >= MAX_LISTED_TASK_IDS:
                break
            try:
                states[task_id] = await board.get(engine, task_id)
            except TaskNotFound:
                continue  # not honored: the acknowledgement lists only what will be sent
        wanted = params.notifications
        standard = SubscriptionFilter(
            tools_list_changed=True if wanted.tools_list_changed else None,
            prompts_list_changed=True if wanted.prompts_list_changed else None,
            resources_list_changed=True if wanted.resources_list_changed else None,
            resource_subscriptions=list(wanted.resource_subscriptions)
            if wanted.resource_subscriptions
            else None,
        )
        uris = frozenset(standard.resource_subscriptions or ())
        honored = SubscriptionFilter.model_validate(
            {**standard.model_dump(by_alias=True, exclude_none=True), "taskIds": list(states)}
        )
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: ctx.request_id}
        send, receive = anyio.create_memory_object_stream[ServerEvent | TaskState](1024)

        def put(item: ServerEvent | TaskState) -> None:
            try:
                send.send_nowait(item)
            except anyio.WouldBlock:
                logger.warning("listen stream %r backlog full; ending it", ctx.request_id)
                send.close()
            except anyio.ClosedResourceError:
                pass

        def on_event(event: ServerEvent) -> None:
            if event_matches(standard, uris, event):
                put(event)

        def on_task(state: TaskState) -> None:
            if state.task_id in states:
                put(state)

        unsubscribe = self._bus.subscribe(on_event)
        unwatch = board.watch(on_task)
        try:
            await ctx.session.send_notification(
                SubscriptionsAcknowledgedNotification(
                    params=SubscriptionsAcknowledgedNotificationParams(notifications=honored, _meta=meta)
                ),
                related_request_id=ctx.request_id,
            )
            for task_id, state in states.items():
                put(state)  # where each task stands now: nothing before the listen is missed
                if not state.terminal:
                    board.follow(engine, task_id)
            async for item in receive:
                if isinstance(item, TaskState):
                    note: Any = _Raw(method="notifications/tasks", params={**item.modern(), "_meta": meta})
                else:
                    note = event_to_notification(item, meta)
                await ctx.session.send_notification(note, related_request_id=ctx.request_id)
        finally:
            unsubscribe()
            unwatch()
            send.close()
            receive.close()
        return SubscriptionsListenResult(_meta=meta)
