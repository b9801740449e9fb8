"""The tasks module on its own: task state from jobs, followers, cancel, the sync window, and shapes.

A real JobEngine on a real SQLite journal, a scripted driver, the FakeClock; no MCP server.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import MCPError
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from mediamux.clock import FakeClock
from mediamux.jobs.engine import SYNC_WINDOW_S, DriverBase, JobEngine, Outcome, ProgressFn
from mediamux.jobs.journal import Journal
from mediamux.jobs.models import JobError, JobResult
from mediamux.tasks.board import TaskBoard, TaskNotFound, TaskState
from mediamux.tasks.extension import make_cursor, parse_cursor, running_job
from mediamux.tools.base import job_result
from tests.support import eventually


class Args(BaseModel):
    seconds: float
    ending: str = "completed"  # completed | failed | crash


class Scripted(DriverBase):
    """A job that runs for ``seconds`` of clock time, then ends as ``ending`` says."""

    provider = "muapi"
    operation = "generate"
    title = "Scripted"
    args_model = Args
    can_cancel = True

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.started: dict[str, float] = {}
        self.polls = 0
        self.cancelled: list[str] = []

    async def submit(self, args: Args, options: dict[str, Any], progress: ProgressFn) -> Outcome:
        job = f"req-{len(self.started)}"
        self.started[job] = self.clock.monotonic()
        return Outcome(status="running", provider_status="working", provider_job_id=job)

    async def poll(self, provider_job_id: str, args: Args, options: dict[str, Any]) -> Outcome:
        self.polls += 1
        if self.clock.monotonic() - self.started[provider_job_id] < args.seconds:
            return Outcome(status="running", provider_status="working")
        if args.ending == "crash":
            raise RuntimeError("a bug in the poller")
        if args.ending == "failed":
            return Outcome(status="failed", error=JobError(error_class="provider_error", message="it broke"))
        return Outcome(status="completed", provider_status="done", result={"text": "done"})

    async def cancel(self, provider_job_id: str, args: Any) -> None:
        self.cancelled.append(provider_job_id)


def render(view: JobResult[Any]) -> CallToolResult:
    return job_result(view, title="scripted")


@pytest.fixture
def scripted(clock: FakeClock) -> Scripted:
    return Scripted(clock)


@pytest.fixture
async def engine(tmp_path: Path, clock: FakeClock, scripted: Scripted) -> AsyncIterator[JobEngine]:
    journal = Journal(tmp_path / "state.db")
    engine = JobEngine(journal, clock=clock)
    engine.register(scripted)
    try:
        async with anyio.create_task_group() as group:
            engine.task_group = group
            yield engine
            group.cancel_scope.cancel()
    finally:
        journal.close()


async def start(engine: JobEngine, seconds: float, ending: str = "completed") -> str:
    view = await engine.run("muapi", "generate", Args(seconds=seconds, ending=ending), wait_s=0, new_job=True)
    return view.job_id


# -- state ------------------------------------------------------------------------------------------


async def test_a_running_job_is_a_working_task_with_the_engines_poll_interval(engine: JobEngine) -> None:
    task_id = await start(engine, 100)
    state = await TaskBoard(render).get(engine, task_id)

    assert state.status == "working" and not state.terminal
    assert state.poll_ms == 1000  # young jobs are polled every second
    modern = state.modern()
    assert modern["taskId"] == task_id and modern["ttlMs"] is None and modern["pollIntervalMs"] == 1000
    assert "result" not in modern and "error" not in modern
    assert modern["statusMessage"] == "muapi generate: working"
    legacy = state.legacy()
    assert legacy["ttl"] is None and legacy["pollInterval"] == 1000 and "ttlMs" not in legacy


async def test_an_unknown_id_is_no_task(engine: JobEngine) -> None:
    with pytest.raises(TaskNotFound):
        await TaskBoard(render).get(engine, "job_nobody")


async def test_a_failed_job_is_completed_in_2026_and_failed_in_2025(
    engine: JobEngine, clock: FakeClock
) -> None:
    task_id = await start(engine, 1, ending="failed")
    await engine.wait(task_id, wait_s=30)
    state = await TaskBoard(render).get(engine, task_id)

    assert state.status == "completed" and state.result is not None and state.result.is_error
    assert state.modern()["result"]["isError"] is True
    assert state.legacy()["status"] == "failed"


# -- following --------------------------------------------------------------------------------------


async def test_a_follower_drives_the_job_to_its_end_and_announces_each_change_once(
    engine: JobEngine, clock: FakeClock, scripted: Scripted
) -> None:
    board = TaskBoard(render)
    seen: list[TaskState] = []
    board.watch(seen.append)
    task_id = await start(engine, 5)

    board.follow(engine, task_id)
    board.follow(engine, task_id)  # once per process
    await eventually(lambda: bool(seen) and seen[-1].terminal, clock=clock)

    done = await board.get(engine, task_id)
    assert (
        done.status == "completed" and done.modern()["result"]["structuredContent"]["status"] == "completed"
    )
    assert seen[-1].status == "completed"
    assert [s.status for s in seen].count("completed") == 1
    assert all(s.status == "working" for s in seen[:-1])
    # Each announcement carries the job's latest progress line, and only a change is announced. Which
    # line comes first depends on how far the job got before the follower's first look (under a loaded
    # CI machine it can already be "saving its outputs"), so the first is not pinned.
    working = [s.message for s in seen[:-1]]
    assert all(working) and all(a != b for a, b in itertools.pairwise(working))
    assert len(scripted.started) == 1


async def test_a_follower_that_crashes_fails_the_task_with_an_internal_error_and_no_result(
    engine: JobEngine, clock: FakeClock
) -> None:
    board = TaskBoard(render)
    task_id = await start(engine, 1, ending="crash")

    board.follow(engine, task_id)
    with anyio.fail_after(10):
        state = await board.settled(engine, task_id)

    assert state.status == "failed" and state.result is None
    assert state.modern()["error"]["code"] == -32603
    assert "RuntimeError" in state.modern()["error"]["message"]  # the class, never the text of the bug
    assert "a bug in the poller" not in str(state.modern())


async def test_cancel_stops_the_follower_and_tells_a_provider_that_can_stop(
    engine: JobEngine, clock: FakeClock, scripted: Scripted
) -> None:
    board = TaskBoard(render)
    task_id = await start(engine, 1000)
    board.follow(engine, task_id)
    await clock.sleep(10)

    state = await board.cancel(engine, task_id)
    polls = scripted.polls
    await clock.sleep(60)

    assert state.status == "cancelled" and "Scripted stopped the job" in (state.message or "")
    assert scripted.cancelled == ["req-0"]
    assert scripted.polls == polls


async def test_settled_waits_for_the_end(engine: JobEngine, clock: FakeClock) -> None:
    board = TaskBoard(render)
    task_id = await start(engine, 20)

    with anyio.fail_after(10):
        state = await board.settled(engine, task_id)

    assert state.status == "completed"


# -- the window, cursors, and reading a tool's answer -----------------------------------------------


async def test_the_sync_window_caps_a_wait_and_unset_leaves_it_alone(
    engine: JobEngine, clock: FakeClock
) -> None:
    token = SYNC_WINDOW_S.set(2.0)
    try:
        capped = await engine.run("muapi", "generate", Args(seconds=30), wait_s=45, new_job=True)
    finally:
        SYNC_WINDOW_S.reset(token)
    whole = await engine.run("muapi", "generate", Args(seconds=30), wait_s=45, new_job=True)

    assert capped.status == "running" and capped.elapsed_s is not None and capped.elapsed_s < 5
    assert whole.status == "completed"


def test_a_cursor_round_trips_and_a_forged_one_is_invalid_params() -> None:
    assert parse_cursor(None) == 0
    assert parse_cursor(make_cursor(50)) == 50
    for forged in ("not-base64!", make_cursor(-1), "dGFza3M6eA==", "b3RoZXI6NQ=="):
        with pytest.raises(MCPError) as refused:
            parse_cursor(forged)
        assert refused.value.error.code == -32602


def test_only_a_job_answer_that_is_still_going_names_a_task() -> None:
    def answer(**data: Any) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text="x")], structured_content=data)

    assert running_job(answer(job_id="job_a", status="running")) == "job_a"
    assert running_job(answer(job_id="job_a", status="saving_outputs")) == "job_a"
    assert running_job(answer(job_id="job_a", status="completed")) is None
    assert running_job(answer(job_id="job_a", status="completed"), finished_too=True) == "job_a"
    assert running_job(answer(balance_usd=3.0)) is None
    assert running_job({"structuredContent": {"job_id": "job_b", "status": "queued"}}) == "job_b"
    assert running_job({"content": []}) is None


def test_job_tools_are_the_ones_that_wait_for_a_job_and_answer_in_the_job_shape() -> None:
    from mediamux.config import toolset_ids
    from mediamux.server.app import toolset

    names = {spec.name for t in toolset_ids() for spec in toolset(t).specs if spec.job}

    assert {
        "muapi_generate",
        "jobs_wait",
        "mixpeek_index_url",
        "muzaic_generate_music",
        "museai_transcribe",
    } <= names
    # Quick reads, and tools that wait on something that is not one job: never tasks.
    assert not names & {
        "jobs_get",
        "jobs_cancel",
        "muapi_get_balance",
        "museai_auto_subtitles",
        "museai_upload_video",
    }
