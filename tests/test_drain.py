"""Rolling restarts, in process: what the job engine does when it is told to drain (SIGTERM in a real
server; see tests/test_rolling_restart.py for the process itself).

A drain refuses new paid work before anything is sent, sends waiting calls back with their job ids,
lets submissions, renders and output saves in flight finish within its bound, and stops and marks
what cannot — a request that may have reached the provider is recorded as uncertain, never lost.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mediamux.clock import FakeClock
from mediamux.jobs.engine import JobEngine
from mediamux.jobs.journal import Journal
from mediamux.sandbox import Sandbox
from mediamux.server.app import MediamuxServer
from tests.support import eventually
from tests.test_muapi_tools import call, text

pytestmark = pytest.mark.providers("muapi", "muzaic")

IMAGE = {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron"}}
# Never finishes in the emulator: a job that is running for as long as a test needs.
STUCK = {"endpoint": "flux-schnell-image", "params": {"prompt": "[stuck]"}}
SHORT_DRAIN_S = 0.3  # real seconds: the drain's bound is the orchestrator's, in real time


def engine_of(server: MediamuxServer) -> JobEngine:
    assert server.services is not None
    return server.services.engine


def journal_of(server: MediamuxServer) -> Journal:
    assert server.services is not None
    return server.services.journal


async def test_a_drain_refuses_new_paid_work_before_anything_is_sent_and_still_returns_earlier_jobs(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    server = make_server()
    async with Client(server) as client:
        earlier = await call(client, "muapi_generate", {**IMAGE, "wait_s": 0})
        engine_of(server).begin_drain()
        refused = await call(client, "muapi_generate", {**IMAGE, "params": {"prompt": "a new heron"}})
        again = await call(client, "muapi_generate", {**IMAGE, "wait_s": 0})

    assert refused.is_error
    assert refused.meta["mediamux/error"]["class"] == "rate_limited"
    assert refused.meta["mediamux/error"]["retry_after_s"] == 1.0
    assert "nothing was sent to MuAPI" in text(refused) and "restarting" in text(refused)
    assert not again.is_error, text(again)
    assert again.structured_content["job_id"] == earlier.structured_content["job_id"]
    assert again.structured_content["deduplicated"] is True
    assert sandbox.muapi.submissions == 1


async def test_waiting_calls_return_their_job_ids_at_once_when_a_drain_begins(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, clock: FakeClock
) -> None:
    server = make_server()
    results: list[Any] = []
    async with Client(server) as client:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def wait_long(prompt: str) -> None:
                    args = {**STUCK, "params": {"prompt": f"[stuck] {prompt}"}, "wait_s": 600}
                    results.append(await client.call_tool("muapi_generate", args))

                tg.start_soon(wait_long, "one")
                tg.start_soon(wait_long, "two")
                await eventually(lambda: len(sandbox.muapi.polls) == 2, clock=clock)
                engine_of(server).begin_drain()
        resumed = await call(client, "jobs_wait", {"job_id": results[0].structured_content["job_id"]})

    assert len(results) == 2
    for result in results:
        data = result.structured_content
        assert not result.is_error, text(result)
        assert data["status"] in ("queued", "running")
        assert data["note"].startswith("this server is restarting, so it stopped waiting here")
        assert f"jobs_wait with job_id {data['job_id']}" in data["note"]
    # jobs_wait on a draining server answers at once too (another replica, or the restart, goes on).
    assert resumed.structured_content["status"] in ("queued", "running")
    assert "restarting" in resumed.structured_content["note"]
    assert sandbox.muapi.submissions == 2


async def test_a_drain_lets_a_render_in_flight_finish_and_records_it(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    sandbox.muzaic.generation_seconds_per_audio_second = 1.0
    sandbox.muzaic.hold.reset()  # the render waits until released
    server = make_server()
    async with Client(server) as client:
        started = await call(client, "muzaic_generate_music", {"duration": 30, "wait_s": 0})
        job_id = started.structured_content["job_id"]
        await eventually(lambda: sandbox.muzaic.parked == 1)
        stopped: list[list[str]] = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def drain() -> None:
                    stopped.append(await engine_of(server).drain(30))

                tg.start_soon(drain)
                await eventually(lambda: engine_of(server).draining)
                assert engine_of(server).in_flight == [f"Muzaic generate_music {job_id}"]
                sandbox.muzaic.hold.set()
        finished = await call(client, "jobs_wait", {"job_id": job_id})

    assert stopped == [[]]  # everything finished within the drain
    data = finished.structured_content
    assert data["status"] == "completed", data
    assert data["result"]["saved"][0]["size_bytes"] > 0
    assert sandbox.muzaic.generations == 1


async def test_a_render_still_running_when_the_drain_ends_is_stopped_and_marked_uncertain(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    sandbox.muzaic.generation_seconds_per_audio_second = 1.0
    sandbox.muzaic.hold.reset()
    server = make_server()
    try:
        async with Client(server) as client:
            started = await call(client, "muzaic_generate_music", {"duration": 30, "wait_s": 0})
            job_id = started.structured_content["job_id"]
            await eventually(lambda: sandbox.muzaic.parked == 1)
            with anyio.fail_after(20):
                stopped = await engine_of(server).drain(SHORT_DRAIN_S)
            record = journal_of(server).get(job_id)
            retried = await call(client, "muzaic_generate_music", {"duration": 30, "wait_s": 0})
    finally:
        sandbox.muzaic.hold.set()

    assert stopped == [f"Muzaic generate_music {job_id}"]
    assert record is not None
    assert (record.status, record.submit_state) == ("cancelled", "uncertain")
    assert record.error is not None and "may have charged" in record.error.message
    # An identical call returns the uncertain record instead of paying again; the render ran at most once.
    assert retried.structured_content["job_id"] == job_id
    assert sandbox.muzaic.generations <= 1


async def test_a_submission_on_the_wire_when_the_drain_ends_is_stopped_and_marked_uncertain(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    sandbox.muapi.faults.add(method="POST", path=r"/api/v1/flux-schnell-image$", kind="hang")
    server = make_server()
    answers: list[Any] = []
    try:
        async with Client(server) as client:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:

                    async def submit() -> None:
                        answers.append(await client.call_tool("muapi_generate", {**IMAGE, "wait_s": 60}))

                    tg.start_soon(submit)
                    await eventually(lambda: sandbox.muapi.faults.parked == 1)
                    stopped = await engine_of(server).drain(SHORT_DRAIN_S)
            (marked,) = journal_of(server).list()
            retried = await call(client, "muapi_generate", {**IMAGE, "wait_s": 0})
    finally:
        sandbox.muapi.faults.release.set()

    assert stopped == [f"MuAPI generate {marked.job_id}"]
    assert (marked.status, marked.submit_state) == ("cancelled", "uncertain")
    assert marked.error is not None and "MEDIAMUX_DRAIN_S ran out" in marked.error.message
    # The caller hears that it may have been charged, and the identical call returns the record.
    assert answers[0].is_error and answers[0].meta["mediamux/error"]["class"] == "provider_error"
    assert "may have reached MuAPI" in text(answers[0])
    assert retried.structured_content["job_id"] == marked.job_id
    assert sandbox.muapi.submissions == 0  # it was stopped before the emulator handled it


async def test_files_still_uploading_when_the_drain_ends_are_withdrawn_and_nothing_is_submitted(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, files_dir: Path
) -> None:
    (files_dir / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"cat" * 100)
    sandbox.muapi.faults.add(method="POST", path=r"/api/v1/upload_file$", kind="hang")
    server = make_server()
    answers: list[Any] = []
    args = {"endpoint": "ai-image-upscale", "params": {"image_url": "cat.png"}, "wait_s": 60}
    try:
        async with Client(server) as client:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:

                    async def submit() -> None:
                        answers.append(await client.call_tool("muapi_generate", args))

                    tg.start_soon(submit)
                    await eventually(lambda: sandbox.muapi.faults.parked == 1)
                    stopped = await engine_of(server).drain(SHORT_DRAIN_S)
            (record,) = journal_of(server).list()
    finally:
        sandbox.muapi.faults.release.set()

    assert stopped == [f"MuAPI generate {record.job_id}"]
    assert (record.status, record.submit_state) == ("cancelled", "rejected")  # free: nothing left
    assert answers[0].is_error and "nothing was sent to MuAPI" in text(answers[0])
    assert answers[0].meta["mediamux/error"]["class"] == "rate_limited"
    assert sandbox.muapi.submissions == 0


@pytest.mark.unit
async def test_drain_hooks_run_once_when_a_drain_begins_and_at_once_for_late_registrations(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        engine = JobEngine(journal, clock=FakeClock())
        calls: list[str] = []
        engine.on_drain(lambda: calls.append("lease keeper"))
        assert not engine.draining
        engine.begin_drain()
        engine.begin_drain()
        engine.on_drain(lambda: calls.append("late"))
        with anyio.fail_after(5):
            stopped = await engine.drain(1.0)
    finally:
        journal.close()

    assert engine.draining
    assert calls == ["lease keeper", "late"]
    assert stopped == []
