"""Tasks as a view of jobs: one task per job, the job's id its task id.

The state of a task is the state of its job, read from the journal: it survives a restart and
reads the same on every replica sharing the journal. What lives in memory, per process, is only
what keeps a task moving and talking: a follower per task that drives its job (polls it, saves
its outputs) and announces each change, the job's latest progress line (the task's status
message), and the rare internal failure that stopped a follower.

Nothing here knows a provider; the tool result a finished task carries is made by ``render``,
which the server supplies.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import anyio
from mcp_types import INTERNAL_ERROR, CallToolResult

from mediamux.errors import MediamuxError
from mediamux.jobs.engine import FIRST_POLL_S, SYNC_WINDOW_S, JobEngine, JobNotFound, JobsError, iso
from mediamux.jobs.models import TERMINAL_STATUSES, JobRecord, JobResult

logger = logging.getLogger("mediamux.tasks")

TaskStatus = Literal["working", "completed", "failed", "cancelled"]
Render = Callable[[JobResult[Any]], CallToolResult]

WORKING = frozenset({"queued", "running", "saving_outputs"})
# A follower waits in turns of this long, then looks again; it gives up after FOLLOW_S (a later
# tasks/get starts a new one).
FOLLOW_TURN_S = 600.0
FOLLOW_S = 6 * 3600.0
# How often a blocked tasks/result looks at the journal, in case another process finished the job.
SETTLE_RECHECK_S = 5.0
# How long a cancel that arrived mid-submission keeps trying.
CANCEL_RETRY_S = 60.0
# How many tasks' last announcements are remembered (to announce each change once).
REMEMBERED = 10_000


class TaskNotFound(LookupError):
    pass


class TaskBusy(RuntimeError):
    """The job cannot be cancelled this instant (its submission has not answered yet)."""


@dataclass(frozen=True)
class TaskState:
    task_id: str
    status: TaskStatus
    message: str | None
    created_at: str
    updated_at: str
    poll_ms: int
    result: CallToolResult | None = None
    error: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return self.status != "working"

    def result_wire(self) -> dict[str, Any] | None:
        if self.result is None:
            return None
        return self.result.model_dump(by_alias=True, mode="json", exclude_none=True)

    def modern(self, *, detailed: bool = True) -> dict[str, Any]:
        """The 2026-07-28 Task; ``detailed`` adds a finished task's result or error (DetailedTask)."""
        task: dict[str, Any] = {
            "taskId": self.task_id,
            "status": self.status,
            "createdAt": self.created_at,
            "lastUpdatedAt": self.updated_at,
            "ttlMs": None,  # the journal keeps every job
            "pollIntervalMs": self.poll_ms,
        }
        if self.message:
            task["statusMessage"] = self.message
        if detailed and self.status == "completed":
            task["result"] = self.result_wire()
        if detailed and self.status == "failed":
            task["error"] = self.error
        return task

    def legacy(self) -> dict[str, Any]:
        """The 2025-11-25 Task, where a tool result with isError makes the task failed."""
        status = self.status
        if status == "completed" and self.result is not None and self.result.is_error:
            status = "failed"
        task: dict[str, Any] = {
            "taskId": self.task_id,
            "status": status,
            "createdAt": self.created_at,
            "lastUpdatedAt": self.updated_at,
            "ttl": None,
            "pollInterval": self.poll_ms,
        }
        if self.message:
            task["statusMessage"] = self.message
        return task


def internal_error(message: str) -> dict[str, Any]:
    return {"code": INTERNAL_ERROR, "message": message}


def summary_of(result: CallToolResult) -> str | None:
    for block in result.content:
        text = getattr(block, "text", None)
        if isinstance(text, str) and text:
            return text.split("\n", 1)[0]
    return None


