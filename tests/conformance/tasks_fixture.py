"""The official conformance suite's tasks fixtures, served by mediamux's own tasks module and job engine.

The suite's tasks scenarios call tools of its own (``greet``, ``slow_compute``, ``failing_job``,
``protocol_error_job``, ``test_tool_with_task``, ...). Here each is a real job on a real
``JobEngine`` with a SQLite journal, driven by a small fixture driver, and every task answer comes
from ``mediamux.tasks.TasksExtension``, as in ``mediamux serve``. So the suite checks the module
on the wire, not a copy of it.

    python tests/conformance/tasks_fixture.py --port 8931 [--home DIR]

serves Streamable HTTP at http://127.0.0.1:8931/mcp until interrupted.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from mediamux import registry
from mediamux.clock import SystemClock
from mediamux.jobs.engine import DriverBase, JobEngine, Outcome, ProgressFn
from mediamux.jobs.journal import Journal
from mediamux.jobs.models import JobError
from mediamux.registry.spec import ProviderSettings, ProviderSpec
from mediamux.tasks import TasksExtension
from mediamux.tools.base import Toolset, job_result

PROVIDER = "fixture"
# Shorter than any fixture job that must become a task (the suite's shortest is 1 s).
SYNC_S = 0.3
# How long a fixture job's failure takes to show (failing_job: "after ~1s").
FAIL_AFTER_S = 1.0


class JobArgs(BaseModel):
    seconds: float = Field(ge=0)
    label: str = ""
    due_ts: float  # wall time the job ends: a restarted fixture still knows


class FixtureDriver(DriverBase):
    """A provider whose jobs end at a known time: completed, failed, or crashing the poller."""

    provider = PROVIDER
    title = "Fixture"
    args_model = JobArgs
    can_cancel = True  # the fixture "provider" stops a job when told

    def __init__(self, operation: Literal["compute", "fail", "crash"]) -> None:
        self.operation = operation

    async def submit(self, args: JobArgs, options: dict[str, Any], progress: ProgressFn) -> Outcome:
        return Outcome(status="running", provider_status="working", provider_job_id=secrets.token_hex(8))

    async def poll(self, provider_job_id: str, args: JobArgs, options: dict[str, Any]) -> Outcome:
        if time.time() < args.due_ts:
            return Outcome(status="running", provider_status="working")
        if self.operation == "crash":
            raise RuntimeError("the fixture poller crashed, as protocol_error_job always does")
        if self.operation == "fail":
            error = JobError(
                error_class="provider_error", message="the job failed, as failing_job always does"
            )
            return Outcome(status="failed", provider_status="failed", error=error)
        return Outcome(status="completed", provider_status="done", result={"text": args.label})

    async def cancel(self, provider_job_id: str, args: Any) -> None:
        return None


def register_fixture_provider() -> None:
    """Job results name their provider, checked against the registry: the fixture is one."""
    registry.register(
        ProviderSpec(
            id=PROVIDER,
            title="Fixture",
            key_env="FIXTURE_API_KEY",
            settings=ProviderSettings,
            hosts=(),
            client=lambda transports: None,
            health=_healthy,
            toolset=lambda: Toolset(id=PROVIDER, title="Fixture", description="conformance fixtures"),
        )
    )


async def _healthy(client: Any) -> str:
    return "ok"


@dataclass
class FixtureState:
    engine: JobEngine


def engine_of(ctx: Context) -> JobEngine:
    state: FixtureState = ctx.request_context.lifespan_context
    return state.engine


async def run_job(ctx: Context, operation: str, seconds: float, label: str) -> CallToolResult:
    args = JobArgs(seconds=seconds, label=label, due_ts=time.time() + seconds)
    # As long as the job takes: a call without tasks waits for it; with tasks, SYNC_S caps this.
    view = await engine_of(ctx).run(PROVIDER, operation, args, new_job=True, wait_s=seconds + 30)
    return render(view)


def render(view: Any) -> CallToolResult:
    return job_result(view, title=f"{view.provider} {view.operation}")


class Name(BaseModel):
    name: str = Field(description="Your name")


async def ask_name(ctx: Context) -> Elicit[Name] | Name:
    return Elicit("What is your name?", Name)


def build(home: Path) -> MCPServer[FixtureState]:
    register_fixture_provider()

    @asynccontextmanager
    async def lifespan(server: MCPServer[FixtureState]) -> AsyncIterator[FixtureState]:
        journal = Journal(home / "state.db")
        engine = JobEngine(journal, clock=SystemClock())
        for operation in ("compute", "fail", "crash"):
            engine.register(FixtureDriver(operation))  # type: ignore[arg-type]
        try:
            async with anyio.create_task_group() as group:
                engine.task_group = group
                yield FixtureState(engine)
                group.cancel_scope.cancel()
        finally:
            journal.close()

    tasks = TasksExtension(
        render=render,
        job_tools={"slow_compute", "failing_job", "protocol_error_job", "test_tool_with_task"},
        required={"failing_job"},
        engine_of=lambda state: state.engine,
        sync_s=SYNC_S,
    )
    bus = InMemorySubscriptionBus()
    mcp: MCPServer[FixtureState] = MCPServer(
        "mediamux-tasks-fixture",
        extensions=[tasks],
        lifespan=lifespan,
        subscriptions=bus,
        log_level="WARNING",
    )

    @mcp.tool()
    async def greet(name: str) -> str:
        """Says hello (never a task)."""
        return f"Hello, {name}!"

    @mcp.tool()
    async def slow_compute(
        ctx: Context, seconds: Annotated[float, Field(ge=0, le=3600)] = 1.0, label: str = ""
    ) -> CallToolResult:
        """A job of the given length."""
        return await run_job(ctx, "compute", seconds, label or f"computed in {seconds:g} s")

    @mcp.tool()
    async def failing_job(ctx: Context) -> CallToolResult:
        """A job that fails after about a second (a tool error, not a protocol error)."""
        return await run_job(ctx, "fail", FAIL_AFTER_S, "failing")

    @mcp.tool()
    async def protocol_error_job(ctx: Context) -> CallToolResult:
        """A job whose poller crashes: the server cannot run its task."""
        return await run_job(ctx, "crash", FAIL_AFTER_S, "crashing")

    @mcp.tool()
    async def confirm_delete(filename: str) -> CallToolResult:
        """Answers at once: mediamux jobs never wait on input, so this fixture is never a task."""
        return CallToolResult(content=[TextContent(type="text", text=f"{filename} was not deleted")])

    @mcp.tool()
    async def test_tool_with_task(ctx: Context, who: Annotated[Name, Resolve(ask_name)]) -> CallToolResult:
        """Asks a name (multi-round), then greets in a job long enough to be a task."""
        return await run_job(ctx, "compute", 1.5, f"Hello, {who.name}!")

    tasks.install(mcp, bus)
    return mcp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--home", type=Path, default=None, help="journal folder (default: a temporary one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mediamux-tasks-fixture-") as scratch:
        home = args.home or Path(scratch)
        home.mkdir(parents=True, exist_ok=True)
        build(home).run("streamable-http", host="127.0.0.1", port=args.port, streamable_http_path="/mcp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
