"""The job engine's promises, observed through the MCP surface and the emulator's own counters."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from pydantic import BaseModel

from mediamux.clock import FakeClock
from mediamux.jobs.engine import DriverBase, JobEngine, Outcome
from mediamux.jobs.journal import Journal
from mediamux.sandbox import Sandbox
from mediamux.server.app import MediamuxServer
from tests.support import eventually
from tests.test_muapi_tools import call, text

pytestmark = pytest.mark.providers("muapi")

IMAGE = {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron"}}
VIDEO = {"endpoint": "kling-v2.1-master-t2v", "params": {"prompt": "rain on a window", "duration": 5}}


async def costs(client: Client) -> dict[str, Any]:
    with anyio.fail_after(10):
        read = await client.read_resource("mediamux://costs")
    return dict(json.loads(read.contents[0].text))


@pytest.mark.both_eras
async def test_a_job_that_outlives_its_wait_budget_returns_running_with_a_job_id_not_an_error(
    client: Client, sandbox: Sandbox
) -> None:
    result = await call(client, "muapi_generate", {**VIDEO, "wait_s": 2})

    assert not result.is_error, text(result)
    data = result.structured_content
    assert data["status"] in ("queued", "running")
    assert data["job_id"].startswith("job_")
    assert "jobs_wait" in data["note"]
    assert data["cost"]["usd"] == pytest.approx(1.4)  # charged at submission, reported at once


async def test_jobs_wait_finishes_the_job_and_the_ledger_counts_its_cost_once(
    client: Client, sandbox: Sandbox
) -> None:
    started = (await call(client, "muapi_generate", {**VIDEO, "wait_s": 0})).structured_content

    first = await call(client, "jobs_wait", {"job_id": started["job_id"], "wait_s": 120})
    again = await call(client, "jobs_wait", {"job_id": started["job_id"]})
    got = await call(client, "jobs_get", {"job_id": started["job_id"]})

    assert first.structured_content["status"] == "completed"
    assert first.structured_content["result"]["saved"][0]["path"].endswith(".mp4")
    assert again.structured_content == first.structured_content | {"session_spent_usd": pytest.approx(1.4)}
    assert got.structured_content["status"] == "completed"
    ledger = await costs(client)
    assert ledger["session"]["usd"] == pytest.approx(1.4)
    assert ledger["all_time"]["providers"]["muapi"]["entries"] == 1
    assert sandbox.muapi.submissions == 1


async def test_an_unknown_provider_status_is_waited_on_and_then_reported_by_name(client: Client) -> None:
    result = await call(
        client,
        "muapi_generate",
        {"endpoint": "flux-schnell-image", "params": {"prompt": "[weird]"}, "wait_s": 20},
    )

    data = result.structured_content
    assert not result.is_error
    assert data["status"] == "running"
    assert data["provider_status"] == "warming_up"
    assert "unrecognised provider status 'warming_up'" in data["note"]


async def test_an_identical_paid_call_within_the_window_returns_the_same_job_without_paying_again(
    client: Client, sandbox: Sandbox
) -> None:
    first = (await call(client, "muapi_generate", IMAGE)).structured_content
    second = (await call(client, "muapi_generate", IMAGE)).structured_content
    forced = (await call(client, "muapi_generate", {**IMAGE, "new_job": True})).structured_content

    assert second["job_id"] == first["job_id"] and second["deduplicated"] is True
    assert forced["job_id"] != first["job_id"] and forced["deduplicated"] is False
    assert sandbox.muapi.submissions == 2
    assert (await costs(client))["session"]["usd"] == pytest.approx(0.006)


@pytest.mark.both_eras
async def test_two_identical_calls_in_flight_at_once_create_exactly_one_job(
    client: Client, sandbox: Sandbox
) -> None:
    results: list[Any] = []

    async def one() -> None:
        results.append(await call(client, "muapi_generate", IMAGE))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)

    ids = {r.structured_content["job_id"] for r in results}
    assert len(ids) == 1
    assert {r.structured_content["status"] for r in results} == {"completed"}
    assert sandbox.muapi.submissions == 1


async def test_the_duplicate_window_expires(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, clock: FakeClock
) -> None:
    async with Client(make_server(MEDIAMUX_DEDUP_WINDOW_S="60")) as client:
        first = (await call(client, "muapi_generate", IMAGE)).structured_content
        clock.advance(61)
        second = (await call(client, "muapi_generate", IMAGE)).structured_content

    assert second["job_id"] != first["job_id"]
    assert sandbox.muapi.submissions == 2


async def test_budget_refuses_a_job_whose_estimate_would_pass_it_and_names_the_figures(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    # Each image is quoted at $0.003: a second one would commit $0.006 against $0.005.
    async with Client(make_server(MEDIAMUX_BUDGET_USD="0.005")) as client:
        one = await call(client, "muapi_generate", IMAGE)
        two = await call(client, "muapi_generate", {**IMAGE, "params": {"prompt": "an egret"}})

    assert not one.is_error, text(one)
    assert two.is_error
    assert two.meta["mediamux/error"]["class"] == "budget"
    message = text(two)
    assert "estimated at $0.003" in message and "$0.003 is already spent" in message
    assert "MEDIAMUX_BUDGET_USD is $0.005" in message
    assert sandbox.muapi.submissions == 1


@pytest.mark.both_eras
async def test_cancelling_the_call_stops_polling_at_once_and_the_job_stays_resumable(
    client: Client, sandbox: Sandbox, clock: FakeClock
) -> None:
    stuck = {"endpoint": "flux-schnell-image", "params": {"prompt": "[stuck]"}, "wait_s": 600}

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "muapi_generate", stuck)
            await eventually(lambda: sum(sandbox.muapi.polls.values()) >= 2, clock=clock)
            tg.cancel_scope.cancel()
        polls_at_cancel = sum(sandbox.muapi.polls.values())
        for _ in range(5):
            await clock.sleep(30)  # fake time passes; a live poll loop would poll again

    assert sum(sandbox.muapi.polls.values()) == polls_at_cancel
    listed = (await call(client, "jobs_list", {"status": "active"})).structured_content["jobs"]
    assert len(listed) == 1 and listed[0]["provider_job_id"]
    resumed = await call(client, "jobs_wait", {"job_id": listed[0]["job_id"], "wait_s": 5})
    assert resumed.structured_content["status"] == "running"
    assert sandbox.muapi.submissions == 1


async def test_a_job_started_by_one_server_is_finished_by_jobs_wait_on_a_new_server(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    async with Client(make_server()) as first:
        started = (await call(first, "muapi_generate", {**VIDEO, "wait_s": 0})).structured_content
    assert started["status"] in ("queued", "running")

    async with Client(make_server(), mode="legacy") as second:
        listed = (await call(second, "jobs_list")).structured_content["jobs"]
        finished = await call(second, "jobs_wait", {"job_id": started["job_id"], "wait_s": 120})
        ledger = await costs(second)

    assert [j["job_id"] for j in listed] == [started["job_id"]]
    assert finished.structured_content["status"] == "completed"
    assert ledger["all_time"]["usd"] == pytest.approx(1.4)
    assert sandbox.muapi.submissions == 1


async def test_a_submission_whose_answer_was_lost_is_recorded_and_blocks_a_blind_retry(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.muapi.faults.add(
        method="POST", path=r"/api/v1/flux-schnell-image$", kind="status", status=502, after_handler=True
    )

    first = await call(client, "muapi_generate", IMAGE)
    retry = await call(client, "muapi_generate", IMAGE)
    forced = await call(client, "muapi_generate", {**IMAGE, "new_job": True})

    assert first.is_error and "may have reached muapi" in text(first)
    assert first.meta["mediamux/error"]["class"] == "provider_error"
    assert retry.is_error and retry.structured_content["deduplicated"] is True
    assert not forced.is_error and forced.structured_content["status"] == "completed"
    assert sandbox.muapi.submissions == 2  # the lost one, then the deliberate new one


async def test_a_refused_submission_does_not_block_a_retry(client: Client, sandbox: Sandbox) -> None:
    sandbox.muapi.balance_usd = 0.0
    refused = await call(client, "muapi_generate", IMAGE)
    sandbox.muapi.balance_usd = 10.0
    retried = await call(client, "muapi_generate", IMAGE)

    assert refused.is_error and not retried.is_error
    assert retried.structured_content["deduplicated"] is False
    assert sandbox.muapi.submissions == 1


@pytest.mark.both_eras
async def test_jobs_tools_report_unknown_and_malformed_ids_clearly(client: Client) -> None:
    unknown = await call(client, "jobs_get", {"job_id": "job_doesnotexist"})
    malformed = await call(client, "jobs_wait", {"job_id": "../../etc"})

    assert unknown.is_error and unknown.meta["mediamux/error"]["class"] == "not_found"
    assert "jobs_list" in text(unknown)
    assert malformed.is_error


async def test_jobs_list_filters_by_status_and_provider(client: Client) -> None:
    await call(client, "muapi_generate", IMAGE)
    await call(client, "muapi_generate", {**VIDEO, "wait_s": 0})

    active = (await call(client, "jobs_list", {"status": "active"})).structured_content["jobs"]
    done = (await call(client, "jobs_list", {"status": "completed", "provider": "muapi"})).structured_content
    other = (await call(client, "jobs_list", {"provider": "muzaic"})).structured_content["jobs"]

    assert len(active) == 1 and len(done["jobs"]) == 1 and other == []


@pytest.mark.both_eras
async def test_job_resources_list_and_read_jobs(client: Client) -> None:
    done = (await call(client, "muapi_generate", IMAGE)).structured_content

    with anyio.fail_after(10):
        listing = json.loads((await client.read_resource("mediamux://jobs")).contents[0].text)
        one = json.loads((await client.read_resource(f"mediamux://jobs/{done['job_id']}")).contents[0].text)

    assert [j["job_id"] for j in listing["jobs"]] == [done["job_id"]] and "next" not in listing
    assert one["status"] == "completed" and one["result"]["outputs"]


# -- engine-level: heartbeats while a poll stalls --------------------------------------------------


class StubArgs(BaseModel):
    x: int


class StallingDriver(DriverBase):
    provider = "muapi"
    operation = "generate"
    title = "Stub"
    mode = "poll"
    args_model = StubArgs

    def __init__(self) -> None:
        self.release = anyio.Event()

    async def prepare(self, args: dict[str, Any], options: dict[str, Any], progress: Any) -> dict[str, Any]:
        return args

    async def submit(self, args: dict[str, Any], options: dict[str, Any], progress: Any) -> Outcome:
        return Outcome(status="running", provider_job_id="p-1")

    async def poll(self, provider_job_id: str, args: dict[str, Any], options: dict[str, Any]) -> Outcome:
        await self.release.wait()  # a provider that takes its time to answer
        return Outcome(status="completed", result={"ok": True})

    async def finalize(
        self, outcome: Outcome, args: dict[str, Any], options: dict[str, Any], progress: Any
    ) -> Outcome:
        return outcome


@pytest.mark.unit
async def test_progress_keeps_arriving_while_a_poll_stalls(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    engine = JobEngine(journal, clock=FakeClock(), heartbeat_s=0.01)
    driver = StallingDriver()
    engine.register(driver)
    messages: list[str] = []

    async def progress(value: float, total: float | None, message: str) -> None:
        messages.append(message)
        if len(messages) >= 6:
            driver.release.set()

    with anyio.fail_after(10):
        view = await engine.run("muapi", "generate", StubArgs(x=1), progress=progress, wait_s=60)

    assert view.status == "completed"
    assert len(messages) >= 6  # submitted, then heartbeats during the stalled poll
    journal.close()


@pytest.mark.filterwarnings("ignore:ping is removed")  # ping exists only in the 2025-11-25 era, tested here
async def test_the_server_keeps_answering_ping_and_other_calls_while_a_job_is_polled(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    stuck = {"endpoint": "flux-schnell-image", "params": {"prompt": "[stuck]"}, "wait_s": 600}
    async with Client(make_server(), mode="legacy") as client:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "muapi_generate", stuck)
                await eventually(lambda: sum(sandbox.muapi.polls.values()) >= 1)
                await client.send_ping()
                balance = await client.call_tool("muapi_get_balance", {})
                tg.cancel_scope.cancel()

    assert not balance.is_error


async def test_an_identical_retry_after_the_budget_is_reached_still_returns_the_paid_job(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox
) -> None:
    async with Client(make_server(MEDIAMUX_BUDGET_USD="0.003")) as client:
        first = await call(client, "muapi_generate", IMAGE)
        retry = await call(client, "muapi_generate", IMAGE)
        other = await call(client, "muapi_generate", {**IMAGE, "params": {"prompt": "a crane"}})

    assert not retry.is_error, text(retry)
    assert retry.structured_content["job_id"] == first.structured_content["job_id"]
    assert other.is_error and other.meta["mediamux/error"]["class"] == "budget"
    assert sandbox.muapi.submissions == 1


async def test_a_duplicate_that_asks_to_save_outputs_gets_them_saved(
    client: Client, sandbox: Sandbox
) -> None:
    unsaved = (await call(client, "muapi_generate", {**IMAGE, "save_outputs": False})).structured_content
    saved = (await call(client, "muapi_generate", {**IMAGE, "save_outputs": True})).structured_content

    assert unsaved["result"]["saved"] == []
    assert saved["job_id"] == unsaved["job_id"] and saved["deduplicated"] is True
    assert len(saved["result"]["saved"]) == 1
    assert sandbox.muapi.submissions == 1


class BrokenAnswerDriver(StallingDriver):
    async def submit(self, args: dict[str, Any], options: dict[str, Any], progress: Any) -> Outcome:
        raise RuntimeError("could not parse")  # the provider answered; we failed to read it


@pytest.mark.unit
async def test_an_unreadable_submission_answer_is_recorded_as_possibly_charged(tmp_path: Path) -> None:
    from mediamux.providers.errors import ProviderResponseError

    journal = Journal(tmp_path / "j.sqlite3")
    engine = JobEngine(journal, clock=FakeClock())
    engine.register(BrokenAnswerDriver())

    with anyio.fail_after(10), pytest.raises(ProviderResponseError, match="could not be read"):
        await engine.run("muapi", "generate", StubArgs(x=1))
    with anyio.fail_after(10):
        retry = await engine.run("muapi", "generate", StubArgs(x=1))

    assert retry.deduplicated and retry.status == "failed"
    assert retry.error is not None and "may have reached" in retry.error.message
    [record] = journal.list()
    assert record.submit_state == "uncertain"
    journal.close()


async def test_a_slow_output_download_does_not_hold_the_call_past_its_budget(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.muapi.faults.add(method="GET", path=r"^/cdn/outputs/", kind="hang")

    first = await call(client, "muapi_generate", {**IMAGE, "wait_s": 5})

    data = first.structured_content
    assert data["status"] == "saving_outputs" and data["result"]["saved"] == []
    assert "still being saved" in data["note"]
    # A status read while the download hangs answers within its own budget, not behind the download.
    with anyio.fail_after(20):
        meanwhile = await call(client, "jobs_wait", {"job_id": data["job_id"], "wait_s": 2})
    assert meanwhile.structured_content["status"] == "saving_outputs"
    sandbox.muapi.faults.release.set()
    done = await call(client, "jobs_wait", {"job_id": data["job_id"], "wait_s": 30})
    assert done.structured_content["status"] == "completed"
    assert len(done.structured_content["result"]["saved"]) == 1
    assert done.structured_content["note"] is None


@pytest.mark.both_eras
async def test_progress_only_increases_and_never_passes_its_total_across_two_uploads(
    client: Client, files_dir: Path
) -> None:
    (files_dir / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"a" * 3_000_000)
    (files_dir / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"b" * 2_000_000)
    seen: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total))

    result = await call(
        client,
        "muapi_generate",
        {"endpoint": "nano-banana-edit", "params": {"prompt": "merge", "images_list": ["a.png", "b.png"]}},
        progress_callback=on_progress,
    )

    assert not result.is_error, text(result)
    values = [v for v, _ in seen]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert all(v <= t for v, t in seen if t is not None)
    assert sum(1 for _, t in seen if t is not None) >= 2