class TaskBoard:
    def __init__(self, render: Render, *, follow_s: float = FOLLOW_S) -> None:
        self._render = render
        self._follow_s = follow_s
        self._followers: dict[str, anyio.CancelScope] = {}
        self._faults: dict[str, dict[str, Any]] = {}
        self._messages: dict[str, str] = {}
        self._cancel_notes: dict[str, str] = {}  # what the engine said when it cancelled a job
        self._published: dict[str, tuple[str, str | None]] = {}
        self._changed: dict[str, anyio.Event] = {}
        self._watchers: dict[object, Callable[[TaskState], None]] = {}

    # -- reading -----------------------------------------------------------------------------

    async def get(self, engine: JobEngine, task_id: str) -> TaskState:
        """The task as the journal has it now; TaskNotFound for an id no job has."""
        try:
            record = await engine.get_record(task_id)
        except JobNotFound:
            raise TaskNotFound(task_id) from None
        return self.state_of(engine, record)

    def state_of(self, engine: JobEngine, record: JobRecord) -> TaskState:
        view = engine.view(record)
        base = TaskState(
            task_id=record.job_id,
            status="working",
            message=None,
            created_at=view.submitted_at,
            updated_at=iso(record.updated_ts) or view.submitted_at,
            poll_ms=round(engine.poll_interval_s(record) * 1000),
        )
        fault = self._faults.get(record.job_id)
        if fault is not None:
            return replace(base, status="failed", message=fault["message"], error=fault)
        if view.status == "saving_outputs":
            return replace(base, message=_working_line(record, view))  # the last poll said "completed"
        if view.status in WORKING:
            return replace(base, message=self._messages.get(record.job_id) or _working_line(record, view))
        try:
            result = self._render(view)
        except Exception:
            logger.exception("could not shape the result of job %s", record.job_id)
            error = internal_error("the finished job's result could not be shaped; jobs_get reads it")
            return replace(base, status="failed", message=error["message"], error=error)
        if view.status == "cancelled":
            note = self._cancel_notes.get(record.job_id)
            return replace(base, status="cancelled", message=note or summary_of(result), result=result)
        return replace(base, status="completed", message=summary_of(result), result=result)

    # -- following ---------------------------------------------------------------------------

    def follow(self, engine: JobEngine, task_id: str) -> None:
        """Drive the task's job in the server's task group until it ends (once per process)."""
        group = engine.task_group
        if group is None or task_id in self._followers or task_id in self._faults:
            return
        scope = self._followers[task_id] = anyio.CancelScope()
        group.start_soon(self._follow, engine, task_id, scope)

    async def _follow(self, engine: JobEngine, task_id: str, scope: anyio.CancelScope) -> None:
        # Spawned from inside a tool call: this job is waited on to its end, not for the call's window.
        SYNC_WINDOW_S.set(None)
        clock = engine.clock
        report = functools.partial(self._progress, engine, task_id)
        try:
            with scope:
                end = clock.monotonic() + self._follow_s
                while (left := end - clock.monotonic()) > 0:
                    began = clock.monotonic()
                    view = await engine.wait(task_id, wait_s=min(FOLLOW_TURN_S, left), progress=report)
                    if view.status in TERMINAL_STATUSES:
                        break
                    await self._announce(engine, task_id)
                    if clock.monotonic() - began < FIRST_POLL_S:
                        await clock.sleep(FIRST_POLL_S)  # the engine had nothing to wait for yet
        except MediamuxError as exc:
            # Said in our own words (a provider this server has not enabled, say), for the user.
            logger.warning("cannot follow job %s: %s", task_id, exc.message)
            self._faults[task_id] = internal_error(exc.message)
        except Exception as exc:
            # The job itself is safe in the journal; this process can no longer run its task.
            logger.exception("following job %s failed", task_id)
            self._faults[task_id] = internal_error(
                f"mediamux could not follow this job ({type(exc).__name__})"
            )
        finally:
            self._followers.pop(task_id, None)
        await self._announce(engine, task_id)

    async def _progress(
        self, engine: JobEngine, task_id: str, progress: float, total: float | None, message: str
    ) -> None:
        if message:
            self._messages[task_id] = message
        await self._announce(engine, task_id)

    # -- cancelling --------------------------------------------------------------------------

    async def cancel(self, engine: JobEngine, task_id: str) -> TaskState:
        """Stop following and cancel the job (upstream where its provider can stop it)."""
        state = await self.get(engine, task_id)
        if state.terminal:
            return state
        scope = self._followers.get(task_id)
        if scope is not None:
            scope.cancel()
        try:
            view = await engine.cancel(task_id)
        except JobsError as exc:
            raise TaskBusy(exc.message) from None
        if view.note:
            self._cancel_notes[task_id] = view.note
            if len(self._cancel_notes) > REMEMBERED:
                del self._cancel_notes[next(iter(self._cancel_notes))]
        await self._announce(engine, task_id)
        return await self.get(engine, task_id)

    def cancel_soon(self, engine: JobEngine, task_id: str) -> None:
        """Cancel once the job's submission has answered (a cancel cannot land before)."""
        if engine.task_group is not None:
            engine.task_group.start_soon(self._cancel_later, engine, task_id)

    async def _cancel_later(self, engine: JobEngine, task_id: str) -> None:
        end = engine.clock.monotonic() + CANCEL_RETRY_S
        while engine.clock.monotonic() < end:
            await engine.clock.sleep(FIRST_POLL_S)
            try:
                await self.cancel(engine, task_id)
                return
            except TaskBusy:
                continue
            except Exception:
                logger.warning("cancelling job %s failed", task_id, exc_info=True)
                return

    # -- waiting and announcing --------------------------------------------------------------

    async def settled(self, engine: JobEngine, task_id: str) -> TaskState:
        """The task once it has ended (following it meanwhile)."""
        while True:
            state = await self.get(engine, task_id)
            if state.terminal:
                return state
            self.follow(engine, task_id)
            changed = self._changed.setdefault(task_id, anyio.Event())
            await engine.clock.wait_for(changed, within_s=SETTLE_RECHECK_S)

    def watch(self, watcher: Callable[[TaskState], None]) -> Callable[[], None]:
        """Call ``watcher`` (synchronous, quick) with every announced change; returns unwatch."""
        token = object()
        self._watchers[token] = watcher

        def unwatch() -> None:
            self._watchers.pop(token, None)

        return unwatch

    async def _announce(self, engine: JobEngine, task_id: str) -> None:
        try:
            state = await self.get(engine, task_id)
        except TaskNotFound:
            return
        key = (state.status, state.message)
        if self._published.get(task_id) == key:
            return
        self._published.pop(task_id, None)
        self._published[task_id] = key
        if len(self._published) > REMEMBERED:
            del self._published[next(iter(self._published))]
        if state.terminal:
            self._messages.pop(task_id, None)
        changed = self._changed.pop(task_id, None)
        if changed is not None:
            changed.set()
        for watcher in list(self._watchers.values()):
            try:
                watcher(state)
            except Exception:  # one bad watcher must not stop the job or the others
                logger.exception("a task watcher failed")


def _working_line(record: JobRecord, view: JobResult[Any]) -> str:
    what = f"{record.provider} {record.operation}"
    if record.submit_state == "pending":
        return f"{what}: submitting"
    if view.status == "saving_outputs":
        return f"{what}: finished; saving its outputs"
    return f"{what}: {view.provider_status or view.status}"
