"""MCP tasks on the job tools, in process, against the sandbox emulators, in both task generations.

2026-07-28 (the io.modelcontextprotocol/tasks extension) through the SDK Client with the extension
declared; 2025-11-25 (params.task) through a raw JSON-RPC client, because the SDK client refuses a
CreateTaskResult as a tools/call answer. Time is the FakeClock: a 10 s video job takes milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp_types import RequestParams

from mediamux.clock import FakeClock
from mediamux.sandbox import Sandbox
from mediamux.server.app import MediamuxServer
from tests.tasks_support import (
    ANY,
    Created,
    DeclareTasks,
    RawLegacy,
    RawRpcError,
    TaskIdParams,
    TasksList,
    TasksResult,
    legacy_in_memory,
    start_task,
    tasks_cancel,
    tasks_get,
)
from tests.test_muapi_tools import call, text

pytestmark = pytest.mark.providers("muapi")

VIDEO = {"endpoint": "kling-v2.1-master-t2v", "params": {"prompt": "rain on a window", "duration": 5}}
IMAGE = {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron"}}
STUCK = {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron [stuck]"}}
FAILING = {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron [fail]"}}
ISO = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"


async def settle(client: Client, task_id: str, clock: FakeClock) -> dict[str, Any]:
    """tasks/get until the task ends, a tick of fake time between looks (bounded in real time)."""
    seen: dict[str, Any] = {}

    async def look() -> None:
        seen.update(await tasks_get(client, task_id))

    await look()
    with anyio.fail_after(30):
        while seen["status"] == "working":
            await clock.sleep(1.0)
            await look()
    return seen


async def legacy_settle(client: RawLegacy, task_id: str, clock: FakeClock) -> dict[str, Any]:
    task: dict[str, Any] = await client.request("tasks/get", {"taskId": task_id})
    with anyio.fail_after(30):
        while task["status"] == "working":
            await clock.sleep(1.0)
            task = await client.request("tasks/get", {"taskId": task_id})
    return task


@pytest.fixture
def tasks_client(make_server: Callable[..., MediamuxServer]) -> Callable[..., Client]:
    def make(**env: Any) -> Client:
        return Client(make_server(**env), extensions=[DeclareTasks()])

    return make


# -- 2026-07-28 -------------------------------------------------------------------------------------


async def test_a_declared_job_call_that_outlives_the_sync_window_answers_a_task_named_by_its_job(
    tasks_client: Callable[..., Client], sandbox: Sandbox
) -> None:
    async with tasks_client() as client:
        assert (client.server_capabilities.extensions or {}).get("io.modelcontextprotocol/tasks") == {}
        created = await start_task(client, "muapi_generate", VIDEO)
        got = await tasks_get(client, created.task_id)
        listed = await call(client, "jobs_list", {})

    assert isinstance(created, Created)
    wire = created.model_dump(by_alias=True, mode="json")
    assert wire["resultType"] == "task" and wire["status"] == "working"
    assert {"createdAt", "lastUpdatedAt", "ttlMs", "pollIntervalMs", "statusMessage"} <= set(wire)
    assert (
        wire["ttlMs"] is None and isinstance(wire["pollIntervalMs"], int) and wire["pollIntervalMs"] >= 1000
    )
    assert "task" not in wire and "result" not in wire and "content" not in wire
    assert re.match(ISO, wire["createdAt"]) and re.match(ISO, wire["lastUpdatedAt"])
    # The task id is the journal's job id: jobs_list and jobs_wait know it too.
    assert [j["job_id"] for j in listed.structured_content["jobs"]] == [created.task_id]
    assert got["taskId"] == created.task_id and got["status"] == "working" and got["resultType"] == "complete"
    assert "result" not in got and "error" not in got
    assert sandbox.muapi.submissions == 1


async def test_a_task_completes_with_the_result_jobs_wait_returns_inline(
    tasks_client: Callable[..., Client], clock: FakeClock, sandbox: Sandbox
) -> None:
    async with tasks_client() as client:
        created = await start_task(client, "muapi_generate", VIDEO)
        done = await settle(client, created.task_id, clock)
        waited = await call(client, "jobs_wait", {"job_id": created.task_id, "wait_s": 0})

    assert done["status"] == "completed", done
    result = done["result"]
    assert result.get("isError") is not True
    assert result["structuredContent"] == waited.structured_content | {
        "session_spent_usd": result["structuredContent"]["session_spent_usd"]
    }
    assert result["structuredContent"]["result"]["saved"][0]["path"].endswith(".mp4")
    assert result["_meta"]["mediamux/cost"]["usd"] == pytest.approx(1.4)
    assert done["statusMessage"].startswith("muapi generate: completed")
    assert sandbox.muapi.submissions == 1  # polled by the task, never submitted again


async def test_a_job_that_fails_upstream_is_a_completed_task_whose_result_is_the_tool_error(
    tasks_client: Callable[..., Client], clock: FakeClock
) -> None:
    async with tasks_client() as client:
        created = await start_task(client, "muapi_generate", FAILING)
        done = await settle(client, created.task_id, clock)

    # SEP-2663: "failed" is for protocol errors; a tool that reported an error completed.
    assert done["status"] == "completed"
    assert done["result"]["isError"] is True
    assert done["result"]["structuredContent"]["status"] == "failed"
    assert done["result"]["_meta"]["mediamux/error"]["class"]
    assert "error" not in done


async def test_a_job_that_ends_within_the_sync_window_is_answered_as_a_plain_result(
    tasks_client: Callable[..., Client],
) -> None:
    async with tasks_client(MEDIAMUX_TASK_SYNC_S="30") as client:
        result = await start_task(client, "muapi_generate", IMAGE)

    assert not isinstance(result, Created)
    assert result.structured_content["status"] == "completed", text(result)


async def test_without_the_extension_declared_a_job_call_behaves_exactly_as_before(
    make_server: Callable[..., MediamuxServer],
) -> None:
    async with Client(make_server()) as client:
        result = await call(client, "muapi_generate", {**VIDEO, "wait_s": 5})

    assert not result.is_error
    assert result.structured_content["status"] in ("queued", "running")
    assert result.structured_content["job_id"].startswith("job_")
    assert "jobs_wait" in result.structured_content["note"]
    assert result.structured_content["elapsed_s"] >= 5  # the whole wait budget, not the sync window


async def test_tools_that_run_no_job_answer_normally_under_a_declaring_request(
    tasks_client: Callable[..., Client],
) -> None:
    async with tasks_client() as client:
        balance = await start_task(client, "muapi_get_balance", {})
        bad = await start_task(client, "muapi_generate", {"endpoint": "no-such-model", "params": {}})

    assert not isinstance(balance, Created) and balance.structured_content["balance_usd"] > 0
    assert not isinstance(bad, Created) and bad.is_error  # refused before any job: no task


async def test_jobs_wait_on_a_running_job_becomes_a_task_with_that_job_id(
    tasks_client: Callable[..., Client], make_server: Callable[..., MediamuxServer]
) -> None:
    async with Client(make_server()) as plain:
        started = await call(plain, "muapi_generate", {**VIDEO, "wait_s": 0})
    job_id = started.structured_content["job_id"]
    async with tasks_client() as client:
        resumed = await start_task(client, "jobs_wait", {"job_id": job_id, "wait_s": 120})

    assert isinstance(resumed, Created) and resumed.task_id == job_id


async def test_cancelling_a_task_acknowledges_empty_stops_polling_and_reads_cancelled(
    tasks_client: Callable[..., Client], clock: FakeClock, sandbox: Sandbox
) -> None:
    async with tasks_client() as client:
        created = await start_task(client, "muapi_generate", STUCK)
        ack = await tasks_cancel(client, created.task_id)
        polls = dict(sandbox.muapi.polls)
        after = await tasks_get(client, created.task_id)
        await clock.sleep(60)
        later = await tasks_get(client, created.task_id)
        again = await tasks_cancel(client, created.task_id)  # idempotent on a finished task

    assert set(ack) <= {"resultType", "_meta"} and ack["resultType"] == "complete"
    assert after["status"] == later["status"] == "cancelled"
    assert "result" not in after
    assert "no way to stop a job" in after["statusMessage"]
    assert sandbox.muapi.polls == polls  # nothing polls a cancelled task
    assert again["resultType"] == "complete"


@pytest.mark.providers("mixpeek")
async def test_cancelling_a_mixpeek_task_stops_the_indexing_upstream(
    tasks_client: Callable[..., Client], sandbox: Sandbox
) -> None:
    args = {"url": "https://media.example.com/videos/city_night_walk.mp4", "collection_id": "clips"}
    async with tasks_client(MEDIAMUX_TASK_SYNC_S="0") as client:
        created = await start_task(client, "mixpeek_index_url", args)
        await tasks_cancel(client, created.task_id)
        after = await tasks_get(client, created.task_id)
        job = (await call(client, "jobs_get", {"job_id": created.task_id})).structured_content

    assert isinstance(created, Created)
    assert after["status"] == "cancelled" and "Mixpeek stopped the job" in after["statusMessage"]
    assert sandbox.mixpeek.task_status(job["provider_job_id"]) == "CANCELED"


async def test_task_methods_follow_the_2026_rules(
    tasks_client: Callable[..., Client], make_server: Callable[..., MediamuxServer]
) -> None:
    async with tasks_client() as client:
        created = await start_task(client, "muapi_generate", VIDEO)
        with pytest.raises(MCPError) as unknown:
            await tasks_get(client, "job_nobody-has-this-one")
        removed = []
        for request in (
            TasksResult(params=TaskIdParams(task_id=created.task_id)),
            TasksList(params=RequestParams()),
        ):
            with pytest.raises(MCPError) as gone:
                await client.session.send_request(request, ANY)
            removed.append(gone.value.error.code)
    async with Client(make_server()) as undeclared:
        with pytest.raises(MCPError) as refused:
            await tasks_get(undeclared, created.task_id)

    assert unknown.value.error.code == -32602
    assert removed == [-32601, -32601]
    assert refused.value.error.code == -32021
    assert refused.value.error.data == {
        "requiredCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}}
    }


# -- restarts and replicas ---------------------------------------------------------------------------


async def test_a_task_survives_a_server_restart_and_completes_on_the_new_server(
    make_server: Callable[..., MediamuxServer], clock: FakeClock, sandbox: Sandbox
) -> None:
    async with Client(make_server(), extensions=[DeclareTasks()]) as first:
        created = await start_task(first, "muapi_generate", VIDEO)
    # The first server is gone (its follower with it); a new one opens the same journal.
    async with Client(make_server(), extensions=[DeclareTasks()]) as second:
        found = await tasks_get(second, created.task_id)
        done = await settle(second, created.task_id, clock)

    assert found["status"] == "working"
    assert done["status"] == "completed" and done["result"]["structuredContent"]["job_id"] == created.task_id
    assert sandbox.muapi.submissions == 1


async def test_a_second_server_on_the_same_journal_answers_for_a_task_the_first_created(
    make_server: Callable[..., MediamuxServer], clock: FakeClock, sandbox: Sandbox
) -> None:
    async with (
        Client(make_server(), extensions=[DeclareTasks()]) as one,
        Client(make_server(), extensions=[DeclareTasks()]) as two,
    ):
        created = await start_task(one, "muapi_generate", VIDEO)
        seen = await tasks_get(two, created.task_id)
        done = await settle(two, created.task_id, clock)
        also = await tasks_get(one, created.task_id)

    assert seen["taskId"] == created.task_id and seen["status"] == "working"
    assert done["status"] == also["status"] == "completed"
    assert sandbox.muapi.submissions == 1


# -- 2025-11-25 -------------------------------------------------------------------------------------


async def test_legacy_initialize_and_tools_list_advertise_tasks_for_job_tools_only(
    make_server: Callable[..., MediamuxServer],
) -> None:
    async with legacy_in_memory(make_server()) as client:
        listed = await client.request("tools/list", {})
        init = client.init_result

    assert init["capabilities"]["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
    support = {t["name"]: (t.get("execution") or {}).get("taskSupport") for t in listed["tools"]}
    assert support["muapi_generate"] == support["jobs_wait"] == "optional"
    assert support["muapi_get_balance"] is None and support["jobs_get"] is None


async def test_legacy_task_lifecycle_create_poll_result_list(
    make_server: Callable[..., MediamuxServer], clock: FakeClock, sandbox: Sandbox
) -> None:
    async with legacy_in_memory(make_server()) as client:
        created = await client.request(
            "tools/call", {"name": "muapi_generate", "arguments": VIDEO, "task": {"ttl": 60000}}
        )
        task_id = created["task"]["taskId"]
        first = await client.request("tasks/get", {"taskId": task_id})
        result = await client.request("tasks/result", {"taskId": task_id})  # blocks until it ends
        after = await client.request("tasks/get", {"taskId": task_id})
        listed = await client.request("tasks/list", {})

    task = created["task"]
    assert task["status"] == "working" and task["ttl"] is None and task["pollInterval"] >= 1000
    assert set(task) >= {"taskId", "status", "createdAt", "lastUpdatedAt", "ttl", "pollInterval"}
    assert "model-immediate-response" in next(iter(created["_meta"]))
    assert first["status"] == "working" and "resultType" not in first
    assert result["structuredContent"]["status"] == "completed" and result.get("isError") is not True
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
    assert after["status"] == "completed"
    assert [t["taskId"] for t in listed["tasks"]] == [task_id]
    assert sandbox.muapi.submissions == 1


async def test_legacy_tasks_list_pages_with_an_opaque_cursor(
    make_server: Callable[..., MediamuxServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mediamux.tasks.extension.LIST_PAGE", 1)
    async with legacy_in_memory(make_server()) as client:
        for prompt in ("one [stuck]", "two [stuck]"):
            arguments = {"endpoint": "flux-schnell-image", "params": {"prompt": prompt}}
            await client.request("tools/call", {"name": "muapi_generate", "arguments": arguments, "task": {}})
        first = await client.request("tasks/list", {})
        second = await client.request("tasks/list", {"cursor": first["nextCursor"]})
        with pytest.raises(RawRpcError) as forged:
            await client.request("tasks/list", {"cursor": "not-one-of-ours"})

    assert len(first["tasks"]) == len(second["tasks"]) == 1
    assert first["tasks"][0]["taskId"] != second["tasks"][0]["taskId"]
    assert "nextCursor" not in second
    assert forged.value.code == -32602


async def test_legacy_failed_job_is_a_failed_task_whose_result_is_the_tool_error(
    make_server: Callable[..., MediamuxServer], clock: FakeClock
) -> None:
    async with legacy_in_memory(make_server()) as client:
        created = await client.request(
            "tools/call", {"name": "muapi_generate", "arguments": FAILING, "task": {}}
        )
        task = await legacy_settle(client, created["task"]["taskId"], clock)
        result = await client.request("tasks/result", {"taskId": task["taskId"]})

    assert task["status"] == "failed"  # 2025-11-25: a tool result with isError fails the task
    assert result["isError"] is True and result["structuredContent"]["status"] == "failed"


async def test_legacy_cancel_answers_the_cancelled_task_and_refuses_a_second_cancel(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    async with legacy_in_memory(make_server()) as client:
        created = await client.request(
            "tools/call", {"name": "muapi_generate", "arguments": STUCK, "task": {}}
        )
        cancelled = await client.request("tasks/cancel", {"taskId": created["task"]["taskId"]})
        with pytest.raises(RawRpcError) as again:
            await client.request("tasks/cancel", {"taskId": created["task"]["taskId"]})
        with pytest.raises(RawRpcError) as unknown:
            await client.request("tasks/get", {"taskId": "job_not-a-real-one"})

    assert cancelled["status"] == "cancelled" and cancelled["taskId"] == created["task"]["taskId"]
    assert again.value.code == -32602 and unknown.value.code == -32602


async def test_legacy_call_without_params_task_behaves_exactly_as_before(
    make_server: Callable[..., MediamuxServer],
) -> None:
    async with legacy_in_memory(make_server()) as client:
        result = await client.request(
            "tools/call", {"name": "muapi_generate", "arguments": {**VIDEO, "wait_s": 5}}
        )
        balance = await client.request(
            "tools/call", {"name": "muapi_get_balance", "arguments": {}, "task": {"ttl": 1000}}
        )

    assert "task" not in result and result["structuredContent"]["status"] in ("queued", "running")
    assert result["structuredContent"]["elapsed_s"] >= 5
    assert "task" not in balance and balance["structuredContent"]["balance_usd"] > 0  # not a job tool
